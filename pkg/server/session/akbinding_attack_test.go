package session_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"io"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/tpmid/tpmid/internal/testmachine"
	"github.com/tpmid/tpmid/pkg/common/tpm"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// TestActivationProvesTheAKIsTPMResident is the premise of not checking the
// AK's creation attestation (docs/verification.md, 2026-11-25): the
// server's credential activates only for a loaded object with exactly the
// AK's Name, hence its checked attributes (fixedTPM, fixedParent,
// sensitiveDataOrigin, restricted, sign), and a TPM holds such an object
// only if it created it. Root on the node holds a software key, gives it
// an AK's public area (which passes every server check on the public area)
// and tries to get it into the TPM that holds the genuine EK, to answer
// the credential and then sign quotes in software:
//
//   - TPM2_LoadExternal with the private part: refused (TPM_RC_ATTRIBUTES),
//     an external object with a sensitive area must not claim fixedTPM,
//     fixedParent or restricted;
//   - TPM2_LoadExternal of the public area only: loads, but such an object
//     has neither authValue nor authPolicy, so it cannot be the
//     activateHandle of TPM2_ActivateCredential, which needs its ADMIN
//     authorisation (TPM_RC_AUTH_UNAVAILABLE), whether by password or by a
//     policy the attacker wrote into the public area (adminWithPolicy).
//
// (TPM2_Import refuses fixedTPM objects, and TPM2_Create makes its own
// key: the only way in for a software key is LoadExternal.) A control
// shows the same credential path activating for a genuine AK.
func TestActivationProvesTheAKIsTPMResident(t *testing.T) {
	m := testmachine.New(t)
	ek, err := m.TPM.EK(m.EKAlg)
	if err != nil {
		t.Fatal(err)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}

	t.Run("control: a genuine AK activates", func(t *testing.T) {
		ak, err := m.TPM.NewAK(tpm.AKDefault)
		if err != nil {
			t.Fatal(err)
		}
		defer ak.Close(m.TPM)
		p, err := verify.ParseAKPublic(ak.Params().Public)
		if err != nil {
			t.Fatal(err)
		}
		blob, enc, err := verify.MakeCredential(rand.Reader, ek.Public, p.Name, secret)
		if err != nil {
			t.Fatal(err)
		}
		got, err := m.TPM.Activate(ak, ek, blob, enc)
		if err != nil || string(got) != string(secret) {
			t.Fatalf("genuine AK: %x, %v", got, err)
		}
	})

	soft, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	x, y := soft.PublicKey.X.FillBytes(make([]byte, 32)), soft.PublicKey.Y.FillBytes(make([]byte, 32)) //nolint:staticcheck // the TPM wants the coordinates
	akPublic := func(policy []byte) tpm2.TPMTPublic {
		return tpm2.TPMTPublic{
			Type:    tpm2.TPMAlgECC,
			NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{
				FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
				UserWithAuth: true, AdminWithPolicy: policy != nil,
				Restricted: true, SignEncrypt: true,
			},
			AuthPolicy: tpm2.TPM2BDigest{Buffer: policy},
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA, Details: tpm2.NewTPMUAsymScheme(
					tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
				CurveID: tpm2.TPMECCNistP256,
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
				X: tpm2.TPM2BECCParameter{Buffer: x}, Y: tpm2.TPM2BECCParameter{Buffer: y}}),
		}
	}
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		t.Fatal(err)
	}
	if err := (tpm2.PolicyCommandCode{Code: tpm2.TPMCCActivateCredential}).Update(calc); err != nil {
		t.Fatal(err)
	}
	activatePolicy := calc.Hash().Digest

	for _, tc := range []struct {
		name        string
		pub         tpm2.TPMTPublic
		withPrivate bool
		policy      bool // authorise the AK with a PolicyCommandCode session
		load, act   error
		// released: the TPM gives the secret up; only for a public area
		// the server refuses, to show the attack's plumbing works.
		released bool
	}{
		{name: "external key with its private part", pub: akPublic(nil), withPrivate: true, load: tpm2.TPMRCAttributes},
		{name: "external public area, password", pub: akPublic(nil), act: tpm2.TPMRCAuthUnavailable},
		{name: "external public area, attacker's admin policy", pub: akPublic(activatePolicy), policy: true, act: tpm2.TPMRCAuthUnavailable},
		{name: "plumbing check: external key without fixedTPM activates", pub: func() tpm2.TPMTPublic {
			p := akPublic(nil)
			p.ObjectAttributes.FixedTPM, p.ObjectAttributes.FixedParent, p.ObjectAttributes.Restricted = false, false, false
			return p
		}(), withPrivate: true, released: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The server sees nothing wrong with the public area.
			pubBytes := tpm2.Marshal(tc.pub)
			p, err := verify.ParseAKPublic(pubBytes)
			if err != nil {
				t.Fatal(err)
			}
			err = errors.Join(verify.CheckAKAttributes(p), verify.CheckAKStrength(p))
			switch {
			case tc.released && verify.ReasonOf(err) != verify.ReasonAKAttributes:
				t.Fatalf("the server does not refuse a software key's attributes: %v", err)
			case !tc.released && err != nil:
				t.Fatalf("the forged public area fails the server's checks, so this test proves nothing: %v", err)
			}
			blob, enc, err := verify.MakeCredential(rand.Reader, ek.Public, p.Name, secret)
			if err != nil {
				t.Fatal(err)
			}
			err = m.TPM.WithChannel(func(rw io.ReadWriter) error {
				tp := transport.FromReadWriter(rw)
				le := tpm2.LoadExternal{InPublic: tpm2.New2B(tc.pub), Hierarchy: tpm2.TPMRHNull}
				if tc.withPrivate {
					le.InPrivate = tpm2.New2B(tpm2.TPMTSensitive{
						SensitiveType: tpm2.TPMAlgECC,
						Sensitive: tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgECC,
							&tpm2.TPM2BECCParameter{Buffer: soft.D.FillBytes(make([]byte, 32))}),
					})
				}
				loaded, err := le.Execute(tp)
				if !errors.Is(err, tc.load) || (tc.load != nil && err == nil) {
					t.Fatalf("TPM2_LoadExternal: %v, want %v", err, tc.load)
				}
				if err != nil {
					return nil
				}
				defer tpm2.FlushContext{FlushHandle: loaded.ObjectHandle}.Execute(tp)

				ekHandle, ekName := machineEK(t, tp, ek)
				defer tpm2.FlushContext{FlushHandle: ekHandle}.Execute(tp)
				akAuth := tpm2.Session(tpm2.PasswordAuth(nil))
				if tc.policy {
					sess, cleanup, err := tpm2.PolicySession(tp, tpm2.TPMAlgSHA256, 16)
					if err != nil {
						t.Fatal(err)
					}
					defer cleanup()
					if _, err := (tpm2.PolicyCommandCode{PolicySession: sess.Handle(), Code: tpm2.TPMCCActivateCredential}).Execute(tp); err != nil {
						t.Fatal(err)
					}
					akAuth = sess
				}
				ekAuth := tpm2.Policy(tpm2.TPMAlgSHA256, 16, func(tp transport.TPM, h tpm2.TPMISHPolicy, nonce tpm2.TPM2BNonce) error {
					_, err := tpm2.PolicySecret{
						AuthHandle:    tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
						PolicySession: h, NonceTPM: nonce,
					}.Execute(tp)
					return err
				})
				got, err := tpm2.ActivateCredential{
					ActivateHandle: tpm2.AuthHandle{Handle: loaded.ObjectHandle, Name: loaded.Name, Auth: akAuth},
					KeyHandle:      tpm2.AuthHandle{Handle: ekHandle, Name: ekName, Auth: ekAuth},
					CredentialBlob: tpm2.TPM2BIDObject{Buffer: unwrap(t, blob)},
					Secret:         tpm2.TPM2BEncryptedSecret{Buffer: unwrap(t, enc)},
				}.Execute(tp)
				if tc.released {
					if err != nil || string(got.CertInfo.Buffer) != string(secret) {
						t.Fatalf("TPM2_ActivateCredential for a loadable software key: %v", err)
					}
					return nil
				}
				if err == nil {
					t.Fatalf("TPM2_ActivateCredential released the secret (%x) for a software key", got.CertInfo.Buffer)
				}
				if !errors.Is(err, tc.act) {
					t.Fatalf("TPM2_ActivateCredential: %v, want %v", err, tc.act)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// machineEK loads the machine's RSA EK from the TCG template
// (TPM2_CreatePrimary under the endorsement hierarchy), as any program
// with the TPM can, and checks it is the EK the server knows.
func machineEK(t *testing.T, tp transport.TPM, ek *tpm.EK) (tpm2.TPMHandle, tpm2.TPM2BName) {
	t.Helper()
	if _, ok := ek.Public.(*rsa.PublicKey); !ok {
		t.Fatalf("the test machine's EK is %T, want the RSA EK", ek.Public)
	}
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tpm2.RSAEKTemplate),
	}.Execute(tp)
	if err != nil {
		t.Fatalf("TPM2_CreatePrimary(EK): %v", err)
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		t.Fatal(err)
	}
	key, err := tpm2.Pub(*pub)
	if err != nil || !key.(*rsa.PublicKey).Equal(ek.Public) {
		t.Fatalf("the EK from the template is not the machine's EK (%v)", err)
	}
	return rsp.ObjectHandle, rsp.Name
}

// unwrap strips a TPM2B's size prefix if MakeCredential's output has one.
func unwrap(t *testing.T, b []byte) []byte {
	t.Helper()
	if len(b) >= 2 && int(b[0])<<8|int(b[1]) == len(b)-2 {
		return b[2:]
	}
	return b
}
