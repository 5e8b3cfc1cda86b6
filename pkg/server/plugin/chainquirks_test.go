package plugin_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	servernav1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/nodeattestor/v1"
	"google.golang.org/grpc/codes"

	"github.com/tpmid/tpmid/internal/testca"
	"github.com/tpmid/tpmid/internal/testmachine"
)

// run plays one whole attestation of the agent's own messages and returns
// the server's verdict, whether it refuses the hello or the evidence.
func (h *hostile) run(t *testing.T) (*servernav1.AgentAttributes, error) {
	t.Helper()
	a := h.open(t)
	a.sendHello(t, a.hello)
	resp, err := a.stream.Recv()
	if err != nil {
		return nil, err
	}
	if resp.GetChallenge() == nil {
		t.Fatalf("server answered the hello with %v", resp)
	}
	return a.verdict(t, a.evidence(t, resp.GetChallenge()))
}

// TestChainQuirkSelector drives the real server plugin over gRPC with a
// simulated machine whose EK certificate a vendor issued through a
// SHA-1-signed intermediate CA of the operator's ek_ca_bundle. By default
// it is refused, the message naming the intermediate and the setting;
// with ek_chain_quirks = ["sha1-intermediates"] it is admitted and gets
// the selector ek_chain_quirk:sha1-intermediates; the other quirk does not
// admit it; and a machine whose chain needs no quirk gets no such
// selector even with every quirk on.
func TestChainQuirkSelector(t *testing.T) {
	m := testmachine.New(t)

	// The vendor's old chain: root, SHA-1-signed intermediate, this EK.
	root, err := testca.New("vendor EK root")
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	interDER, err := root.Issue(&x509.Certificate{Subject: pkix.Name{CommonName: "vendor SHA-1 EK intermediate"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, SignatureAlgorithm: x509.ECDSAWithSHA1}, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	interCert, err := x509.ParseCertificate(interDER)
	if err != nil {
		t.Fatal(err)
	}
	if interCert.SignatureAlgorithm != x509.ECDSAWithSHA1 {
		t.Fatalf("intermediate signed with %s", interCert.SignatureAlgorithm)
	}
	inter := &testca.CA{Cert: interCert, Key: key}
	ek, err := x509.ParseCertificate(m.EKCertDER)
	if err != nil {
		t.Fatal(err)
	}
	ekDER, err := inter.IssueEK(ek.PublicKey, "id:53494D55", "id:00000001", "id:00020000")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	legacy := *m
	legacy.EKCertPath = filepath.Join(dir, "ek.der")
	legacy.TrustDir = filepath.Join(dir, "bundle")
	for _, err := range []error{
		os.WriteFile(legacy.EKCertPath, ekDER, 0o600),
		os.MkdirAll(legacy.TrustDir, 0o700),
		root.WritePEM(filepath.Join(legacy.TrustDir, "root.pem")),
		inter.WritePEM(filepath.Join(legacy.TrustDir, "intermediate.pem")),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}

	const selector = "ek_chain_quirk:sha1-intermediates"
	for _, c := range []struct {
		name    string
		m       *testmachine.Machine
		hcl     string
		admit   bool
		quirked bool
		says    []string
	}{
		{name: "SHA-1 intermediate, no quirk", m: &legacy,
			says: []string{"(ek_not_admitted)", `intermediate "CN=vendor SHA-1 EK intermediate" from the EK CA bundle is signed with ECDSA-SHA1`, `ek_chain_quirks = ["sha1-intermediates"] would accept it`}},
		{name: "SHA-1 intermediate, the other quirk", m: &legacy, hcl: `ek_chain_quirks = ["expired-intermediates"]`,
			says: []string{"(ek_not_admitted)", `ek_chain_quirks = ["sha1-intermediates"] would accept it`}},
		{name: "SHA-1 intermediate, sha1-intermediates", m: &legacy, hcl: `ek_chain_quirks = ["sha1-intermediates"]`, admit: true, quirked: true},
		{name: "SHA-1 intermediate, both quirks", m: &legacy, hcl: `ek_chain_quirks = ["sha1-intermediates", "expired-intermediates"]`, admit: true, quirked: true},
		{name: "sound chain, both quirks", m: m, hcl: `ek_chain_quirks = ["sha1-intermediates", "expired-intermediates"]`, admit: true},
		{name: "sound chain, no quirk", m: m, admit: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHostile(t, c.m, c.hcl)
			attrs, err := h.run(t)
			if !c.admit {
				wantRefusal(t, err, codes.PermissionDenied, c.says...)
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if got := slices.Contains(attrs.SelectorValues, selector); got != c.quirked {
				t.Errorf("selector %s present=%v, want %v: %v", selector, got, c.quirked, attrs.SelectorValues)
			}
			for _, s := range attrs.SelectorValues {
				if strings.HasPrefix(s, "ek_chain_quirk:") && s != selector {
					t.Errorf("unexpected selector %s", s)
				}
			}
			if got := strings.Contains(h.log.String(), `"ek_chain_quirks":["sha1-intermediates"`); got != c.quirked {
				t.Errorf("log names the quirk=%v, want %v", got, c.quirked)
			}
			if !slices.Contains(attrs.SelectorValues, "ek_hash:"+m.EKHash) {
				t.Errorf("no ek_hash selector: %v", attrs.SelectorValues)
			}
		})
	}
}
