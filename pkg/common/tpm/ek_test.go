package tpm

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/hex"
	"errors"
	"io"
	"testing"

	"github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/tpm2"
)

// TestEKPolicyDigests: the EK authPolicy digests computed here are the
// profile's: PolicyA SHA-256 is the low range authPolicy (83 71 97 67...),
// PolicyB SHA-384 is the authPolicy swtpm 0.7 gives its P-384 and
// RSA-3072 EKs (b2 6e 7d 28...), and the other PolicyB/PolicyC values are
// those of the TCG EK Credential Profile 2.5, annex B.
func TestEKPolicyDigests(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  []byte
		want string
	}{
		{"PolicyA SHA-256", policyA(tpm2.TPMAlgSHA256), "837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa"},
		{"PolicyA SHA-384", policyA(tpm2.TPMAlgSHA384), "8bbf2266537c171cb56e403c4dc1d4b64f432611dc386e6f532050c3278c930e143e8bb1133824ccb431053871c6db53"},
		{"PolicyC SHA-256", policyC(tpm2.TPMAlgSHA256), "3767e2edd43ff45a3a7e1eaefcef78643dca964632e7aad82c673a30d8633fde"},
		{"PolicyC SHA-384", policyC(tpm2.TPMAlgSHA384), "d6032ce61f2fb3c240eb3cf6a33237ef2b6a16f4293c22b455e261cffd217ad5b4947c2d73e63005eed2dc2b3593d165"},
		{"PolicyB SHA-256", policyB(tpm2.TPMAlgSHA256), "ca3d0a99a2b93906f7a3342414efcfb3a385d44cd1fd459089d19b5071c0b7a0"},
		{"PolicyB SHA-384", policyB(tpm2.TPMAlgSHA384), "b26e7d28d11a50bc53d882bcf5fd3a1a074148bb35d3b4e4cb1c0ad9bde419cacb47ba096996461 50f9fc000f3f80e12"},
		{"PolicyB SHA-512", policyB(tpm2.TPMAlgSHA512), "b8221ca69e8550a4914de3faa6a18c072cc01208073a928d5d66d59ef79e49a429c41a6b269571d57edb25fbdb1838425608b413cd616a5f6db5b6071af99bea"},
	} {
		want := ""
		for _, c := range tc.want {
			if c != ' ' {
				want += string(c)
			}
		}
		if got := hex.EncodeToString(tc.got); got != want {
			t.Errorf("%s = %s, want %s", tc.name, got, want)
		}
	}
}

// TestSimulatorEKTemplates: every template makes a key of its type and
// size, read back unchanged; rsa2048 (L-1) is the key go-attestation
// derives, so agent IDs stay what they were.
func TestSimulatorEKTemplates(t *testing.T) {
	tp := openSim(t)
	for _, alg := range []EKAlg{EKRSA2048, EKP256, EKP384, EKP521} {
		var ek *EK
		err := tp.lock()
		if err == nil {
			ek, err = tp.ekFromSpec(primarySpec(alg), nil, nil)
			tp.unlock()
		}
		if err != nil {
			t.Fatalf("EK(%s): %v", alg, err)
		}
		switch k := ek.Public.(type) {
		case *rsa.PublicKey:
			if alg != EKRSA2048 || k.N.BitLen() != 2048 {
				t.Errorf("EK(%s) is RSA-%d", alg, k.N.BitLen())
			}
		case *ecdsa.PublicKey:
			want := map[EKAlg]elliptic.Curve{EKP256: elliptic.P256(), EKP384: elliptic.P384(), EKP521: elliptic.P521()}[alg]
			if k.Curve != want {
				t.Errorf("EK(%s) is on %s", alg, k.Curve.Params().Name)
			}
		}
		if ek.handle != 0 {
			t.Errorf("EK(%s) found persisted at 0x%08x on a fresh simulator", alg, ek.handle)
		}
	}
	ek, err := tp.EK(EKRSA)
	if err != nil {
		t.Fatal(err)
	}
	var theirs []attest.EK
	if err := tp.WithChannel(func(rw io.ReadWriter) error {
		at, err := attest.OpenTPM(&attest.OpenConfig{CommandChannel: rawChannel{rw}})
		if err != nil {
			return err
		}
		defer at.Close()
		theirs, err = at.EKs()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(theirs) == 0 || !samePublicKey(ek.Public, theirs[0].Public) {
		t.Error("the RSA-2048 EK differs from go-attestation's: agent IDs would change")
	}
	if h := loadedHandles(t, tp); len(h) != 0 {
		t.Errorf("handles left loaded: %v", h)
	}
}

type rawChannel struct{ io.ReadWriter }

func (rawChannel) Close() error                    { return nil }
func (rawChannel) MeasurementLog() ([]byte, error) { return nil, nil }

// cancelAfter is a context whose Err turns to context.Canceled after n
// calls: the TPM checks it once per call and once per command.
type cancelAfter struct {
	context.Context
	n int
}

func (c *cancelAfter) Err() error {
	if c.n <= 0 {
		return context.Canceled
	}
	c.n--
	return nil
}

// TestSimulatorContextCancel: a done context stops a call before its
// first command, and a context done between two commands stops the call
// there, with ctx.Err().
func TestSimulatorContextCancel(t *testing.T) {
	tp := openSim(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	before := tp.Commands()
	if _, err := tp.WithContext(ctx).EK(EKAuto); !errors.Is(err, context.Canceled) {
		t.Fatalf("EK with a cancelled context = %v, want context.Canceled", err)
	}
	if n := tp.Commands() - before; n != 0 {
		t.Errorf("%d commands sent with a cancelled context", n)
	}
	// Allowed: the lock check and two commands (TPM2_ReadPublic of the
	// missing SRK, TPM2_CreatePrimary of one), then cancelled before
	// TPM2_EvictControl; the transient SRK is still flushed.
	counts := tp.CommandCounts()
	_, err := tp.WithContext(&cancelAfter{Context: context.Background(), n: 3}).NewAK(AKP256)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("NewAK cancelled mid-way = %v, want context.Canceled", err)
	}
	after := tp.CommandCounts()
	for cc, want := range map[uint32]uint64{0x131: 1, 0x173: 1, 0x120: 0, 0x153: 0, 0x165: 1} {
		if got := after[cc] - counts[cc]; got != want {
			t.Errorf("command 0x%03x sent %d times, want %d", cc, got, want)
		}
	}
	if h := loadedHandles(t, tp); len(h) != 0 {
		t.Errorf("handles left loaded after the cancellation: %v", h)
	}
	// The TPM is usable again with a live context.
	if _, err := tp.WithContext(context.Background()).EK(EKAuto); err != nil {
		t.Fatal(err)
	}
}
