package serve_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.step.sm/crypto/tpm/attestation"

	steptpm "go.step.sm/crypto/tpm"

	"github.com/tpmid/tpmid/ca/akcert"
	"github.com/tpmid/tpmid/ca/serve"
	"github.com/tpmid/tpmid/pkg/server/nodes"
	"github.com/tpmid/tpmid/pkg/server/store"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// stepAttest runs go.step.sm/crypto's attestation client against r, over
// HTTPS trusting the CA root, for m's EK and ak.
func stepAttest(t *testing.T, r *running, m *machine, ak *steptpm.AK) ([]*x509.Certificate, error) {
	t.Helper()
	client, err := attestation.NewClient(r.url, attestation.WithRootsFile(r.root))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return client.Attest(ctx, m.tpm, m.ek, ak)
}

// TestStepClientObtainsAKCertificate: go.step.sm/crypto's attestation
// client, driving a swtpm whose EK certificate comes from a local CA,
// obtains an AK certificate from the server over HTTPS: the chain verifies
// to the tpmid CA root, carries the permanent identifier step computes for
// that EK, the TPM attributes of the EK certificate and the agent's
// SPIFFE ID, and certifies the AK the TPM holds. The attempt is recorded,
// and the counters move.
func TestStepClientObtainsAKCertificate(t *testing.T) {
	m := newMachine(t)
	caDir, ca := newCA(t)
	st := newStore(t)
	ek, err := serve.LoadEKPolicy("cert", m.TrustDir, "")
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, caDir, serve.Config{CA: ca, Store: st, EK: ek})
	ak := m.newAK(t, "ak1")

	chain, err := stepAttest(t, r, m, ak)
	if err != nil {
		t.Fatalf("step's attestation client: %v\nserver log:\n%s", err, r.log)
	}
	if len(chain) != 2 || !chain[1].Equal(ca.Intermediate()) {
		t.Fatalf("chain of %d certificates, want the AK certificate and the intermediate", len(chain))
	}
	facts, err := ca.VerifyAK(chain[0], chain[1:], time.Now())
	if err != nil {
		t.Fatalf("VerifyAK: %v", err)
	}
	// A relying party with only root.crt and the chain as sent.
	roots := x509.NewCertPool()
	roots.AddCert(ca.Root())
	if _, err := akcert.Verify(chain[0], chain[1:], roots, time.Now()); err != nil {
		t.Fatalf("akcert.Verify with the root alone: %v", err)
	}
	fp, err := m.ek.FingerprintURI()
	if err != nil {
		t.Fatal(err)
	}
	if facts.PermanentIdentifier != fp.String() {
		t.Errorf("permanent identifier %s, step's EK.FingerprintURI is %s", facts.PermanentIdentifier, fp)
	}
	if want := "spiffe://example.org/spire/agent/tpm/" + m.EKHash; facts.SPIFFEID.String() != want {
		t.Errorf("SPIFFE ID %s, want %s", facts.SPIFFEID, want)
	}
	man, model, version, err := verify.EKAttributes(m.ek.Certificate())
	if err != nil {
		t.Fatal(err)
	}
	if got := facts.TPM; got.Manufacturer != man || got.Model != model || got.Version != version {
		t.Errorf("TPM %+v, the EK certificate says %s %s %s", got, man, model, version)
	}
	if !chain[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(ak.Public()) {
		t.Error("the certificate is not for the AK")
	}
	// step keeps the chain with the AK (it checks the leaf is the AK's).
	// Not asserted: step's ak.HasValidPermanentIdentifier and
	// GetAKByPermanentIdentifier, whose SAN parser (smallstep's
	// go-attestation x509ext) fails on any name but otherName and
	// directoryName, so on the SPIFFE ID URI of tpmid's profile; step-ca
	// parses the SAN with x509util and is not affected (docs/ca.md).
	if err := ak.SetCertificateChain(context.Background(), chain); err != nil {
		t.Fatalf("SetCertificateChain: %v", err)
	}

	as := attempts(t, st, m.EKHash)
	if len(as) != 1 || as[0].Outcome != store.OutcomeAdmitted || as[0].Server != serve.DefaultServerName {
		t.Errorf("attempts %+v, want one admitted by %s", as, serve.DefaultServerName)
	}
	if got := r.metric(t, serve.MetricIssued, ""); got != 1 {
		t.Errorf("%s = %v", serve.MetricIssued, got)
	}
	for _, ep := range []string{"attest", "secret"} {
		if got := r.metric(t, serve.MetricDuration+"_count", `endpoint="`+ep+`",outcome="ok"`); got != 1 {
			t.Errorf("%s count for %s = %v", serve.MetricDuration, ep, got)
		}
	}
	if got := r.metric(t, serve.MetricPending, ""); got != 0 {
		t.Errorf("%s = %v after the secret", serve.MetricPending, got)
	}
}

// TestStepClientRefused: the same client is refused for an EK from an
// untrusted vendor, a revoked host, and an EK that is not enrolled when
// enrollment is required (and then served once it is enrolled). Each
// refusal is a JSON error, a recorded attempt and a counted reason.
func TestStepClientRefused(t *testing.T) {
	m := newMachine(t)
	caDir, ca := newCA(t)
	ak := m.newAK(t, "ak1")
	trusted, err := serve.LoadEKPolicy("cert", m.TrustDir, "")
	if err != nil {
		t.Fatal(err)
	}
	untrusted, err := serve.LoadEKPolicy("cert", m.OtherDir, "")
	if err != nil {
		t.Fatal(err)
	}
	ekDER, err := x509.MarshalPKIXPublicKey(m.ek.Public())
	if err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name       string
		ek         *serve.Config
		host       *store.Host
		enrollment nodes.Enrollment
		reason     string
		code       int
	}{
		{name: "untrusted vendor", ek: &serve.Config{EK: untrusted}, reason: "ek_not_admitted", code: http.StatusForbidden},
		{name: "revoked", ek: &serve.Config{EK: trusted}, host: &store.Host{EKHash: m.EKHash, Hostname: "node1", State: store.HostRevoked}, reason: "ek_revoked", code: http.StatusForbidden},
		{name: "revoked, required", ek: &serve.Config{EK: trusted}, enrollment: nodes.Required, host: &store.Host{EKHash: m.EKHash, Hostname: "node1", State: store.HostRevoked}, reason: "ek_revoked", code: http.StatusForbidden},
		{name: "not enrolled", ek: &serve.Config{EK: trusted}, enrollment: nodes.Required, reason: "ek_not_enrolled", code: http.StatusForbidden},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := newStore(t)
			if c.host != nil {
				putHost(t, st, c.host)
			}
			r := start(t, caDir, serve.Config{CA: ca, Store: st, EK: c.ek.EK, Enrollment: c.enrollment})
			chain, err := stepAttest(t, r, m, ak)
			if err == nil || chain != nil || !strings.Contains(err.Error(), "403") {
				t.Fatalf("step client: %v, %d certificates; want a 403 refusal", err, len(chain))
			}
			// The JSON the client does not show.
			params, err := ak.AttestationParameters(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			code, body := r.postJSON(t, serve.PathAttest, serve.AttestRequest{
				EK: ekDER, EKCerts: [][]byte{m.ek.Certificate().Raw},
				Params: serve.AttestationParameters{Public: params.Public, CreateData: params.CreateData,
					CreateAttestation: params.CreateAttestation, CreateSignature: params.CreateSignature},
			})
			wantRefusal(t, code, body, c.code, c.reason)
			as := attempts(t, st, m.EKHash)
			if len(as) != 2 {
				t.Fatalf("%d attempts, want 2", len(as))
			}
			for _, a := range as {
				if a.Outcome != store.OutcomeRefused || len(a.Reasons) != 1 || !strings.HasPrefix(a.Reasons[0], c.reason+": ") || a.Server != "tpmid-ca" {
					t.Errorf("attempt %+v, want refused for %s by tpmid-ca", a, c.reason)
				}
				if c.host != nil && a.Hostname != c.host.Hostname {
					t.Errorf("attempt hostname %q", a.Hostname)
				}
			}
			if got := r.metric(t, serve.MetricRefused, `reason="`+c.reason+`"`); got != 2 {
				t.Errorf("refused{%s} = %v", c.reason, got)
			}
			if got := r.metric(t, serve.MetricIssued, ""); got != 0 {
				t.Errorf("issued = %v", got)
			}
		})
	}

	t.Run("enrolled, required", func(t *testing.T) {
		st := newStore(t)
		putHost(t, st, &store.Host{EKHash: m.EKHash, Hostname: "node1", State: store.HostEnrolled})
		r := start(t, caDir, serve.Config{CA: ca, Store: st, EK: trusted, Enrollment: nodes.Required})
		if _, err := stepAttest(t, r, m, ak); err != nil {
			t.Fatalf("enrolled EK: %v\n%s", err, r.log)
		}
		as := attempts(t, st, m.EKHash)
		if len(as) != 1 || as[0].Outcome != store.OutcomeAdmitted || as[0].Hostname != "node1" {
			t.Errorf("attempts %+v", as)
		}
	})

	t.Run("tofu binds nothing", func(t *testing.T) {
		st := newStore(t)
		r := start(t, caDir, serve.Config{CA: ca, Store: st, EK: trusted, Enrollment: nodes.TOFU})
		if _, err := stepAttest(t, r, m, ak); err != nil {
			t.Fatalf("tofu: %v\n%s", err, r.log)
		}
		err := st.View(context.Background(), func(tx store.Tx) error {
			hs, err := tx.ListHosts(context.Background())
			if len(hs) != 0 {
				t.Errorf("hosts %+v: nothing should be bound without a hostname claim", hs)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("revoked between attest and secret", func(t *testing.T) {
		st := newStore(t)
		putHost(t, st, &store.Host{EKHash: m.EKHash, Hostname: "node1", State: store.HostEnrolled})
		r := start(t, caDir, serve.Config{CA: ca, Store: st, EK: trusted})
		cred := attestRaw(t, r, m, ak)
		secret, err := ak.ActivateCredential(context.Background(), cred)
		if err != nil {
			t.Fatal(err)
		}
		err = st.Update(context.Background(), func(tx store.Tx) error {
			h, err := tx.HostByEK(context.Background(), m.EKHash)
			if err != nil {
				return err
			}
			h.State = store.HostRevoked
			return tx.UpdateHost(context.Background(), h)
		})
		if err != nil {
			t.Fatal(err)
		}
		code, body := r.postJSON(t, serve.PathSecret, serve.SecretRequest{Secret: secret})
		wantRefusal(t, code, body, http.StatusForbidden, "ek_revoked")
		if as := attempts(t, st, m.EKHash); len(as) != 1 || as[0].Outcome != store.OutcomeRefused {
			t.Errorf("attempts %+v", as)
		}
	})
}

// attestRaw posts m's EK and ak's parameters to /attest as the step client
// does and returns the challenge.
func attestRaw(t *testing.T, r *running, m *machine, ak *steptpm.AK) steptpm.EncryptedCredential {
	t.Helper()
	code, body := r.postJSON(t, serve.PathAttest, attestRequest(t, m, ak))
	if code != http.StatusOK {
		t.Fatalf("/attest: %d %s", code, body)
	}
	var resp serve.AttestResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	return steptpm.EncryptedCredential{Credential: resp.Credential, Secret: resp.Secret}
}

func attestRequest(t *testing.T, m *machine, ak *steptpm.AK) serve.AttestRequest {
	t.Helper()
	params, err := ak.AttestationParameters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ekDER, err := x509.MarshalPKIXPublicKey(m.ek.Public())
	if err != nil {
		t.Fatal(err)
	}
	return serve.AttestRequest{
		TPMInfo: serve.TPMInfo{Version: 2},
		EK:      ekDER, EKCerts: [][]byte{m.ek.Certificate().Raw},
		Params: serve.AttestationParameters{Public: params.Public, CreateData: params.CreateData,
			CreateAttestation: params.CreateAttestation, CreateSignature: params.CreateSignature},
	}
}

func redeem(t *testing.T, r *running, secret []byte) (int, []byte, []*x509.Certificate) {
	t.Helper()
	code, body := r.postJSON(t, serve.PathSecret, serve.SecretRequest{Secret: secret})
	if code != http.StatusOK {
		return code, body, nil
	}
	var resp serve.SecretResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	var chain []*x509.Certificate
	for _, der := range resp.Chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	return code, body, chain
}

// TestSecretBinding: a secret redeems only the challenge whose credential
// carried it, once. With two AKs of one TPM waiting: a wrong secret is
// refused (and leaves both challenges), A's secret yields A's certificate
// and never B's, a replayed secret is refused, and B's still works.
func TestSecretBinding(t *testing.T) {
	m := newMachine(t)
	caDir, ca := newCA(t)
	st := newStore(t)
	ek, err := serve.LoadEKPolicy("cert", m.TrustDir, "")
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, caDir, serve.Config{CA: ca, Store: st, EK: ek})
	akA, akB := m.newAK(t, "a"), m.newAK(t, "b")
	credA, credB := attestRaw(t, r, m, akA), attestRaw(t, r, m, akB)
	secretA, err := akA.ActivateCredential(context.Background(), credA)
	if err != nil {
		t.Fatal(err)
	}
	secretB, err := akB.ActivateCredential(context.Background(), credB)
	if err != nil {
		t.Fatal(err)
	}
	// B's AK cannot activate A's credential: the TPM binds it to A's name.
	if _, err := akB.ActivateCredential(context.Background(), credA); err == nil {
		t.Error("AK B activated A's credential")
	}
	if got := r.metric(t, serve.MetricPending, ""); got != 2 {
		t.Errorf("pending = %v, want 2", got)
	}

	wrong := make([]byte, len(secretA))
	rand.Read(wrong)
	code, body, _ := redeem(t, r, wrong)
	wantRefusal(t, code, body, http.StatusForbidden, "secret_unknown")
	flipped := append([]byte(nil), secretA...)
	flipped[0] ^= 1
	code, body, _ = redeem(t, r, flipped)
	wantRefusal(t, code, body, http.StatusForbidden, "secret_unknown")

	code, body, chain := redeem(t, r, secretA)
	if code != http.StatusOK {
		t.Fatalf("A's secret: %d %s", code, body)
	}
	if !chain[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(akA.Public()) {
		t.Error("A's secret did not certify A's AK")
	}
	code, body, _ = redeem(t, r, secretA)
	wantRefusal(t, code, body, http.StatusForbidden, "secret_unknown")

	code, body, chain = redeem(t, r, secretB)
	if code != http.StatusOK {
		t.Fatalf("B's secret: %d %s", code, body)
	}
	if !chain[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(akB.Public()) {
		t.Error("B's secret did not certify B's AK")
	}
	if got := r.metric(t, serve.MetricRefused, `reason="secret_unknown"`); got != 3 {
		t.Errorf("refused{secret_unknown} = %v", got)
	}
	if got := r.metric(t, serve.MetricIssued, ""); got != 2 {
		t.Errorf("issued = %v", got)
	}
	// Two admitted attempts; the unattributable wrong secrets are not
	// filed under any EK.
	as := attempts(t, st, "")
	if len(as) != 2 || as[0].Outcome != store.OutcomeAdmitted || as[1].Outcome != store.OutcomeAdmitted {
		t.Errorf("attempts %+v", as)
	}
}

// TestChallengeBounds: per-EK and total bounds refuse new challenges
// (nothing is evicted), and an unanswered challenge expires after its
// TTL: its secret is then refused and the expiry counted.
func TestChallengeBounds(t *testing.T) {
	m := newMachine(t)
	caDir, ca := newCA(t)
	ek, err := serve.LoadEKPolicy("cert", m.TrustDir, "")
	if err != nil {
		t.Fatal(err)
	}
	ak := m.newAK(t, "ak")

	t.Run("per EK", func(t *testing.T) {
		r := start(t, caDir, serve.Config{CA: ca, Store: newStore(t), EK: ek, Limits: serve.Limits{MaxPendingPerEK: 2}})
		cred := attestRaw(t, r, m, ak)
		attestRaw(t, r, m, ak)
		code, body := r.postJSON(t, serve.PathAttest, attestRequest(t, m, ak))
		wantRefusal(t, code, body, http.StatusTooManyRequests, "too_many_challenges")
		// The first challenge is still there.
		secret, err := ak.ActivateCredential(context.Background(), cred)
		if err != nil {
			t.Fatal(err)
		}
		if code, body, _ := redeem(t, r, secret); code != http.StatusOK {
			t.Fatalf("first challenge: %d %s", code, body)
		}
		attestRaw(t, r, m, ak) // room again
	})

	t.Run("total", func(t *testing.T) {
		r := start(t, caDir, serve.Config{CA: ca, Store: newStore(t), EK: ek, Limits: serve.Limits{MaxPending: 1}})
		attestRaw(t, r, m, ak)
		code, body := r.postJSON(t, serve.PathAttest, attestRequest(t, m, ak))
		wantRefusal(t, code, body, http.StatusServiceUnavailable, "busy")
	})

	t.Run("TTL", func(t *testing.T) {
		var mu sync.Mutex
		now := time.Now()
		clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		r := start(t, caDir, serve.Config{CA: ca, Store: newStore(t), EK: ek, Now: clock, Limits: serve.Limits{ChallengeTTL: time.Minute}})
		cred := attestRaw(t, r, m, ak)
		secret, err := ak.ActivateCredential(context.Background(), cred)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		now = now.Add(time.Minute)
		mu.Unlock()
		code, body, _ := redeem(t, r, secret)
		wantRefusal(t, code, body, http.StatusForbidden, "secret_unknown")
		if got := r.metric(t, serve.MetricExpired, ""); got != 1 {
			t.Errorf("expired = %v", got)
		}
		if got := r.metric(t, serve.MetricPending, ""); got != 0 {
			t.Errorf("pending = %v", got)
		}
	})
}

// TestAKAndEKChecks: the plugin's checks on the AK and the EK, on real
// attestation parameters that are then damaged.
func TestAKAndEKChecks(t *testing.T) {
	m := newMachine(t)
	caDir, ca := newCA(t)
	st := newStore(t)
	ek, err := serve.LoadEKPolicy("cert", m.TrustDir, "")
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, caDir, serve.Config{CA: ca, Store: st, EK: ek})
	ak := m.newAK(t, "ak")
	other := m.newAK(t, "other")
	otherParams, err := other.AttestationParameters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	akPKIX, err := x509.MarshalPKIXPublicKey(ak.Public())
	if err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name   string
		mutate func(*serve.AttestRequest)
		code   int
		reason string
	}{
		{"creation signature", func(q *serve.AttestRequest) {
			q.Params.CreateSignature = append([]byte(nil), q.Params.CreateSignature...)
			q.Params.CreateSignature[len(q.Params.CreateSignature)-1] ^= 1
		}, http.StatusForbidden, "ak_creation"},
		{"another AK's creation attestation", func(q *serve.AttestRequest) {
			q.Params.CreateAttestation, q.Params.CreateSignature = otherParams.CreateAttestation, otherParams.CreateSignature
		}, http.StatusForbidden, "ak_creation"},
		{"PKIX AK", func(q *serve.AttestRequest) { q.Params.Public = akPKIX }, http.StatusForbidden, "ak_attributes"},
		{"garbage AK", func(q *serve.AttestRequest) { q.Params.Public = []byte{0, 1, 2, 3} }, http.StatusBadRequest, "ak_malformed"},
		{"EK certificate of another key", func(q *serve.AttestRequest) { q.EK = akPKIX }, http.StatusBadRequest, "ek_mismatch"},
		{"EK certificate garbage", func(q *serve.AttestRequest) { q.EKCerts = [][]byte{[]byte("not a certificate")} }, http.StatusBadRequest, "ek_cert_malformed"},
		{"no EK certificate", func(q *serve.AttestRequest) { q.EKCerts = nil }, http.StatusForbidden, "ek_not_admitted"},
		{"too many EK certificates", func(q *serve.AttestRequest) {
			q.EKCerts = [][]byte{q.EKCerts[0], q.EKCerts[0], q.EKCerts[0], q.EKCerts[0], q.EKCerts[0]}
		}, http.StatusBadRequest, "ek_malformed"},
		{"TPM 1.2", func(q *serve.AttestRequest) { q.TPMInfo.Version = 1 }, http.StatusBadRequest, "tpm_version"},
		{"TCSD activation", func(q *serve.AttestRequest) { q.Params.UseTCSDActivationFormat = true }, http.StatusBadRequest, "tpm_version"},
	} {
		t.Run(c.name, func(t *testing.T) {
			q := attestRequest(t, m, ak)
			c.mutate(&q)
			code, body := r.postJSON(t, serve.PathAttest, q)
			wantRefusal(t, code, body, c.code, c.reason)
		})
	}
	if got := r.metric(t, serve.MetricPending, ""); got != 0 {
		t.Errorf("pending = %v after refusals", got)
	}
	// Refusals that name a parsable EK are recorded under it.
	if as := attempts(t, st, m.EKHash); len(as) < 4 {
		t.Errorf("%d attempts recorded for the EK", len(as))
	}

	t.Run("allowlist only: TPM unknown", func(t *testing.T) {
		list := t.TempDir() + "/allow"
		if err := writeFileString(list, m.EKHash+"\n"); err != nil {
			t.Fatal(err)
		}
		allow, err := serve.LoadEKPolicy("allowlist", "", list)
		if err != nil {
			t.Fatal(err)
		}
		r := start(t, caDir, serve.Config{CA: ca, Store: newStore(t), EK: allow})
		code, body := r.postJSON(t, serve.PathAttest, attestRequest(t, m, ak))
		wantRefusal(t, code, body, http.StatusForbidden, "tpm_unknown")
		// With the certificate as well, the TPM is known.
		both, err := serve.LoadEKPolicy("cert_and_allowlist", m.TrustDir, list)
		if err != nil {
			t.Fatal(err)
		}
		r = start(t, caDir, serve.Config{CA: ca, Store: newStore(t), EK: both})
		if _, err := stepAttest(t, r, m, ak); err != nil {
			t.Fatalf("cert_and_allowlist: %v", err)
		}
	})
}
