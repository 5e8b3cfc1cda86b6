package stepca

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.step.sm/crypto/x509util"
)

// TestDeviceAttest01 runs a real step-ca whose ACME provisioner trusts
// tpmid's CA root for device-attest-01 "tpm" attestations. A client with a
// swtpm completes the challenge for the TPM's permanent identifier with an
// AK certificate from tpmid's CA and a key made in the swtpm and certified
// by that AK, and receives a certificate for the key. The same flow with
// an AK certificate from another tpmid CA is refused.
func TestDeviceAttest01(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs step-ca; skipped with -short")
	}
	bin := stepCABinary(t)
	d := newDevice(t)
	caDir := newCA(t, "tpmid")
	rootPEM, err := os.ReadFile(filepath.Join(caDir, "root.crt"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s := startStepCA(t, bin, rootPEM)
	t.Logf("step-ca up at %s in %v", s.url, time.Since(start).Round(time.Millisecond))

	c := newACMEClient(t, s.client, s.directoryURL())
	c.newAccount()

	// attempt runs one order through device-attest-01 with akChain as x5c.
	attempt := func(t *testing.T, akChain []*x509.Certificate) (orderURL string, o acmeOrder, k *attestedKey, got acmeChallenge, status int, body []byte) {
		t.Helper()
		orderURL, o = c.newOrder(d.permID)
		if o.Status != "pending" {
			t.Fatalf("new order status %q", o.Status)
		}
		ch := c.deviceAttestChallenge(o, d.permID)
		k = d.attestKey(t, c.keyAuthorization(ch.Token))
		obj, err := attestationObject(akChain, k.params)
		if err != nil {
			t.Fatal(err)
		}
		status, got, body = c.respond(ch, obj)
		return
	}

	t.Run("tpmid AK certificate", func(t *testing.T) {
		c.t = t
		start := time.Now()
		chain := d.issueAK(t, caDir)
		orderURL, o, k, got, status, body := attempt(t, chain)
		if status >= 300 || got.Status != "valid" {
			t.Fatalf("challenge: %d %s", status, body)
		}
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			Subject: pkix.Name{CommonName: d.permID},
		}, k.signer)
		if err != nil {
			t.Fatalf("CSR signed by the TPM key: %v", err)
		}
		pemChain := c.finalize(orderURL, o, csr)
		elapsed := time.Since(start)

		var certs []*x509.Certificate
		for rest := pemChain; ; {
			var blk *pem.Block
			if blk, rest = pem.Decode(rest); blk == nil {
				break
			}
			cert, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			certs = append(certs, cert)
		}
		if len(certs) < 2 {
			t.Fatalf("certificate chain of %d", len(certs))
		}
		leaf := certs[0]
		if !publicEqual(leaf.PublicKey, k.signer.Public()) {
			t.Error("the certificate is not for the TPM key")
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		// The permanent identifier SAN is an otherName crypto/x509 does not
		// know; step-ca marks the SAN critical when the subject is empty.
		leaf.UnhandledCriticalExtensions = slices.DeleteFunc(leaf.UnhandledCriticalExtensions, func(o asn1.ObjectIdentifier) bool { return oidSAN.Equal(o) })
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: s.roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("the certificate does not verify to step-ca's root: %v", err)
		}
		sans, err := x509util.ParseSubjectAlternativeNames(leaf)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, pi := range sans.PermanentIdentifiers {
			ids = append(ids, pi.Identifier)
		}
		if !slices.Contains(ids, d.permID) {
			t.Errorf("certificate permanent identifiers %q, want %s", ids, d.permID)
		}
		t.Logf("issued: subject %q, permanent identifiers %q, issuer %q, expires %s; AK certificate, order, challenge, TPM key, finalize in %v",
			leaf.Subject.String(), ids, leaf.Issuer.CommonName, leaf.NotAfter.UTC().Format(time.RFC3339), elapsed.Round(time.Millisecond))
	})

	t.Run("AK certificate from another CA", func(t *testing.T) {
		c.t = t
		other := d.issueAK(t, newCA(t, "another tpmid"))
		orderURL, o, k, got, status, body := attempt(t, other)
		if status < 300 && got.Status == "valid" {
			t.Fatalf("step-ca accepted an AK certificate from another CA: %s", body)
		}
		if status < 300 && (got.Status != "invalid" || got.Error == nil) {
			t.Fatalf("challenge: %d %s", status, body)
		}
		detail := string(body)
		if got.Error != nil {
			detail = got.Error.Type + ": " + got.Error.Detail
		}
		if !strings.Contains(detail, "badAttestationStatement") || !strings.Contains(detail, "x5c is not valid") {
			t.Errorf("refusal %q, want badAttestationStatement: x5c is not valid", detail)
		}
		t.Logf("refused: %s", detail)
		// Nor does the order go through.
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: d.permID}}, k.signer)
		if err != nil {
			t.Fatal(err)
		}
		if status, _, b := c.post(o.Finalize, map[string]string{"csr": b64(csr)}); status < 400 {
			t.Errorf("finalize after a refused challenge: %d %s (order %s)", status, b, orderURL)
		}
	})
}
