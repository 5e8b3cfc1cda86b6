package akissuer

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/tpmid/tpmid/ca/akcert"
	"github.com/tpmid/tpmid/ca/issuer"
	"github.com/tpmid/tpmid/pkg/server/session"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

func TestIssueAndCheck(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if _, err := issuer.Init(ctx, issuer.InitOptions{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	ca, err := issuer.Load(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	ak, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ekDER, _ := x509.MarshalPKIXPublicKey(&ek.PublicKey)
	id := spiffeid.RequireFromString("spiffe://example.org/spire/agent/tpm/abc")
	full := &session.Facts{AKPublic: &ak.PublicKey, EKPublic: ekDER,
		EK: &verify.EKFacts{Manufacturer: "id:53544D20", Model: "ST33", Version: "id:00490008"}}
	i := &Issuer{CA: ca}

	chain, err := i.IssueAK(ctx, full, id)
	if err != nil || len(chain) != 2 {
		t.Fatalf("issue: %d certificates, %v", len(chain), err)
	}
	notAfter, err := i.CheckAK(ctx, chain, full, &ak.PublicKey, id)
	if err != nil || notAfter.Sub(time.Now()) < 23*time.Hour {
		t.Fatalf("check: %v %v", notAfter, err)
	}
	if i.Renew(notAfter) || !i.Renew(time.Now().Add(time.Hour)) {
		t.Error("renewal: a fresh certificate renewed, or one with an hour left kept")
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := i.CheckAK(ctx, chain, full, &other.PublicKey, id); err == nil {
		t.Error("chain accepted for another AK")
	}

	t.Run("firmware version from the quote", func(t *testing.T) {
		f := *full
		f.EK = &verify.EKFacts{Manufacturer: "id:474F4F47", Model: "vTPM"}
		f.Quotes = []verify.QuoteFacts{{FirmwareVersion: 0x2016051100162800}}
		tpm, err := tpmOf(&f)
		if err != nil || tpm.Version != akcert.FirmwareVersion(0x2016051100162800) {
			t.Fatalf("%+v %v", tpm, err)
		}
	})
	for name, f := range map[string]*session.Facts{
		"EK admitted by allowlist (no certificate)": {AKPublic: &ak.PublicKey, EKPublic: ekDER},
		"certificate without TCG attributes":        {AKPublic: &ak.PublicKey, EKPublic: ekDER, EK: &verify.EKFacts{Issuer: "EK/AK CA Intermediate"}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := i.IssueAK(ctx, f, id); !errors.Is(err, ErrTPMUnknown) {
				t.Errorf("err %v, want ErrTPMUnknown", err)
			}
		})
	}
}
