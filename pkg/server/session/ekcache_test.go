package session_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"strings"
	"testing"
	"time"

	"github.com/tpmid/tpmid/internal/testca"
	"github.com/tpmid/tpmid/pkg/server/appraise"
	"github.com/tpmid/tpmid/pkg/server/session"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// cacheEK is an EK key and a TCG EK certificate for it from ca.
func cacheEK(t *testing.T, ca *testca.CA) *session.EKClaim {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return reissue(t, ca, &session.EKClaim{Public: key.Public(), Hash: "ek"})
}

// reissue is another certificate from ca for the same EK: other bytes.
func reissue(t *testing.T, ca *testca.CA, ek *session.EKClaim) *session.EKClaim {
	t.Helper()
	der, err := ca.IssueEK(ek.Public, "id:53494D55", "SW TPM", "id:00020000")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &session.EKClaim{Public: ek.Public, Hash: ek.Hash, Certificate: cert}
}

func trustOf(t *testing.T, ca *testca.CA) *verify.EKTrust {
	t.Helper()
	tr, err := verify.NewEKTrust([]*x509.Certificate{ca.Cert}, "test")
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// TestEKCacheAnswersOnlyForTheSameChainInItsWindow: the cache may only
// skip work whose answer it already knows. The EK certificate comes from
// an intermediate CA in the bundle that expires long before it, so the
// chain's window is the intermediate's. Cases that must be judged in full
// show it two ways: at a time outside the window, with the real trust,
// the chain is refused as expired (the cache would have admitted it); for
// other bytes inside the window, the policy's trust is first swapped for
// one that trusts nothing the agents present, so only the cache could
// admit them, and they are refused.
func TestEKCacheAnswersOnlyForTheSameChainInItsWindow(t *testing.T) {
	root, err := testca.New("EK root")
	if err != nil {
		t.Fatal(err)
	}
	other, err := testca.New("another CA")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	interKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	interDER, err := root.Issue(&x509.Certificate{
		Subject: pkix.Name{CommonName: "EK intermediate"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(2 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}, interKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	interCert, err := x509.ParseCertificate(interDER)
	if err != nil {
		t.Fatal(err)
	}
	inter := &testca.CA{Cert: interCert, Key: interKey}
	trust, err := verify.NewEKTrust([]*x509.Certificate{root.Cert, interCert}, "test")
	if err != nil {
		t.Fatal(err)
	}
	ek := cacheEK(t, inter) // valid for a day, its CA for two hours

	tests := []struct {
		name   string
		claim  func() *session.EKClaim
		at     time.Time
		probe  bool          // swap the trust for one that admits nothing presented
		reason verify.Reason // "" when served from the cache
	}{
		{"same chain, same time: from the cache", func() *session.EKClaim { return ek }, now, true, ""},
		{"same chain later, inside the window: from the cache", func() *session.EKClaim { return ek }, now.Add(time.Hour), true, ""},
		{"same chain after the intermediate expired, the EK certificate still valid", func() *session.EKClaim { return ek }, interCert.NotAfter.Add(time.Minute), false, verify.ReasonEKExpired},
		{"same chain after the EK certificate expired", func() *session.EKClaim { return ek }, ek.Certificate.NotAfter.Add(time.Second), false, verify.ReasonEKExpired},
		{"same chain before the EK certificate is valid", func() *session.EKClaim { return ek }, ek.Certificate.NotBefore.Add(-time.Second), false, verify.ReasonEKExpired},
		{"same certificate with an intermediate added", func() *session.EKClaim {
			c := *ek
			c.Intermediates = []*x509.Certificate{interCert}
			return &c
		}, now, true, verify.ReasonEKUntrusted},
		{"another certificate for the same key", func() *session.EKClaim { return reissue(t, inter, ek) }, now, true, verify.ReasonEKUntrusted},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &session.EKPolicy{Policy: appraise.EKPolicyCert, Trust: trust, Cache: session.NewEKCache(16)}
			p.Now = func() time.Time { return now }
			want, err := p.AdmitEK(t.Context(), ek)
			if err != nil {
				t.Fatalf("first attestation: %v", err)
			}
			if p.Cache.Len() != 1 {
				t.Fatalf("cache holds %d chains after one acceptance, want 1", p.Cache.Len())
			}
			if tc.probe {
				p.Trust = trustOf(t, other)
			}
			p.Now = func() time.Time { return tc.at }
			got, err := p.AdmitEK(t.Context(), tc.claim())
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("want the cached acceptance, got %v", err)
				}
				if got.Manufacturer != want.Manufacturer || got.Model != want.Model || got.Version != want.Version ||
					got.Issuer != want.Issuer || len(got.Chain) != 3 || len(got.Chain) != len(want.Chain) {
					t.Fatalf("cached facts %+v differ from the verified %+v", got, want)
				}
				return
			}
			// Under ek_policy "cert" the chain's refusal is named inside
			// ek_not_admitted's message ("...: ek_expired: ...").
			if err == nil {
				t.Fatalf("admitted from the cache; want a full verification refused with %s", tc.reason)
			}
			if verify.ReasonOf(err) != session.ReasonEKNotAdmitted || !strings.Contains(err.Error(), string(tc.reason)+": ") {
				t.Fatalf("refused with %v, want %s naming %s", err, session.ReasonEKNotAdmitted, tc.reason)
			}
		})
	}
}

// TestEKCacheKeepsNoRefusal: a refused chain is not remembered, so it is
// judged again in full (and admitted once the operator trusts its CA,
// which in the plugin means a new Configure and a new cache anyway).
func TestEKCacheKeepsNoRefusal(t *testing.T) {
	ca, err := testca.New("EK CA")
	if err != nil {
		t.Fatal(err)
	}
	other, err := testca.New("another CA")
	if err != nil {
		t.Fatal(err)
	}
	ek := cacheEK(t, ca)
	p := &session.EKPolicy{Policy: appraise.EKPolicyCert, Trust: trustOf(t, other), Cache: session.NewEKCache(16)}
	if _, err := p.AdmitEK(t.Context(), ek); err == nil {
		t.Fatal("an EK from an untrusted CA was admitted")
	}
	if n := p.Cache.Len(); n != 0 {
		t.Fatalf("a refusal left %d chains in the cache", n)
	}
	p.Trust = trustOf(t, ca)
	if _, err := p.AdmitEK(t.Context(), ek); err != nil {
		t.Fatalf("once trusted: %v", err)
	}
}

// TestEKCacheBounded: however many EKs attest, the cache holds at most its
// size, and an evicted chain is simply verified again.
func TestEKCacheBounded(t *testing.T) {
	ca, err := testca.New("EK CA")
	if err != nil {
		t.Fatal(err)
	}
	p := &session.EKPolicy{Policy: appraise.EKPolicyCert, Trust: trustOf(t, ca), Cache: session.NewEKCache(3)}
	var eks []*session.EKClaim
	for range 10 {
		ek := cacheEK(t, ca)
		eks = append(eks, ek)
		if _, err := p.AdmitEK(t.Context(), ek); err != nil {
			t.Fatal(err)
		}
		if n := p.Cache.Len(); n > 3 {
			t.Fatalf("cache of size 3 holds %d chains", n)
		}
	}
	for i, ek := range eks {
		if _, err := p.AdmitEK(t.Context(), ek); err != nil {
			t.Fatalf("EK %d again (cached or evicted): %v", i, err)
		}
	}
}
