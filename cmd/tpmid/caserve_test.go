package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.step.sm/crypto/tpm/attestation"

	"github.com/tpmid/tpmid/ca/issuer"
	"github.com/tpmid/tpmid/internal/steptpm"
	"github.com/tpmid/tpmid/internal/swtpm"
	"github.com/tpmid/tpmid/internal/testmachine"
	"github.com/tpmid/tpmid/pkg/server/store"
)

var listeningRE = regexp.MustCompile(`listening on (https?://\S+)`)

func newCADir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	if _, err := issuer.Init(context.Background(), issuer.InitOptions{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestCAServeFlags: what is missing or inconsistent is refused before
// anything listens.
func TestCAServeFlags(t *testing.T) {
	caDir := newCADir(t)
	db := newDB(t)
	bundle := t.TempDir() // no certificate in it
	for name, c := range map[string]struct {
		args []string
		want string
	}{
		"no dir":             {[]string{"--listen", "127.0.0.1:0"}, "--dir is required"},
		"no listen":          {[]string{"--dir", caDir}, "--listen is required"},
		"cert without key":   {[]string{"--dir", caDir, "--listen", "127.0.0.1:0", "--tls-cert", "x.pem"}, "together"},
		"insecure and names": {[]string{"--dir", caDir, "--listen", "127.0.0.1:0", "--insecure", "--tls-name", "x"}, "plain HTTP"},
		"no trust domain":    {[]string{"--dir", caDir, "--listen", "127.0.0.1:0", "--store", db}, "--trust-domain is required"},
		"bad trust domain":   {[]string{"--dir", caDir, "--listen", "127.0.0.1:0", "--store", db, "--trust-domain", "spiffe://Bad Domain"}, "--trust-domain"},
		"store and config":   {[]string{"--dir", caDir, "--listen", "127.0.0.1:0", "--store", db, "--config", "x.hcl", "--trust-domain", "example.org"}, "not both"},
		"bad enrollment":     {[]string{"--dir", caDir, "--listen", "127.0.0.1:0", "--store", db, "--trust-domain", "example.org", "--enrollment", "sometimes"}, "--enrollment"},
		"no bundle":          {[]string{"--dir", caDir, "--listen", "127.0.0.1:0", "--store", db, "--trust-domain", "example.org"}, "needs an EK CA bundle"},
		"empty bundle":       {[]string{"--dir", caDir, "--listen", "127.0.0.1:0", "--store", db, "--trust-domain", "example.org", "--ek-ca-bundle", bundle}, "EK CA bundle"},
		"bad policy":         {[]string{"--dir", caDir, "--listen", "127.0.0.1:0", "--store", db, "--trust-domain", "example.org", "--ek-policy", "trust-me"}, "not one of"},
		"no CA":              {[]string{"--dir", t.TempDir(), "--listen", "127.0.0.1:0", "--store", db, "--trust-domain", "example.org", "--ek-policy", "allowlist", "--ek-hash-allowlist", writeFile(t, "allow", []byte(hexOf('a')+"\n"))}, "loading the CA"},
		"no store":           {[]string{"--dir", caDir, "--listen", "127.0.0.1:0", "--store", filepath.Join(t.TempDir(), "none.db"), "--trust-domain", "example.org", "--ek-policy", "allowlist", "--ek-hash-allowlist", writeFile(t, "allow", []byte(hexOf('a')+"\n"))}, "no tpmid store"},
		"policy from config": {[]string{"--dir", caDir, "--listen", "127.0.0.1:0", "--trust-domain", "example.org",
			"--config", writeFile(t, "pd.hcl", []byte(fmt.Sprintf("store = %q\nek_policy = \"allowlist\"\n", db)))}, "ek policy \"allowlist\" needs an EK hash allowlist"},
		"flag over config": {[]string{"--dir", caDir, "--listen", "127.0.0.1:0", "--trust-domain", "example.org", "--ek-policy", "cert",
			"--config", writeFile(t, "pd.hcl", []byte(fmt.Sprintf("store = %q\nek_policy = \"allowlist\"\n", db)))}, "ek policy \"cert\" needs an EK CA bundle"},
		"bad listen": {[]string{"--dir", caDir, "--listen", "nowhere", "--store", db, "--trust-domain", "example.org", "--ek-policy", "allowlist", "--ek-hash-allowlist", writeFile(t, "allow", []byte(hexOf('a')+"\n"))}, "listen address"},
	} {
		t.Run(name, func(t *testing.T) {
			out, err := runCmd(t, newCACmd(), append([]string{"serve"}, c.args...)...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want an error with %q\n%s", err, c.want, out)
			}
			if strings.Contains(out, "listening") {
				t.Errorf("listened: %s", out)
			}
		})
	}
	out, err := runCmd(t, newCACmd(), "serve", "--help")
	if err != nil || !strings.Contains(out, "GENERATES a server certificate from the CA's current") || !strings.Contains(out, "FOR TESTS ONLY") {
		t.Errorf("--help does not say how TLS works:\n%s", out)
	}
}

// lineWaiter collects a process's output and waits for a line.
type lineWaiter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	lines chan string
}

func newLineWaiter(r io.Reader) *lineWaiter {
	w := &lineWaiter{lines: make(chan string, 100)}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			w.mu.Lock()
			w.buf.WriteString(sc.Text() + "\n")
			w.mu.Unlock()
			select {
			case w.lines <- sc.Text():
			default:
			}
		}
		close(w.lines)
	}()
	return w
}

func (w *lineWaiter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func (w *lineWaiter) waitURL(t *testing.T) string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-w.lines:
			if !ok {
				t.Fatalf("the server ended before listening:\n%s", w)
			}
			if m := listeningRE.FindStringSubmatch(l); m != nil {
				return m[1]
			}
		case <-timeout:
			t.Fatalf("no listening line:\n%s", w)
		}
	}
}

// TestCAServeStepClient: the real tpmid binary (this test binary running
// main) serves HTTPS with a certificate it generated from the CA's
// intermediate; go.step.sm/crypto's attestation client, on swtpm, trusts
// root.crt and obtains an AK certificate for its EK; SIGTERM then stops
// the server cleanly (exit status 0).
func TestCAServeStepClient(t *testing.T) {
	m := testmachine.NewSwtpm(t, swtpm.Options{})
	tp, ek := steptpm.Open(t, m)
	caDir := newCADir(t)
	db := newDB(t)

	args, _ := json.Marshal([]string{"ca", "serve", "--dir", caDir, "--listen", "127.0.0.1:0", "--trust-domain", "example.org",
		"--store", db, "--ek-ca-bundle", m.TrustDir, "--enrollment", "open"})
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), "TPMID_TEST_MAIN_ARGS="+string(args))
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuf
	child.Stderr = &stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	exited := false
	t.Cleanup(func() {
		if !exited {
			child.Process.Kill()
			child.Wait()
		}
	})
	out := newLineWaiter(stdout)
	url := out.waitURL(t)
	if !strings.HasPrefix(url, "https://127.0.0.1:") {
		t.Fatalf("URL %s", url)
	}

	ak, err := tp.CreateAK(context.Background(), "ak")
	if err != nil {
		t.Fatal(err)
	}
	client, err := attestation.NewClient(url, attestation.WithRootsFile(filepath.Join(caDir, issuer.RootCertFile)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	chain, err := client.Attest(ctx, tp, ek, ak)
	if err != nil {
		t.Fatalf("step attestation client: %v\nstderr:\n%s", err, stderr.String())
	}
	ca, err := issuer.Load(context.Background(), caDir)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	facts, err := ca.VerifyAK(chain[0], chain[1:], time.Now())
	if err != nil {
		t.Fatalf("VerifyAK: %v", err)
	}
	fp, _ := ek.FingerprintURI()
	if facts.PermanentIdentifier != fp.String() || facts.SPIFFEID.String() != "spiffe://example.org/spire/agent/tpm/"+m.EKHash {
		t.Errorf("certificate names %s, %s", facts.PermanentIdentifier, facts.SPIFFEID)
	}
	if !chain[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(ak.Public()) {
		t.Error("the certificate is not for the AK")
	}

	if err := child.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- child.Wait() }()
	select {
	case err := <-done:
		exited = true
		if err != nil {
			t.Fatalf("after SIGTERM: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the server did not stop after SIGTERM")
	}
	for l := range out.lines {
		_ = l // drain
	}
	if !strings.Contains(out.String(), "tpmid ca serve: stopped") {
		t.Errorf("stdout:\n%s", out)
	}
	if !strings.Contains(out.String(), "generated TLS certificate for [127.0.0.1]") {
		t.Errorf("stdout does not say the certificate was generated:\n%s", out)
	}
	for _, want := range []string{"msg=challenge", "msg=issued", "ek_hash=" + m.EKHash, "msg=\"shutting down\""} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %s:\n%s", want, stderr.String())
		}
	}
	if as := attemptsIn(t, db, m.EKHash); len(as) != 1 || as[0].Outcome != store.OutcomeAdmitted || as[0].Server != "tpmid-ca" {
		t.Errorf("attempts %+v", as)
	}
}

// TestCAServeConfigFile: --config (a spire-server config) gives the store,
// the enrollment (required), the EK CA bundle and the trust domain; an EK that is not
// enrolled is refused, and recorded as such; cancelling the command's
// context stops it.
func TestCAServeConfigFile(t *testing.T) {
	m := testmachine.NewSwtpm(t, swtpm.Options{})
	tp, ek := steptpm.Open(t, m)
	caDir := newCADir(t)
	db := newDB(t)
	conf := writeFile(t, "server.conf", []byte(fmt.Sprintf(`server {
  trust_domain = "corp.example"
}
plugins {
  NodeAttestor "tpm" {
    plugin_cmd = "/opt/tpmid/tpmid-server"
    plugin_data {
      store = %q
      enrollment = "required"
      ek_ca_bundle = %q
    }
  }
}
`, db, m.TrustDir)))

	var out syncBuf
	cmd := newCACmd()
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs([]string{"serve", "--dir", caDir, "--listen", "127.0.0.1:0", "--config", conf})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	var url string
	for deadline := time.Now().Add(30 * time.Second); url == ""; time.Sleep(20 * time.Millisecond) {
		if mm := listeningRE.FindStringSubmatch(out.String()); mm != nil {
			url = mm[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("not listening:\n%s", out.String())
		}
	}
	if !strings.Contains(out.String(), "ek_policy cert, enrollment required, trust domain corp.example") {
		t.Errorf("banner: %s", out.String())
	}

	ak, err := tp.CreateAK(context.Background(), "ak")
	if err != nil {
		t.Fatal(err)
	}
	client, err := attestation.NewClient(url, attestation.WithRootsFile(filepath.Join(caDir, issuer.RootCertFile)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Attest(context.Background(), tp, ek, ak); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("an EK that is not enrolled: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
	if !strings.Contains(out.String(), "reason=ek_not_enrolled") {
		t.Errorf("log:\n%s", out.String())
	}
	if as := attemptsIn(t, db, m.EKHash); len(as) != 1 || as[0].Outcome != store.OutcomeRefused || !strings.HasPrefix(as[0].Reasons[0], "ek_not_enrolled") {
		t.Errorf("attempts %+v", as)
	}
}

func attemptsIn(t *testing.T, db, ekHash string) []store.Attempt {
	t.Helper()
	var as []store.Attempt
	withStore(t, db, func(ctx context.Context, tx store.Tx) (err error) {
		as, err = tx.Attempts(ctx, store.AttemptFilter{EKHash: ekHash})
		return err
	})
	return as
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
