package verify

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// Fuzz seeds come from the real evidence at test time (skipped if absent).

func FuzzParseAKPublic(f *testing.F) {
	for _, p := range []string{
		"quotes/lenovo-t490-stm/ak.pub",
		"quotes/lenovo-t490-stm/ek.pub",
		"quotes/gce-windows-shielded-vm/ak.tpmt_public.bin",
		"quotes/gce-cos-85/nonce9009/ak.tpmt_public.bin",
	} {
		f.Add(readReal(f, p))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ak, err := ParseAKPublic(b)
		if err != nil {
			if ReasonOf(err) != ReasonAKMalformed {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if ak.Public == nil {
			t.Fatal("nil key")
		}
		if ak.TPMTPublic != nil {
			again, err := ParseAKPublic(ak.TPMTPublic)
			if err != nil || !bytes.Equal(again.Name, ak.Name) {
				t.Fatalf("re-parse of canonical TPMT_PUBLIC: %v", err)
			}
			_ = CheckAKAttributes(ak)
		}
	})
}

// FuzzVerifyQuote mutates the attestation and signature of the real T490
// quote, verified with the real T490 AK: nothing but the original bytes may
// verify, and every rejection must carry a reason.
func FuzzVerifyQuote(f *testing.F) {
	qs := loadRealQuotes(f)
	t490 := qs[0]
	ak := loadAK(f, t490)
	origAttest := readReal(f, t490.dir+"/"+t490.attest)
	origSig := readReal(f, t490.dir+"/"+t490.sig)
	for _, q := range qs {
		f.Add(readReal(f, q.dir+"/"+q.attest), readReal(f, q.dir+"/"+q.sig))
	}
	f.Fuzz(func(t *testing.T, attest, sig []byte) {
		facts, err := VerifyQuote(ak, Quote{Attest: attest, Signature: sig}, t490.extraData, t490.values)
		if err != nil {
			if ReasonOf(err) == "" {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if !bytes.Equal(attest, origAttest) {
			t.Fatalf("mutated attest verified: %x (facts %+v)", attest, facts)
		}
		_ = origSig // ECDSA signatures are malleable (s -> n-s): only the attest must be the original
	})
}

func FuzzParseEKCert(f *testing.F) {
	for _, e := range realEKs {
		f.Add(readReal(f, e.path))
	}
	for _, dir := range []string{"cacerts/google-gce"} {
		ents, _ := os.ReadDir(realPath(f, dir))
		for _, e := range ents {
			f.Add(readReal(f, filepath.Join(dir, e.Name())))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseEKCert(b)
		if err != nil {
			if ReasonOf(err) != ReasonEKCertMalformed {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if _, _, _, err := EKAttributes(c); err != nil && ReasonOf(err) != ReasonEKSAN {
			t.Fatalf("EKAttributes untyped error %v", err)
		}
		if _, err := EKHash(c.PublicKey); err != nil && ReasonOf(err) != ReasonInvalidArgument {
			t.Fatal(err)
		}
	})
}
