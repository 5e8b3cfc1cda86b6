package serve_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tpmid/tpmid/ca/serve"
	"github.com/tpmid/tpmid/internal/testca"
	"github.com/tpmid/tpmid/pkg/server/nodes"
	"github.com/tpmid/tpmid/pkg/server/store"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// softEK is an EK certificate from a test CA for a software RSA key: enough
// for every refusal that comes before TPM2_MakeCredential.
type softEK struct {
	bundle string
	pub    []byte // PKIX DER
	cert   []byte
	hash   string
	ca     *testca.CA
}

func newSoftEK(t *testing.T) *softEK {
	t.Helper()
	ca, err := testca.New("test EK root")
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(t.TempDir(), "root.pem")
	if err := ca.WritePEM(bundle); err != nil {
		t.Fatal(err)
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueEK(&k.PublicKey, "id:53494D55", "id:00000001", "id:00020000")
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	hash, err := verify.EKHash(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return &softEK{bundle: bundle, pub: pub, cert: cert, hash: hash, ca: ca}
}

// TestRequestRefusals: every request that is not the protocol, or over a
// bound, is refused with a JSON error naming the reason, before any TPM
// work; the counters move.
func TestRequestRefusals(t *testing.T) {
	caDir, ca := newCA(t)
	st := newStore(t)
	ek := newSoftEK(t)
	policy, err := serve.LoadEKPolicy("cert", ek.bundle, "")
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, caDir, serve.Config{CA: ca, Store: st, EK: policy})
	valid := func() serve.AttestRequest {
		return serve.AttestRequest{EK: ek.pub, EKCerts: [][]byte{ek.cert}, Params: serve.AttestationParameters{Public: []byte{1, 2, 3, 4}}}
	}
	mustJSON := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tlsLeaf, err := ek.ca.Issue(&x509.Certificate{DNSNames: []string{"host.example"}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, mustParsePKIX(t, ek.pub))
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherPub, _ := x509.MarshalPKIXPublicKey(&otherKey.PublicKey)

	for _, c := range []struct {
		name   string
		path   string
		body   []byte
		code   int
		reason string
	}{
		{"attest over its bound", serve.PathAttest, bytes.Repeat([]byte(" "), int(serve.DefaultLimits.MaxAttestBody)+1), http.StatusRequestEntityTooLarge, "request_too_large"},
		{"attest far over its bound", serve.PathAttest, append([]byte(`{"ek":"`), bytes.Repeat([]byte("A"), 4<<20)...), http.StatusRequestEntityTooLarge, "request_too_large"},
		{"secret over its bound", serve.PathSecret, bytes.Repeat([]byte(" "), int(serve.DefaultLimits.MaxSecretBody)+1), http.StatusRequestEntityTooLarge, "request_too_large"},
		{"not JSON", serve.PathAttest, []byte("hello"), http.StatusBadRequest, "request_malformed"},
		{"empty", serve.PathAttest, nil, http.StatusBadRequest, "request_malformed"},
		{"trailing data", serve.PathAttest, append(mustJSON(valid()), []byte(`{}`)...), http.StatusBadRequest, "request_malformed"},
		{"wrong type", serve.PathAttest, []byte(`{"ek": 42}`), http.StatusBadRequest, "request_malformed"},
		{"no EK", serve.PathAttest, []byte(`{"params":{}}`), http.StatusBadRequest, "ek_malformed"},
		{"EK not PKIX", serve.PathAttest, mustJSON(serve.AttestRequest{EK: []byte("not a key")}), http.StatusBadRequest, "ek_malformed"},
		{"EK certificate for another key", serve.PathAttest, mustJSON(serve.AttestRequest{EK: otherPub, EKCerts: [][]byte{ek.cert}}), http.StatusBadRequest, "ek_mismatch"},
		{"TLS certificate from the EK CA", serve.PathAttest, mustJSON(serve.AttestRequest{EK: ek.pub, EKCerts: [][]byte{tlsLeaf}}), http.StatusForbidden, "ek_cert_profile"},
		{"AK not a TPM key", serve.PathAttest, mustJSON(valid()), http.StatusBadRequest, "ak_malformed"},
		{"secret not JSON", serve.PathSecret, []byte("[]"), http.StatusBadRequest, "request_malformed"},
		{"no secret", serve.PathSecret, []byte(`{}`), http.StatusBadRequest, "request_malformed"},
		{"secret not base64", serve.PathSecret, []byte(`{"secret":"!!"}`), http.StatusBadRequest, "request_malformed"},
		{"unknown secret", serve.PathSecret, mustJSON(serve.SecretRequest{Secret: bytes.Repeat([]byte{7}, 32)}), http.StatusForbidden, "secret_unknown"},
		{"unknown endpoint", "/certificate", []byte(`{}`), http.StatusNotFound, "not_found"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, body := r.post(t, c.path, c.body)
			wantRefusal(t, code, body, c.code, c.reason)
		})
	}

	for _, p := range []string{serve.PathAttest, serve.PathSecret} {
		resp, err := r.client.Get(r.url + p)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		wantRefusal(t, resp.StatusCode, body, http.StatusMethodNotAllowed, "method_not_allowed")
		if resp.Header.Get("Allow") != http.MethodPost {
			t.Errorf("GET %s: Allow %q", p, resp.Header.Get("Allow"))
		}
	}

	// The X-Request-Id comes back.
	req, _ := http.NewRequest(http.MethodPost, r.url+serve.PathSecret, strings.NewReader(`{}`))
	req.Header.Set("X-Request-Id", "req-123")
	resp, err := r.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("X-Request-Id") != "req-123" || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("headers %v", resp.Header)
	}

	for reason, want := range map[string]float64{"request_too_large": 3, "request_malformed": 8, "ek_malformed": 2, "ek_mismatch": 1, "ek_cert_profile": 1,
		"ak_malformed": 1, "secret_unknown": 1, "not_found": 1, "method_not_allowed": 2, "ek_revoked": 0, "busy": 0} {
		if got := r.metric(t, serve.MetricRefused, `reason="`+reason+`"`); got != want {
			t.Errorf("refused{%s} = %v, want %v", reason, got, want)
		}
	}
	// Refusals that name a parsable EK are recorded under it (the TLS
	// certificate and the non-TPM AK under this EK, the mismatch under the
	// other key); the others name no EK.
	if as := attempts(t, st, ek.hash); len(as) != 2 {
		t.Errorf("attempts for the EK: %+v", as)
	} else {
		for _, a := range as {
			if a.Outcome != store.OutcomeRefused || a.Server != "tpmid-ca" {
				t.Errorf("attempt %+v", a)
			}
		}
	}
	if as := attempts(t, st, ""); len(as) != 3 {
		t.Errorf("%d attempts in all, want only the 3 that name an EK", len(as))
	}
}

func mustParsePKIX(t *testing.T, der []byte) any {
	t.Helper()
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestRevokedBeforeChallenge: a revoked EK gets no challenge at all, even
// with a valid EK certificate: the store is consulted before the AK is
// looked at (this AK would be refused too).
func TestRevokedBeforeChallenge(t *testing.T) {
	caDir, ca := newCA(t)
	st := newStore(t)
	ek := newSoftEK(t)
	putHost(t, st, &store.Host{EKHash: ek.hash, Hostname: "gone", State: store.HostRevoked})
	policy, err := serve.LoadEKPolicy("cert", ek.bundle, "")
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, caDir, serve.Config{CA: ca, Store: st, EK: policy, Enrollment: nodes.Required})
	code, body := r.postJSON(t, serve.PathAttest, serve.AttestRequest{EK: ek.pub, EKCerts: [][]byte{ek.cert}, Params: serve.AttestationParameters{Public: []byte{0, 1}}})
	wantRefusal(t, code, body, http.StatusForbidden, "ek_revoked")
	if as := attempts(t, st, ek.hash); len(as) != 1 || as[0].Hostname != "gone" {
		t.Errorf("attempts %+v", as)
	}
}

// TestInFlightBound: requests past MaxInFlight are refused at once (503
// busy), not queued.
func TestInFlightBound(t *testing.T) {
	caDir, ca := newCA(t)
	ek := newSoftEK(t)
	policy, err := serve.LoadEKPolicy("cert", ek.bundle, "")
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, caDir, serve.Config{CA: ca, Store: newStore(t), EK: policy, Limits: serve.Limits{MaxInFlight: 1}})
	// A slow client holds the only slot: its body never ends.
	pr, pw := io.Pipe()
	defer pw.Close()
	go func() {
		req, _ := http.NewRequest(http.MethodPost, r.url+serve.PathAttest, pr)
		resp, err := r.client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
	}()
	pw.Write([]byte(`{"ek":`))
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := r.post(t, serve.PathSecret, []byte(`{}`))
		if code == http.StatusServiceUnavailable {
			wantRefusal(t, code, body, http.StatusServiceUnavailable, "busy")
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never busy: %d %s", code, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	pw.CloseWithError(errors.New("done"))
}

// TestGracefulShutdown: cancelling Serve's context lets a request in
// flight finish, then Serve returns nil and the port is closed.
func TestGracefulShutdown(t *testing.T) {
	_, ca := newCA(t)
	ek := newSoftEK(t)
	policy, err := serve.LoadEKPolicy("cert", ek.bundle, "")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := serve.New(serve.Config{CA: ca, Store: newStore(t), EK: policy, TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, nil, 5*time.Second) }() // plain HTTP: a test

	url := "http://" + ln.Addr().String()
	pr, pw := io.Pipe()
	answered := make(chan int, 1)
	go func() {
		resp, err := http.Post(url+serve.PathSecret, "application/json", pr)
		if err != nil {
			answered <- -1
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	pw.Write([]byte(`{"secret":`))
	time.Sleep(200 * time.Millisecond) // the request is in flight
	cancel()
	select {
	case err := <-done:
		t.Fatalf("Serve returned (%v) with a request in flight", err)
	case <-time.After(200 * time.Millisecond):
	}
	pw.Write([]byte(`"AAAA"}`))
	pw.Close()
	if code := <-answered; code != http.StatusForbidden {
		t.Errorf("the request in flight got %d, want its 403 answer", code)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("the port still accepts connections")
	}
}

// TestServerCertificate: the generated certificate chains to the CA root
// for the listen names with serverAuth, is renewed when a third of its
// life is left, and the step client's TLS accepts it (tested end to end
// above); names for an unspecified listen host cover loopback.
func TestServerCertificate(t *testing.T) {
	caDir, ca := newCA(t)
	now := time.Now()
	clock := func() time.Time { return now }
	sc, err := serve.NewServerCert(context.Background(), caDir, ca, []string{"ca.example", "127.0.0.1"}, 3*time.Hour, clock)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	roots := x509.NewCertPool()
	roots.AddCert(ca.Root())
	inter := x509.NewCertPool()
	inter.AddCert(ca.Intermediate())
	first := sc.Leaf()
	for _, name := range []string{"ca.example", "127.0.0.1"} {
		if _, err := first.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	if err := first.VerifyHostname("other.example"); err == nil {
		t.Error("valid for another name")
	}
	if d := first.NotAfter.Sub(now); d < 3*time.Hour-time.Second || d > 3*time.Hour {
		t.Errorf("lifetime %v", d)
	}
	got, err := sc.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil || !got.Leaf.Equal(first) || len(got.Certificate) != 2 {
		t.Fatalf("GetCertificate: %v", err)
	}
	now = now.Add(2*time.Hour + time.Second) // under a third left
	got, err = sc.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil || got.Leaf.Equal(first) || !got.Leaf.NotAfter.After(first.NotAfter) {
		t.Fatalf("not renewed: %v", err)
	}

	names, err := serve.ListenNames(":8443", "ca.example")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"localhost", "127.0.0.1", "::1", "ca.example"} {
		if !contains(names, want) {
			t.Errorf("names %v lack %s", names, want)
		}
	}
	if names, _ := serve.ListenNames("10.0.0.5:443"); len(names) != 1 || names[0] != "10.0.0.5" {
		t.Errorf("names %v", names)
	}
	if _, err := serve.ListenNames("no-port"); err == nil {
		t.Error("an address without port was accepted")
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// TestLoadEKPolicy: the plugin's rules for ek_policy, ek_ca_bundle and
// ek_hash_allowlist.
func TestLoadEKPolicy(t *testing.T) {
	ek := newSoftEK(t)
	list := filepath.Join(t.TempDir(), "allow")
	if err := writeFileString(list, ek.hash+"\n"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		policy, bundle, allow string
		err                   string
	}{
		{"", ek.bundle, "", ""},
		{"cert", ek.bundle, "", ""},
		{"allowlist", "", list, ""},
		{"cert_or_allowlist", ek.bundle, list, ""},
		{"cert_and_allowlist", ek.bundle, list, ""},
		{"cert", "", "", "needs an EK CA bundle"},
		{"cert", ek.bundle, list, "does not use it"},
		{"allowlist", ek.bundle, list, "does not use it"},
		{"allowlist", "", "", "needs an EK hash allowlist"},
		{"cert", "/nonexistent", "", "EK CA bundle"},
		{"sometimes", ek.bundle, "", "not one of"},
	} {
		_, err := serve.LoadEKPolicy(c.policy, c.bundle, c.allow)
		if (c.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("LoadEKPolicy(%q, %q, %q) = %v, want %q", c.policy, c.bundle, c.allow, err, c.err)
		}
	}
}

// TestNewRefusesIncompleteConfig: New names what is missing.
func TestNewRefusesIncompleteConfig(t *testing.T) {
	_, ca := newCA(t)
	st := newStore(t)
	ek := newSoftEK(t)
	policy, _ := serve.LoadEKPolicy("cert", ek.bundle, "")
	for name, cfg := range map[string]serve.Config{
		"no CA":           {Store: st, EK: policy, TrustDomain: td},
		"no store":        {CA: ca, EK: policy, TrustDomain: td},
		"no EK policy":    {CA: ca, Store: st, TrustDomain: td},
		"no trust domain": {CA: ca, Store: st, EK: policy},
		"bad enrollment":  {CA: ca, Store: st, EK: policy, TrustDomain: td, Enrollment: "sometimes"},
		"negative life":   {CA: ca, Store: st, EK: policy, TrustDomain: td, AKLifetime: -time.Hour},
	} {
		if _, err := serve.New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
