//go:build cgo

package plugin_test

import (
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-tpm-tools/simulator"
	legacy "github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
	servernav1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/nodeattestor/v1"
	"google.golang.org/grpc/codes"

	"github.com/tpmid/tpmid/pkg/common/wire"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// TestWeakAKNameAlg: an agent whose AK is a real restricted signing key of
// its TPM, created with a SHA-1 name algorithm (pkg/common/tpm never makes
// one; a hostile agent can, with TPM2_Create under the SRK), is refused at
// the hello with ak_weak: no challenge, no MakeCredential for a name bound
// by SHA-1.
func TestWeakAKNameAlg(t *testing.T) {
	sim, err := simulator.Get()
	if err != nil {
		t.Fatalf("simulator: %v", err)
	}
	t.Cleanup(func() { sim.Close() }) // after the flushes registered later

	hello, ekHash := sha1AKHello(t, sim)
	allow := filepath.Join(t.TempDir(), "allow.txt")
	if err := os.WriteFile(allow, []byte(ekHash+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	server := serveServer(t, fmt.Sprintf("ek_policy = \"allowlist\"\nek_hash_allowlist = %q", allow), nil)

	ss, err := server.Attest(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := ss.Send(&servernav1.AttestRequest{Request: &servernav1.AttestRequest_Payload{Payload: hello}}); err != nil {
		t.Fatal(err)
	}
	resp, err := ss.Recv()
	if err == nil {
		t.Fatalf("the server answered a SHA-1-named AK with %v, want a refusal before any challenge", resp)
	}
	wantRefusal(t, err, codes.PermissionDenied, "("+string(verify.ReasonAKWeak)+")", "name algorithm SHA-1 (0x0004) is weaker than SHA-256")
}

// sha1AKHello makes, in the TPM behind rw, an endorsement primary key and
// an ECDSA P-256 AK with every attribute tpmid asks for but nameAlg SHA-1,
// certifies its creation with itself as go-attestation does, and returns the
// hello an agent would send for them and the EK hash.
func sha1AKHello(t *testing.T, rw interface {
	Read([]byte) (int, error)
	Write([]byte) (int, error)
}) ([]byte, string) {
	t.Helper()
	flush := func(h tpmutil.Handle) { t.Cleanup(func() { legacy.FlushContext(rw, h) }) }
	eccParams := func(sym *legacy.SymScheme, sign *legacy.SigScheme) *legacy.ECCParams {
		return &legacy.ECCParams{
			Symmetric: sym,
			Sign:      sign,
			CurveID:   legacy.CurveNISTP256,
			Point:     legacy.ECPoint{XRaw: make([]byte, 32), YRaw: make([]byte, 32)},
		}
	}
	aes := &legacy.SymScheme{Alg: legacy.AlgAES, KeyBits: 128, Mode: legacy.AlgCFB}

	ekHandle, ekPub, err := legacy.CreatePrimary(rw, legacy.HandleEndorsement, legacy.PCRSelection{}, "", "", legacy.Public{
		Type:          legacy.AlgECC,
		NameAlg:       legacy.AlgSHA256,
		Attributes:    legacy.FlagStorageDefault,
		ECCParameters: eccParams(aes, nil),
	})
	if err != nil {
		t.Fatalf("endorsement primary: %v", err)
	}
	flush(ekHandle)
	srk, _, err := legacy.CreatePrimary(rw, legacy.HandleOwner, legacy.PCRSelection{}, "", "", legacy.Public{
		Type:          legacy.AlgECC,
		NameAlg:       legacy.AlgSHA256,
		Attributes:    legacy.FlagStorageDefault | legacy.FlagNoDA,
		ECCParameters: eccParams(aes, nil),
	})
	if err != nil {
		t.Fatalf("SRK: %v", err)
	}
	flush(srk)

	sign := legacy.SigScheme{Alg: legacy.AlgECDSA, Hash: legacy.AlgSHA256}
	priv, pub, createData, createHash, ticket, err := legacy.CreateKey(rw, srk, legacy.PCRSelection{}, "", "", legacy.Public{
		Type:          legacy.AlgECC,
		NameAlg:       legacy.AlgSHA1, // the weakness under test
		Attributes:    legacy.FlagSignerDefault | legacy.FlagNoDA,
		ECCParameters: eccParams(nil, &sign),
	})
	if err != nil {
		t.Fatalf("TPM2_Create of the SHA-1-named AK: %v", err)
	}
	ak, _, err := legacy.Load(rw, srk, "", pub, priv)
	if err != nil {
		t.Fatalf("TPM2_Load: %v", err)
	}
	flush(ak)
	attest, sig, err := legacy.CertifyCreation(rw, "", ak, ak, nil, createHash, sign, ticket)
	if err != nil {
		t.Fatalf("TPM2_CertifyCreation: %v", err)
	}

	ekDER, err := x509.MarshalPKIXPublicKey(ekPub)
	if err != nil {
		t.Fatal(err)
	}
	ekHash, err := verify.EKHash(ekPub)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, wire.NonceSize)
	rand.Read(nonce)
	hello, err := wire.Encode(wire.Hello{
		Version:  wire.Version,
		EK:       wire.EK{Public: ekDER},
		AK:       wire.AK{Public: pub, CreateData: createData, CreateAttestation: attest, CreateSignature: sig},
		Nonce:    nonce,
		Hostname: "node-1",
	})
	if err != nil {
		t.Fatal(err)
	}
	return hello, ekHash
}
