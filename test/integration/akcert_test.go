package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tpmid/tpmid/ca/akcert"
	"github.com/tpmid/tpmid/ca/issuer"
	"github.com/tpmid/tpmid/internal/demo"
	"github.com/tpmid/tpmid/pkg/server/store"
)

// tpmid's CA end to end (docs/protocol.md, "The fast path"): with ca_dir
// in the server plugin's plugin_data, a full attestation ends with an AK
// certificate chain that the agent plugin keeps in its data_dir; the next
// spire-agent run on that machine presents it and the server skips
// TPM2_MakeCredential. Any chain the server's CA does not accept means the
// full path, and the node store still decides on both paths.
//
// The agent here keeps its directories across spire-agent runs (a
// restarted agent on the same machine, against the same swtpm); each run
// has a log of its own. spire-server lets one IP attest once a second
// (SPIRE's ratelimit.attestation, on by default: the request waits), so a
// run starts at least a second after the previous one ended, rather than
// have SPIRE's wait counted in its time.

// TPM command codes that the fast path must not send: the EK (made or
// read, its certificate read from NV) and a new key.
var fastPathForbidden = map[string]string{
	"0x00000131": "CreatePrimary",
	"0x00000153": "Create",
	"0x00000147": "ActivateCredential",
	"0x0000014e": "NV_Read",
	"0x00000169": "NV_ReadPublic",
}

// keptAgent is a machine's spire-agent whose data directories (spire-agent's
// and the tpmid plugin's data_dir) are kept from one run to the next.
type keptAgent struct {
	env *testEnv
	m   *machine
	dir string
	cur *demo.Attestation
	// last is when the previous run ended.
	last time.Time
}

func (e *testEnv) keptAgent(m *machine) *keptAgent {
	return &keptAgent{env: e, m: m, dir: filepath.Join(e.LogDir, m.name+"-kept-agent")}
}

// pluginDir is the agent plugin's data_dir (demo.AgentConfig's).
func (k *keptAgent) pluginDir() string { return filepath.Join(k.dir, "data", "tpmid") }

// chainPath is where the agent plugin keeps the AK certificate chain of
// its default AK (ecdsa).
func (k *keptAgent) chainPath() string { return filepath.Join(k.pluginDir(), "ak-ecdsa.chain.pem") }

// serverVerdict is spire-server's "Agent attested" line for one run.
type serverVerdict struct {
	Line      string
	FastPath  bool
	Delivered bool
}

// agentSession is the agent plugin's "TPM session done" line for one run.
type agentSession struct {
	Line      string
	Commands  int
	Codes     map[string]int // "0x0000017e" -> count
	CodesText string
	Presented bool
}

// akRun is one spire-agent run as both logs tell it.
type akRun struct {
	*demo.Attestation // nil unless admitted
	Err               error
	Log               string // this run's spire-agent log
	Server            *serverVerdict
	Session           *agentSession
}

// run stops the previous run's spire-agent, starts a new one on the kept
// directories and waits for the outcome. hostname is what it claims ("" is
// this machine's name).
func (k *keptAgent) run(ctx context.Context, srv *demo.Server, hostname string) *akRun {
	e := k.env
	if k.cur != nil {
		k.cur.Agent.Stop()
		k.cur = nil
	}
	bin := e.SPIREBin
	if hostname != "" && canSetHostnames() == nil {
		var err error
		if bin, err = e.spireBinFor(hostname); err != nil {
			return &akRun{Err: err}
		}
	}
	if wait := time.Until(k.last.Add(time.Second)); wait > 0 {
		time.Sleep(wait)
	}
	defer func() { k.last = time.Now() }()
	n := e.next(k.m.name + "-kept")
	logPath := filepath.Join(e.LogDir, fmt.Sprintf("%s-kept-agent-%d.log", k.m.name, n))
	srvStart := len(srv.Log())
	r := &akRun{}
	r.Err = e.Step(fmt.Sprintf("spire-agent run %d on %s (kept data_dir), wait for attestation", n, k.m.name), func() error {
		var err error
		r.Attestation, err = demo.RunAgent(ctx, bin, k.dir, e.sockDir, logPath, srv, e.Plugins,
			demo.AgentOptions{TPMDevice: k.m.inst.Addr(), EventLogPath: k.m.logPath, Timeout: 45 * time.Second})
		return err
	})
	if r.Attestation != nil {
		k.cur = r.Attestation
		e.t.Cleanup(r.Attestation.Agent.Stop)
	}
	// The plugin logs its session when its stream ends, about when
	// spire-agent logs the outcome: give it a moment.
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(logPath)
		r.Log = string(b)
		if r.Session = parseAgentSession(r.Log); r.Session != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.Server = parseServerVerdict(srv.Log()[srvStart:])
	return r
}

// admitted fails the test unless the run was admitted, with both log lines.
func (r *akRun) admitted(t *testing.T, m *machine) {
	t.Helper()
	if r.Err != nil {
		t.Fatalf("%s: %v", m.name, r.Err)
	}
	if want := "spiffe://example.org/spire/agent/tpm/" + m.ekHash; r.SPIFFEID != want {
		t.Errorf("agent ID %s, want %s", r.SPIFFEID, want)
	}
	if r.Server == nil {
		t.Fatal(`spire-server logged no "Agent attested" for this run`)
	}
	if r.Session == nil {
		t.Fatal(`the agent plugin logged no "TPM session done" (log_level DEBUG) for this run`)
	}
	t.Logf("admitted in %s: server fast_path=%v ak_certificate_delivered=%v; agent ak_certificate_presented=%v, %d TPM commands: %s",
		r.Duration.Round(time.Millisecond), r.Server.FastPath, r.Server.Delivered, r.Session.Presented, r.Session.Commands, r.Session.CodesText)
}

var (
	fastPathRe  = regexp.MustCompile(`\bfast_path=(true|false)\b`)
	deliveredRe = regexp.MustCompile(`\bak_certificate_delivered=(true|false)\b`)
	presentedRe = regexp.MustCompile(`\bak_certificate_presented=(true|false)\b`)
	commandsRe  = regexp.MustCompile(`\btpm_commands="?([0-9]+)`)
	codesRe     = regexp.MustCompile(`\btpm_command_codes="([^"]*)"`)
)

func parseServerVerdict(log string) *serverVerdict {
	l := findLogLine(log, `msg="Agent attested"`)
	if l == "" {
		return nil
	}
	v := &serverVerdict{Line: l}
	if m := fastPathRe.FindStringSubmatch(l); m != nil {
		v.FastPath = m[1] == "true"
	}
	if m := deliveredRe.FindStringSubmatch(l); m != nil {
		v.Delivered = m[1] == "true"
	}
	return v
}

func parseAgentSession(log string) *agentSession {
	l := findLogLine(log, `msg="TPM session done"`)
	if l == "" {
		return nil
	}
	s := &agentSession{Line: l, Codes: map[string]int{}}
	if m := presentedRe.FindStringSubmatch(l); m != nil {
		s.Presented = m[1] == "true"
	}
	if m := commandsRe.FindStringSubmatch(l); m != nil {
		s.Commands, _ = strconv.Atoi(m[1])
	}
	if m := codesRe.FindStringSubmatch(l); m != nil {
		s.CodesText = m[1]
		for _, f := range strings.Fields(m[1]) {
			code, n, _ := strings.Cut(f, ":")
			s.Codes[code], _ = strconv.Atoi(n)
		}
	}
	return s
}

// wantFullPath fails the test unless the run was admitted on the full path
// (TPM2_ActivateCredential sent) and a new chain of caDir's CA was
// delivered and kept.
func (k *keptAgent) wantFullPath(t *testing.T, ctx context.Context, r *akRun, caDir string, presented bool) {
	t.Helper()
	r.admitted(t, k.m)
	if r.Server.FastPath {
		t.Errorf("server fast_path=true, want the full path: %s", r.Server.Line)
	}
	if r.Session.Presented != presented {
		t.Errorf("agent ak_certificate_presented=%v, want %v", r.Session.Presented, presented)
	}
	if r.Session.Codes["0x00000147"] == 0 {
		t.Errorf("no TPM2_ActivateCredential (0x00000147) on the full path: %s", r.Session.CodesText)
	}
	if !r.Server.Delivered {
		t.Errorf("no AK certificate delivered after the full path: %s", r.Server.Line)
	}
	if _, f := k.verifyKept(t, ctx, caDir); f != nil && f.SPIFFEID.String() != r.SPIFFEID {
		t.Errorf("the kept AK certificate names %s, want %s", f.SPIFFEID, r.SPIFFEID)
	}
}

// readChain reads a PEM chain, leaf first.
func readChain(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var certs []*x509.Certificate
	for blk, rest := pem.Decode(raw); blk != nil; blk, rest = pem.Decode(rest) {
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		t.Fatalf("%s holds no certificate", path)
	}
	return certs
}

func writeChain(t *testing.T, path string, certs []*x509.Certificate) {
	t.Helper()
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// keptEK is the EK public key (PKIX DER) the agent plugin kept in ek.json.
func (k *keptAgent) keptEK(t *testing.T) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(k.pluginDir(), "ek.json"))
	if err != nil {
		t.Fatalf("the agent plugin kept no EK: %v", err)
	}
	var c struct {
		Public []byte `json:"public"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatalf("ek.json: %v", err)
	}
	if got := sha256Hex(c.Public); got != k.m.ekHash {
		t.Fatalf("ek.json holds EK %s, want %s", got, k.m.ekHash)
	}
	return c.Public
}

// verifyKept verifies the kept chain to caDir's root halfway through its
// validity and checks that it names this TPM's EK.
func (k *keptAgent) verifyKept(t *testing.T, ctx context.Context, caDir string) ([]*x509.Certificate, *akcert.Facts) {
	t.Helper()
	certs := readChain(t, k.chainPath())
	ca, err := issuer.Load(ctx, caDir)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	leaf := certs[0]
	at := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	f, err := ca.VerifyAK(leaf, certs[1:], at)
	if err != nil {
		t.Errorf("the kept AK certificate does not verify to %s's root at %s: %v", caDir, at.Format(time.RFC3339), err)
		return certs, nil
	}
	if want := akcert.PermanentIdentifier(k.keptEK(t)); f.PermanentIdentifier != want {
		t.Errorf("permanent identifier %s, want %s (this TPM's EK)", f.PermanentIdentifier, want)
	}
	return certs, f
}

// newCA makes a CA in dir whose root and intermediate became valid two
// hours ago, so that it can also issue an AK certificate that has already
// expired (IssueAK refuses a validity that is over by its clock: a CA
// loaded with a clock an hour back issues one).
func newCA(t *testing.T, ctx context.Context, dir string) {
	t.Helper()
	past := time.Now().Add(-2 * time.Hour)
	if _, err := issuer.Init(ctx, issuer.InitOptions{Dir: dir, Now: func() time.Time { return past }}); err != nil {
		t.Fatal(err)
	}
}

// issueFor issues, from the CA in caDir with clock now, a chain for ak
// naming the EK and agent the kept chain names.
func issueFor(t *testing.T, ctx context.Context, caDir string, now time.Time, f *akcert.Facts, ekDER []byte, ak any, lifetime time.Duration) []*x509.Certificate {
	t.Helper()
	ca, err := issuer.Load(ctx, caDir, issuer.WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	chain, err := ca.IssueAK(ctx, issuer.AKRequest{AKPublic: ak, EKPublicDER: ekDER, TPM: f.TPM, SPIFFEID: f.SPIFFEID, Lifetime: lifetime})
	if err != nil {
		t.Fatal(err)
	}
	return chain
}

// TestAKCertificate: with ca_dir, the first attestation delivers an AK
// certificate; the next spire-agent run on the same machine takes the fast
// path; a chain the server's CA does not accept means the full path, which
// delivers a good chain again.
func TestAKCertificate(t *testing.T) {
	env, ctx := newEnv(t)
	m := env.newMachine(ctx, "node")
	caDir := filepath.Join(env.tmp, "tpmid-ca")
	newCA(t, ctx, caDir)
	srv, err := env.StartServer(ctx, "spire-server", demo.ServerOptions{EKCABundle: m.caBundle,
		ExtraPluginData: fmt.Sprintf("        ca_dir = %q", caDir)})
	if err != nil {
		t.Fatal(err)
	}
	k := env.keptAgent(m)
	var first, fast *akRun
	var facts *akcert.Facts

	if !t.Run("FirstAttestationDeliversChainToCARootNamingAgent", func(t *testing.T) {
		first = k.run(ctx, srv, "")
		first.admitted(t, m)
		checkAttested(t, first.Attestation, certSelectors...)
		if first.Server.FastPath || first.Session.Presented {
			t.Errorf("first attestation: fast_path=%v presented=%v, want the full path with no chain", first.Server.FastPath, first.Session.Presented)
		}
		if !first.Server.Delivered {
			t.Fatalf("no AK certificate delivered: %s", first.Server.Line)
		}
		var certs []*x509.Certificate
		certs, facts = k.verifyKept(t, ctx, caDir)
		if facts == nil {
			t.FailNow()
		}
		if facts.SPIFFEID.String() != first.SPIFFEID {
			t.Errorf("the AK certificate names %s, want the agent's ID %s", facts.SPIFFEID, first.SPIFFEID)
		}
		if fi, err := os.Stat(k.chainPath()); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("chain file mode: %v %v, want 0600", fi.Mode().Perm(), err)
		}
		t.Logf("kept %s: leaf %q (TPM %s/%s/%s, %s, %s) valid %s to %s, issued by %q, chain of %d",
			filepath.Base(k.chainPath()), certs[0].Subject, facts.TPM.Manufacturer, facts.TPM.Model, facts.TPM.Version,
			facts.PermanentIdentifier, facts.SPIFFEID, certs[0].NotBefore.Format(time.RFC3339), certs[0].NotAfter.Format(time.RFC3339),
			certs[0].Issuer.CommonName, len(facts.Chain))
	}) {
		return
	}

	if !t.Run("ReattestationTakesFastPathWithoutEKOrKeyCommands", func(t *testing.T) {
		fast = k.run(ctx, srv, "")
		fast.admitted(t, m)
		if fast.SPIFFEID != first.SPIFFEID {
			t.Errorf("re-attested as %s, first as %s", fast.SPIFFEID, first.SPIFFEID)
		}
		if !fast.Server.FastPath {
			t.Errorf("server fast_path=false: %s", fast.Server.Line)
		}
		if fast.Server.Delivered {
			t.Errorf("a certificate was delivered on the fast path of a fresh one (no renewal due): %s", fast.Server.Line)
		}
		if !fast.Session.Presented {
			t.Errorf("agent ak_certificate_presented=false: %s", fast.Session.Line)
		}
		for code, name := range fastPathForbidden {
			if n := fast.Session.Codes[code]; n > 0 {
				t.Errorf("the fast path sent %s (%s) %d times: %s", name, code, n, fast.Session.CodesText)
			}
		}
		if fast.Session.Commands >= first.Session.Commands {
			t.Errorf("the fast path sent %d TPM commands, the full path %d", fast.Session.Commands, first.Session.Commands)
		}
		t.Logf("same swtpm, same spire-server: first attestation %s with %d TPM commands; fast re-attestation %s with %d TPM commands",
			first.Duration.Round(time.Millisecond), first.Session.Commands, fast.Duration.Round(time.Millisecond), fast.Session.Commands)
		t.Logf("first: %s", first.Session.CodesText)
		t.Logf("fast:  %s", fast.Session.CodesText)
	}) {
		return
	}

	leafKey := func(t *testing.T) any {
		t.Helper()
		return readChain(t, k.chainPath())[0].PublicKey
	}

	t.Run("ChainFromAnotherCAFallsBackToFullPath", func(t *testing.T) {
		other := filepath.Join(env.tmp, "other-ca")
		newCA(t, ctx, other)
		writeChain(t, k.chainPath(), issueFor(t, ctx, other, time.Now(), facts, k.keptEK(t), leafKey(t), 0))
		r := k.run(ctx, srv, "")
		k.wantFullPath(t, ctx, r, caDir, true)
	})

	t.Run("ExpiredCertificateFallsBackToFullPath", func(t *testing.T) {
		chain := issueFor(t, ctx, caDir, time.Now().Add(-time.Hour), facts, k.keptEK(t), leafKey(t), 5*time.Minute)
		if !chain[0].NotAfter.Before(time.Now()) {
			t.Fatalf("issued certificate valid until %s: not expired", chain[0].NotAfter)
		}
		writeChain(t, k.chainPath(), chain)
		r := k.run(ctx, srv, "")
		k.wantFullPath(t, ctx, r, caDir, true)
	})

	t.Run("CertificateForAnotherAKFallsBackToFullPath", func(t *testing.T) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		writeChain(t, k.chainPath(), issueFor(t, ctx, caDir, time.Now(), facts, k.keptEK(t), key.Public(), 0))
		r := k.run(ctx, srv, "")
		// The agent plugin itself drops a kept chain that is not for its
		// AK (pkg/agent loadChain): it presents none, and the server's
		// ak_mismatch check is left to the unit tests.
		k.wantFullPath(t, ctx, r, caDir, false)
	})
}

// TestRevokedEKRefusedOnFastAndFullPath: with enrollment = "tofu" and
// ca_dir, a host whose EK is revoked in the store after its first
// attestation is refused (ek_revoked) when its agent presents its AK
// certificate (the fast path), and again without it (the full path).
func TestRevokedEKRefusedOnFastAndFullPath(t *testing.T) {
	env, ctx := newEnv(t)
	m := env.newMachine(ctx, "node")
	caDir := filepath.Join(env.tmp, "tpmid-ca")
	newCA(t, ctx, caDir)
	srv := env.startTOFUServer(ctx, m, demo.ServerOptions{ExtraPluginData: fmt.Sprintf("        ca_dir = %q", caDir)})
	dsn := env.storeDSN("spire-server")
	name := env.hostname("node-a.example.org")
	k := env.keptAgent(m)

	first := k.run(ctx, srv, name)
	first.admitted(t, m)
	wantSelector(t, first.Attestation, "host", name)
	if !first.Server.Delivered {
		t.Fatalf("no AK certificate delivered: %s", first.Server.Line)
	}
	k.verifyKept(t, ctx, caDir)
	// The fast path works before the revocation.
	again := k.run(ctx, srv, name)
	if again.admitted(t, m); !again.Server.FastPath {
		t.Fatalf("re-attestation before the revocation did not take the fast path: %s", again.Server.Line)
	}
	k.cur.Agent.Stop()

	storeUpdate(t, ctx, dsn, func(tx store.Tx) error {
		h, err := tx.HostByEK(ctx, m.ekHash)
		if err != nil {
			return err
		}
		h.State = store.HostRevoked
		return tx.UpdateHost(ctx, h)
	})

	check := func(t *testing.T, r *akRun, presented bool) {
		t.Helper()
		wantRefused(t, r.Err, "ek_revoked")
		if r.Session == nil {
			t.Fatal(`the agent plugin logged no "TPM session done" for this run`)
		}
		t.Logf("agent ak_certificate_presented=%v, %d TPM commands: %s", r.Session.Presented, r.Session.Commands, r.Session.CodesText)
		if r.Session.Presented != presented {
			t.Errorf("agent ak_certificate_presented=%v, want %v", r.Session.Presented, presented)
		}
		activated := r.Session.Codes["0x00000147"] > 0
		if activated == presented {
			t.Errorf("TPM2_ActivateCredential sent: %v; want it on the full path only: %s", activated, r.Session.CodesText)
		}
	}
	t.Run("FastPath", func(t *testing.T) {
		check(t, k.run(ctx, srv, name), true)
	})
	t.Run("FullPath", func(t *testing.T) {
		if err := os.Remove(k.chainPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		check(t, k.run(ctx, srv, name), false)
	})
	got := outcomes(attemptsOf(t, ctx, dsn, m.ekHash))
	want := []string{"admitted", "admitted", "refused(ek_revoked)", "refused(ek_revoked)"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("attempts %v, want %v", got, want)
	}
}
