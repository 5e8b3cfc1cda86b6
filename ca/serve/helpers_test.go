package serve_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	steptpm "go.step.sm/crypto/tpm"

	"github.com/tpmid/tpmid/ca/issuer"
	"github.com/tpmid/tpmid/ca/serve"
	stepopen "github.com/tpmid/tpmid/internal/steptpm"
	"github.com/tpmid/tpmid/internal/swtpm"
	"github.com/tpmid/tpmid/internal/testmachine"
	"github.com/tpmid/tpmid/pkg/server/nodes"
	"github.com/tpmid/tpmid/pkg/server/store"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// machine is a swtpm with an EK certificate from a local CA, opened as
// go.step.sm/crypto/tpm opens a TPM, with its RSA EK (the one with a
// certificate in NV).
type machine struct {
	*testmachine.Machine
	tpm *steptpm.TPM
	ek  *steptpm.EK
}

func newMachine(t *testing.T) *machine {
	t.Helper()
	m := testmachine.NewSwtpm(t, swtpm.Options{})
	tp, ek := stepopen.Open(t, m)
	return &machine{Machine: m, tpm: tp, ek: ek}
}

func (m *machine) newAK(t *testing.T, name string) *steptpm.AK {
	t.Helper()
	ak, err := m.tpm.CreateAK(context.Background(), name)
	if err != nil {
		t.Fatalf("CreateAK: %v", err)
	}
	return ak
}

// newCA makes a CA with tpmid ca init's defaults and loads it.
func newCA(t *testing.T) (string, *issuer.CA) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	if _, err := issuer.Init(context.Background(), issuer.InitOptions{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	ca, err := issuer.Load(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ca.Close() })
	return dir, ca
}

func newStore(t *testing.T) store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "tpmid.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// running is a server on a random loopback port, over HTTPS with a
// certificate generated from the CA's intermediate.
type running struct {
	srv    *serve.Server
	url    string
	root   string // root.crt, what clients trust
	client *http.Client
	log    *syncBuffer
}

// start serves cfg (CA, Store and EK required) until the test ends.
func start(t *testing.T, caDir string, cfg serve.Config) *running {
	t.Helper()
	if cfg.TrustDomain.IsZero() {
		cfg.TrustDomain = td
	}
	if cfg.Enrollment == "" {
		cfg.Enrollment = nodes.Open
	}
	r := &running{log: &syncBuffer{}, root: filepath.Join(caDir, issuer.RootCertFile)}
	cfg.Logger = newLogger(r.log)
	srv, err := serve.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := serve.NewServerCert(context.Background(), caDir, cfg.CA, []string{"127.0.0.1"}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, serve.TLSConfig(sc.GetCertificate), 10*time.Second) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	pool := x509.NewCertPool()
	pool.AddCert(cfg.CA.Root())
	r.srv, r.url = srv, "https://"+ln.Addr().String()
	r.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	t.Cleanup(r.client.CloseIdleConnections)
	return r
}

// post sends body to path and returns the status and the body.
func (r *running) post(t *testing.T, path string, body []byte) (int, []byte) {
	t.Helper()
	resp, err := r.client.Post(r.url+path, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (r *running) postJSON(t *testing.T, path string, v any) (int, []byte) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return r.post(t, path, b)
}

// wantRefusal checks a JSON refusal.
func wantRefusal(t *testing.T, code int, body []byte, wantCode int, wantReason string) serve.ErrorResponse {
	t.Helper()
	var e serve.ErrorResponse
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("refusal is not JSON (%d): %v: %q", code, err, body)
	}
	if code != wantCode || e.Error != wantReason || e.Message == "" {
		t.Errorf("got %d %+v, want %d %s with a message", code, e, wantCode, wantReason)
	}
	return e
}

// metric reads one sample from /metrics: name with exactly labels
// (`reason="busy"`, or "" for none).
func (r *running) metric(t *testing.T, name, labels string) float64 {
	t.Helper()
	resp, err := r.client.Get(r.url + serve.PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	want := name
	if labels != "" {
		want += "{" + labels + "}"
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == want {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no %s", want)
	return 0
}

// attempts returns the EK's attempts, newest first.
func attempts(t *testing.T, st store.Store, ekHash string) []store.Attempt {
	t.Helper()
	var as []store.Attempt
	err := st.View(context.Background(), func(tx store.Tx) (err error) {
		as, err = tx.Attempts(context.Background(), store.AttemptFilter{EKHash: ekHash})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return as
}

func putHost(t *testing.T, st store.Store, h *store.Host) {
	t.Helper()
	err := st.Update(context.Background(), func(tx store.Tx) error { return tx.CreateHost(context.Background(), h) })
	if err != nil {
		t.Fatal(err)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newLogger(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

func writeFileString(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }
