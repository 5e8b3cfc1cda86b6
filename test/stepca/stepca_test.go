// Package stepca runs a real step-ca (github.com/smallstep/certificates,
// built from the Go module proxy by scripts/ensure-step-ca.sh) with an ACME
// provisioner for device-attest-01 "tpm" attestations rooted in tpmid's CA,
// and completes the challenge with a key made and certified in swtpm.
package stepca

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// stepCABinary returns the step-ca binary: $TPMID_STEP_CA if set, else the
// one scripts/ensure-step-ca.sh builds into (or finds in) .cache. The test
// is skipped only when the module proxy cannot be reached (the script
// exits 2).
func stepCABinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("TPMID_STEP_CA"); p != "" {
		return p
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	cmd := exec.Command(filepath.Join(root, "scripts", "ensure-step-ca.sh"))
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 2 {
			t.Skipf("step-ca could not be downloaded from the Go module proxy: %s", strings.TrimSpace(stderr.String()))
		}
		t.Fatalf("scripts/ensure-step-ca.sh: %v\n%s", err, stderr.String())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Logf("built step-ca in %v", d.Round(time.Second))
	}
	return filepath.Join(strings.TrimSpace(string(out)), "step-ca")
}

// stepCA is a running step-ca.
type stepCA struct {
	url    string // https://127.0.0.1:P
	roots  *x509.CertPool
	client *http.Client
	log    *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func writePEM(t testing.TB, path, typ string, der []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
		t.Fatal(err)
	}
}

// stepCAPKI makes step-ca's own root and intermediate (ECDSA P-256) in dir;
// step-ca signs its TLS certificate and the ACME certificates with the
// intermediate.
func stepCAPKI(t testing.TB, dir string) (rootPath, crtPath, keyPath string, root *x509.Certificate) {
	t.Helper()
	now := time.Now()
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	interKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "step-ca test root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true, MaxPathLen: 1,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ = x509.ParseCertificate(rootDER)
	interTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "step-ca test intermediate"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true, MaxPathLen: 0, MaxPathLenZero: true,
	}
	interDER, err := x509.CreateCertificate(rand.Reader, interTmpl, root, interKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(interKey)
	if err != nil {
		t.Fatal(err)
	}
	rootPath, crtPath, keyPath = filepath.Join(dir, "root_ca.crt"), filepath.Join(dir, "intermediate_ca.crt"), filepath.Join(dir, "intermediate_ca_key")
	writePEM(t, rootPath, "CERTIFICATE", rootDER, 0o644)
	writePEM(t, crtPath, "CERTIFICATE", interDER, 0o644)
	writePEM(t, keyPath, "EC PRIVATE KEY", keyDER, 0o600)
	return rootPath, crtPath, keyPath, root
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// provisionerName is the ACME provisioner's name: the directory is at
// /acme/<name>/directory.
const provisionerName = "tpm"

// startStepCA runs step-ca with a minimal configuration: its own PKI, a
// bbolt database, and one ACME provisioner that allows only
// device-attest-01 with the "tpm" format, trusting attestationRootsPEM.
func startStepCA(t testing.TB, bin string, attestationRootsPEM []byte) *stepCA {
	t.Helper()
	dir := t.TempDir()
	rootPath, crtPath, keyPath, root := stepCAPKI(t, dir)
	port := freePort(t)
	cfg := map[string]any{
		"root":     rootPath,
		"crt":      crtPath,
		"key":      keyPath,
		"address":  "127.0.0.1:" + strconv.Itoa(port),
		"dnsNames": []string{"127.0.0.1", "localhost"},
		"logger":   map[string]any{"format": "text"},
		"db":       map[string]any{"type": "bbolt", "dataSource": filepath.Join(dir, "db")},
		"authority": map[string]any{
			"provisioners": []any{map[string]any{
				"type":               "ACME",
				"name":               provisionerName,
				"challenges":         []string{"device-attest-01"},
				"attestationFormats": []string{"tpm"},
				"attestationRoots":   attestationRootsPEM, // []byte: base64 in JSON, as step-ca reads it
			}},
		},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "ca.json")
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	s := &stepCA{url: fmt.Sprintf("https://127.0.0.1:%d", port), roots: x509.NewCertPool(), log: &lockedBuffer{}}
	s.roots.AddCert(root)
	s.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.roots}}}

	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, cfgPath)
	cmd.Env = append(os.Environ(), "STEPPATH="+filepath.Join(dir, "steppath"), "HOME="+dir)
	cmd.Stdout, cmd.Stderr = s.log, s.log
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting step-ca: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("step-ca log:\n%s", s.log.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := s.client.Get(s.url + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		select {
		case err := <-done:
			t.Fatalf("step-ca exited (%v):\n%s", err, s.log.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("step-ca did not become healthy at %s (%v):\n%s", s.url, err, s.log.String())
		}
	}
}

func (s *stepCA) directoryURL() string {
	return s.url + "/acme/" + provisionerName + "/directory"
}
