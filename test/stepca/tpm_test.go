package stepca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/smallstep/go-attestation/attest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	steptpm "go.step.sm/crypto/tpm"
	"go.step.sm/crypto/tpm/storage"
	"go.step.sm/crypto/x509util"

	"github.com/tpmid/tpmid/ca/akcert"
	"github.com/tpmid/tpmid/ca/issuer"
	"github.com/tpmid/tpmid/internal/swtpm"
	"github.com/tpmid/tpmid/internal/testmachine"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// swtpmChannel is a go.step.sm/crypto/tpm command channel over one TCP
// connection to swtpm's data port. go-tpm's tpmutil does a single Read per
// response, so a whole response is buffered (10-byte header, then the size
// it gives). go.step.sm/crypto/tpm closes its channel after every
// operation; swtpm serves one connection at a time, so Close is a no-op
// here and the connection is closed when the test ends.
type swtpmChannel struct {
	mu   sync.Mutex
	conn net.Conn
	buf  []byte
}

func dialSwtpm(t testing.TB, device string) *swtpmChannel {
	t.Helper()
	addr, ok := strings.CutPrefix(device, "tcp://")
	if !ok {
		t.Fatalf("swtpm device %q is not tcp://", device)
	}
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatalf("connecting to swtpm: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return &swtpmChannel{conn: conn}
}

func (c *swtpmChannel) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf = nil
	if err := c.conn.SetDeadline(time.Now().Add(time.Minute)); err != nil {
		return 0, err
	}
	return c.conn.Write(b)
}

func (c *swtpmChannel) Read(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.buf) == 0 {
		var hdr [10]byte
		if _, err := io.ReadFull(c.conn, hdr[:]); err != nil {
			return 0, fmt.Errorf("reading TPM response header: %w", err)
		}
		size := binary.BigEndian.Uint32(hdr[2:6])
		if size < 10 || size > 1<<20 {
			return 0, fmt.Errorf("TPM response size %d", size)
		}
		resp := make([]byte, size)
		copy(resp, hdr[:])
		if _, err := io.ReadFull(c.conn, resp[10:]); err != nil {
			return 0, fmt.Errorf("reading TPM response body: %w", err)
		}
		c.buf = resp
	}
	n := copy(b, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

func (c *swtpmChannel) Close() error                    { return nil }
func (c *swtpmChannel) MeasurementLog() ([]byte, error) { return nil, nil }

// device is a swtpm machine seen through go.step.sm/crypto/tpm, with an AK
// made in it.
type device struct {
	tpm     *steptpm.TPM
	ekDER   []byte // the EK's PKIX DER
	permID  string // urn:ek:sha256:...
	tpmInfo akcert.TPM
	ak      *steptpm.AK
	keys    int
}

// newDevice manufactures a swtpm (EK and EK certificate in NV) and makes an
// RSA AK in it. step-ca v0.30.2 verifies TPM2_Certify signatures with RSA
// AKs only (smallstep/go-attestation CertificationParameters.Verify: "only
// RSA verification keys are supported"), so the AK is RSA 2048.
func newDevice(t testing.TB) *device {
	t.Helper()
	m := testmachine.NewSwtpm(t, swtpm.Options{})
	ekCert, err := x509.ParseCertificate(m.EKCertDER)
	if err != nil {
		t.Fatalf("EK certificate: %v", err)
	}
	d := &device{}
	if d.ekDER, err = x509.MarshalPKIXPublicKey(ekCert.PublicKey); err != nil {
		t.Fatal(err)
	}
	d.permID = akcert.PermanentIdentifier(d.ekDER)
	if d.tpmInfo.Manufacturer, d.tpmInfo.Model, d.tpmInfo.Version, err = verify.EKAttributes(ekCert); err != nil {
		t.Fatalf("EK attributes: %v", err)
	}
	d.tpm, err = steptpm.New(
		steptpm.WithCommandChannel(dialSwtpm(t, m.Device)),
		steptpm.WithStore(storage.NewDirstore(t.TempDir())),
		steptpm.WithDisableDownload(),
	)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if d.ak, err = d.tpm.CreateAK(ctx, "ak"); err != nil {
		t.Fatalf("CreateAK: %v", err)
	}
	// The permanent identifier step's own client would put in the order.
	eks, err := d.tpm.GetEKs(ctx)
	if err != nil {
		t.Fatalf("GetEKs: %v", err)
	}
	found := false
	for _, ek := range eks {
		if uri, err := ek.FingerprintURI(); err == nil && uri.String() == d.permID {
			found = true
		}
	}
	if !found {
		t.Fatalf("no EK of the TPM has the permanent identifier %s", d.permID)
	}
	return d
}

// issueAK has ca certify the device's AK: [AK certificate, intermediate].
func (d *device) issueAK(t testing.TB, caDir string) []*x509.Certificate {
	t.Helper()
	ctx := context.Background()
	ca, err := issuer.Load(ctx, caDir)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	chain, err := ca.IssueAK(ctx, issuer.AKRequest{
		AKPublic:    d.ak.Public(),
		EKPublicDER: d.ekDER,
		TPM:         d.tpmInfo,
		SPIFFEID:    spiffeid.RequireFromString("spiffe://example.org/spire/agent/tpmid/stepca-test"),
	})
	if err != nil {
		t.Fatalf("IssueAK: %v", err)
	}
	return chain
}

// newCA makes a tpmid CA in a temporary directory.
func newCA(t testing.TB, name string) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := issuer.Init(context.Background(), issuer.InitOptions{Dir: dir, Name: name}); err != nil {
		t.Fatalf("issuer.Init: %v", err)
	}
	return dir
}

// attestedKey is a new ECDSA P-256 key made in the TPM and certified by
// the AK (TPM2_Certify) with qualifying data SHA-256(keyAuthorization), as
// step-ca's doTPMAttestationFormat expects.
type attestedKey struct {
	key    *steptpm.Key
	params attest.CertificationParameters
	signer crypto.Signer
}

func (d *device) attestKey(t testing.TB, keyAuthorization string) *attestedKey {
	t.Helper()
	ctx := context.Background()
	d.keys++
	sum := sha256.Sum256([]byte(keyAuthorization))
	key, err := d.tpm.AttestKey(ctx, d.ak.Name(), fmt.Sprintf("key%d", d.keys), steptpm.AttestKeyConfig{
		Algorithm:      "ECDSA",
		Size:           256,
		QualifyingData: sum[:],
	})
	if err != nil {
		t.Fatalf("AttestKey: %v", err)
	}
	params, err := key.CertificationParameters(ctx)
	if err != nil {
		t.Fatalf("CertificationParameters: %v", err)
	}
	signer, err := key.Signer(ctx)
	if err != nil {
		t.Fatalf("Signer: %v", err)
	}
	return &attestedKey{key: key, params: params, signer: signer}
}

// COSE algorithm identifiers step-ca accepts for the tpm format.
const (
	coseES256 = -7
	coseRS256 = -257
)

// attestationObject is the WebAuthn-style "tpm" attestation object of
// ACME device-attest-01 (draft-acme-device-attest): CBOR {fmt: "tpm",
// attStmt: {ver: "2.0", alg, x5c: [AK certificate, intermediates...],
// sig, certInfo, pubArea}}.
func attestationObject(akChain []*x509.Certificate, params attest.CertificationParameters) ([]byte, error) {
	var alg int64
	switch akChain[0].PublicKey.(type) {
	case *rsa.PublicKey:
		alg = coseRS256
	default:
		alg = coseES256
	}
	x5c := make([]any, len(akChain))
	for i, c := range akChain {
		x5c[i] = c.Raw
	}
	return cborEncode(cborMap{
		"fmt": "tpm",
		"attStmt": cborMap{
			"ver":      "2.0",
			"alg":      alg,
			"x5c":      x5c,
			"sig":      params.CreateSignature,
			"certInfo": params.CreateAttestation,
			"pubArea":  params.Public,
		},
	})
}

var oidSAN = asn1.ObjectIdentifier{2, 5, 29, 17}

// stepCAVerify repeats, outside step-ca, what its doTPMAttestationFormat
// (acme/challenge.go, v0.30.2) does with an attestation statement, calling
// the same library code where it is importable (smallstep/go-attestation's
// CertificationParameters.Verify, go.step.sm/crypto's x509util SAN
// parser). It returns the attested public key.
func stepCAVerify(akChain []*x509.Certificate, params attest.CertificationParameters, roots *x509.CertPool, keyAuthorization, challengeValue string) (crypto.PublicKey, error) {
	akCert, err := x509.ParseCertificate(akChain[0].Raw)
	if err != nil {
		return nil, err
	}
	inter := x509.NewCertPool()
	for _, c := range akChain[1:] {
		inter.AddCert(c)
	}
	unhandled := akCert.UnhandledCriticalExtensions[:0]
	for _, oid := range akCert.UnhandledCriticalExtensions {
		if !oid.Equal(oidSAN) {
			unhandled = append(unhandled, oid)
		}
	}
	akCert.UnhandledCriticalExtensions = unhandled
	if _, err := akCert.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter,
		CurrentTime: time.Now().Truncate(time.Second),
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, fmt.Errorf("x5c is not valid: %w", err)
	}
	sans, err := x509util.ParseSubjectAlternativeNames(akCert)
	if err != nil {
		return nil, err
	}
	if h := sans.TPMHardwareDetails; h.Manufacturer == "" || h.Model == "" || h.Version == "" {
		return nil, errors.New("TPM attributes missing")
	}
	ok := false
	for _, pi := range sans.PermanentIdentifiers {
		ok = ok || pi.Identifier == challengeValue
	}
	if !ok {
		return nil, fmt.Errorf("permanent identifier does not match: %v", sans.PermanentIdentifiers)
	}
	if err := params.Verify(attest.VerifyOpts{Public: akCert.PublicKey, Hash: crypto.SHA256}); err != nil {
		return nil, fmt.Errorf("invalid certification parameters: %w", err)
	}
	info, err := tpm2.DecodeAttestationData(params.CreateAttestation)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(keyAuthorization))
	if !bytes.Equal(sum[:], info.ExtraData) {
		return nil, errors.New("key authorization invalid")
	}
	pub, err := tpm2.DecodePublic(params.Public)
	if err != nil {
		return nil, err
	}
	return pub.Key()
}

// TestAttestationStatement makes the pieces of a device-attest-01 "tpm"
// attestation statement on swtpm and checks them as step-ca does, without
// running step-ca: the AK certificate from tpmid's CA, and a TPM key
// certified by that AK over SHA-256 of a key authorization.
func TestAttestationStatement(t *testing.T) {
	d := newDevice(t)
	caDir := newCA(t, "tpmid stepca test")
	chain := d.issueAK(t, caDir)
	ca, err := issuer.Load(context.Background(), caDir)
	if err != nil {
		t.Fatal(err)
	}
	roots := ca.Roots()
	ca.Close()

	const keyAuth = "token123.thumbprint456"
	k := d.attestKey(t, keyAuth)
	pub, err := stepCAVerify(chain, k.params, roots, keyAuth, d.permID)
	if err != nil {
		t.Fatalf("step-ca's checks: %v", err)
	}
	if !publicEqual(pub, k.signer.Public()) {
		t.Error("the attested key is not the TPM key's signer")
	}
	if _, err := stepCAVerify(chain, k.params, roots, "another.keyauth", d.permID); err == nil || !strings.Contains(err.Error(), "key authorization") {
		t.Errorf("another key authorization: %v", err)
	}
	if _, err := stepCAVerify(chain, k.params, roots, keyAuth, "urn:ek:sha256:AAAA"); err == nil || !strings.Contains(err.Error(), "permanent identifier") {
		t.Errorf("another permanent identifier: %v", err)
	}
	other := d.issueAK(t, newCA(t, "another CA"))
	if _, err := stepCAVerify(other, k.params, roots, keyAuth, d.permID); err == nil || !strings.Contains(err.Error(), "x5c is not valid") {
		t.Errorf("an AK certificate from another CA: %v", err)
	}
	obj, err := attestationObject(chain, k.params)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(obj, []byte{0xa2, 0x63, 'f', 'm', 't', 0x63, 't', 'p', 'm'}) {
		t.Errorf("attestation object starts %x", obj[:16])
	}
}

func publicEqual(a, b crypto.PublicKey) bool {
	x, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && x.Equal(b)
}
