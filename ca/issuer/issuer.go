// Package issuer is tpmid's attestation CA: a root and an intermediate
// whose keys sit behind go.step.sm/crypto KMS URIs (ca/keys), described by
// DIR/ca.json. Init creates one, RotateIntermediate replaces the issuing
// intermediate while keeping the previous ones in the bundle, and Load
// opens it for IssueAK, which certifies a TPM's attestation key under the
// profile of ca/akcert with a go.step.sm/crypto x509util template.
package issuer

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	_ "embed"
	"errors"
	"fmt"
	"math/big"
	"os"
	"text/template"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.step.sm/crypto/pemutil"
	"go.step.sm/crypto/x509util"

	"github.com/tpmid/tpmid/ca/akcert"
	"github.com/tpmid/tpmid/ca/keys"
	"github.com/tpmid/tpmid/pkg/common/chaincache"
)

// DefaultAKTemplate is the built-in x509util template of AK certificates.
// Its data is TemplateData's: .AK.SubjectAltName is the profile's
// subjectAltName (DER, written as base64 by toJson), built by
// akcert.SubjectAltName because the TCG attributes must be UTF8String
// (x509util's "dn" SAN type writes PrintableString).
//
//go:embed ak.tpl
var DefaultAKTemplate string

// AKTemplateData is what a template sees as .AK.
type AKTemplateData struct {
	// SubjectAltName is the DER of the profile's subjectAltName value:
	// put it in a critical 2.5.29.17 extension.
	SubjectAltName      []byte
	TPM                 akcert.TPM
	PermanentIdentifier string // urn:ek:sha256:...
	SPIFFEID            string
	EKPublicKeyDER      []byte
}

// AKRequest asks for an AK certificate.
type AKRequest struct {
	// AKPublic is the attestation key, after the caller has established
	// that it is resident in the TPM of that EK (MakeCredential and
	// ActivateCredential) and suitable (restricted signing key).
	AKPublic crypto.PublicKey
	// EKPublicDER is the EK public key, PKIX DER: the permanent identifier
	// is urn:ek:sha256:<base64 of its SHA-256>.
	EKPublicDER []byte
	// TPM is the TPM's manufacturer, model and firmware version, as the EK
	// certificate's TCG subjectAltName writes them (verify.EKAttributes,
	// e.g. "id:53544D20"). For an EK certificate without them the caller
	// fills them from what it knows: akcert.VendorID of TPM_PT_MANUFACTURER
	// and akcert.FirmwareVersion of the quote's firmwareVersion. All three
	// are required (step-ca refuses an AK certificate without them).
	TPM akcert.TPM
	// SPIFFEID is the agent's SPIFFE ID, written as the URI SAN.
	SPIFFEID spiffeid.ID
	// NotBefore, when set, is the start of validity and NotAfter is
	// NotBefore+Lifetime. Zero: notBefore is now minus ak.backdate and
	// notAfter now plus the lifetime.
	NotBefore time.Time
	// Lifetime of the certificate; zero is ca.json's ak.lifetime (24h by
	// default). notAfter never passes the intermediate's.
	Lifetime time.Duration
}

// CA is a loaded CA. Its methods are safe for concurrent use when the KMS
// signer is (softkms, PKCS#11 and the cloud KMSs are).
type CA struct {
	dir      string
	cfg      *Config
	kms      *keys.KMS
	signer   crypto.Signer
	root     *x509.Certificate
	inter    *x509.Certificate
	previous []*x509.Certificate
	roots    *x509.CertPool
	// anchors are the root and every intermediate of this CA that Load
	// checked was issued by the root: VerifyAK starts chains at them, so
	// an AK certificate costs one signature check, not two (the root's
	// signature on its own intermediate does not change between
	// attestations). anchorRaw holds their DER, to leave them out of the
	// certificates a holder sends.
	anchors   *x509.CertPool
	anchorRaw map[string]bool
	// verified remembers the AK certificate chains CheckAK accepted, by
	// their exact bytes and for their validity window (chaincache): an
	// agent presents the same chain at every fast-path attestation until
	// renewal.
	verified *chaincache.Cache[akcert.Facts]
	tmpl     *template.Template
	now      func() time.Time
}

// Option changes how Load opens a CA.
type Option func(*options)

type options struct{ now func() time.Time }

// WithClock sets the clock (tests).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// Load opens the CA in dir: reads ca.json, the root and intermediate
// certificates, opens the KMS and the current intermediate's key (not the
// root's: only init and rotate-intermediate use it), and loads the AK
// template. It then issues a certificate for a throwaway key and verifies
// it to the root: a key that does not match its certificate, a broken
// chain or a template whose certificates break the AK profile is an error
// here rather than at the first attestation.
func Load(ctx context.Context, dir string, opts ...Option) (*CA, error) {
	o := options{now: time.Now}
	for _, f := range opts {
		f(&o)
	}
	cfg, err := ReadConfig(dir)
	if err != nil {
		return nil, err
	}
	c := &CA{dir: dir, cfg: cfg, now: o.now, roots: x509.NewCertPool()}
	if c.root, err = readCert(resolve(dir, cfg.Root.Certificate)); err != nil {
		return nil, fmt.Errorf("root: %w", err)
	}
	c.roots.AddCert(c.root)
	if c.inter, err = readCert(resolve(dir, cfg.Intermediate.Certificate)); err != nil {
		return nil, fmt.Errorf("intermediate: %w", err)
	}
	for _, p := range cfg.Previous {
		pc, err := readCert(resolve(dir, p.Certificate))
		if err != nil {
			return nil, fmt.Errorf("previous intermediate: %w", err)
		}
		c.previous = append(c.previous, pc)
	}
	if err := checkIssuedBy(c.inter, c.root); err != nil {
		return nil, fmt.Errorf("intermediate %s: %w", cfg.Intermediate.Certificate, err)
	}
	c.verified = chaincache.New[akcert.Facts](verifiedAKChains)
	c.anchors, c.anchorRaw = x509.NewCertPool(), map[string]bool{}
	for _, a := range append([]*x509.Certificate{c.root, c.inter}, c.previous...) {
		// A previous intermediate the root did not issue stays a plain
		// intermediate, refused by the chain as before.
		if a == c.root || checkIssuedBy(a, c.root) == nil {
			c.anchors.AddCert(a)
			c.anchorRaw[string(a.Raw)] = true
		}
	}
	text := DefaultAKTemplate
	if cfg.AK.Template != "" {
		b, err := os.ReadFile(resolve(dir, cfg.AK.Template))
		if err != nil {
			return nil, fmt.Errorf("AK template: %w", err)
		}
		if err := x509util.ValidateTemplate(b); err != nil {
			return nil, fmt.Errorf("AK template %s: %w", cfg.AK.Template, err)
		}
		text = string(b)
	}
	if c.tmpl, err = parseTemplate(text); err != nil {
		return nil, fmt.Errorf("AK template %s: %w", cfg.AK.Template, err)
	}
	if c.kms, err = keys.Open(ctx, cfg.KMS, dir); err != nil {
		return nil, err
	}
	if c.signer, err = c.kms.Signer(ctx, cfg.Intermediate.Key); err != nil {
		c.kms.Close()
		return nil, fmt.Errorf("intermediate key: %w", err)
	}
	if !samePublicKey(c.signer.Public(), c.inter.PublicKey) {
		c.kms.Close()
		return nil, fmt.Errorf("intermediate key %s does not match %s", keys.Redact(cfg.Intermediate.Key), cfg.Intermediate.Certificate)
	}
	if err := c.selfTest(ctx); err != nil {
		c.kms.Close()
		return nil, err
	}
	return c, nil
}

// selfTest issues an AK certificate for a throwaway key and verifies it.
func (c *CA) selfTest(ctx context.Context) error {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKIXPublicKey(ek.Public())
	if err != nil {
		return err
	}
	id := spiffeid.RequireFromString("spiffe://tpmid.invalid/ca/self-test")
	now := c.now()
	if now.After(c.inter.NotAfter) {
		// An expired intermediate still loads, for inspection; IssueAK
		// refuses to use it.
		return nil
	}
	chain, err := c.IssueAK(ctx, AKRequest{
		AKPublic: k.Public(), EKPublicDER: der, SPIFFEID: id,
		TPM:      akcert.TPM{Manufacturer: "id:00000000", Model: "self-test", Version: "id:00000000"},
		Lifetime: time.Minute,
	})
	if err != nil {
		return fmt.Errorf("self-test issuance: %w", err)
	}
	if _, err := akcert.Verify(chain[0], chain[1:], c.roots, now); err != nil {
		return fmt.Errorf("self-test certificate does not verify: %w", err)
	}
	return nil
}

// Close closes the KMS.
func (c *CA) Close() error { return c.kms.Close() }

// Config is the CA's ca.json (do not modify).
func (c *CA) Config() *Config { return c.cfg }

// Root is the root certificate: the trust anchor to give relying parties
// (step-ca's attestationRoots).
func (c *CA) Root() *x509.Certificate { return c.root }

// Roots is a pool holding the root.
func (c *CA) Roots() *x509.CertPool { return c.roots }

// Intermediate is the current, issuing intermediate.
func (c *CA) Intermediate() *x509.Certificate { return c.inter }

// Intermediates is the bundle: the current intermediate, then the previous
// ones, whose AK certificates must keep verifying.
func (c *CA) Intermediates() []*x509.Certificate {
	return append([]*x509.Certificate{c.inter}, c.previous...)
}

// AKLifetime is the default AK certificate lifetime (ak.lifetime).
func (c *CA) AKLifetime() time.Duration { return c.cfg.AK.Lifetime.Std() }

// VerifyAK verifies an AK certificate against this CA (root and every
// intermediate of the bundle, plus the certificates the holder sent) at
// now, and checks the AK profile. It does not compare the certificate's
// key, permanent identifier or SPIFFE ID with anything: the caller does
// (the fast path compares them with the AK and EK it sees).
//
// The CA's own intermediates that Load found issued by its root are trust
// anchors here, beside the root: the chain is [leaf, intermediate], one
// signature check, and Facts.Chain ends with the root as before. The
// root's validity at now is still required.
func (c *CA) VerifyAK(cert *x509.Certificate, sent []*x509.Certificate, now time.Time) (*akcert.Facts, error) {
	if now.Before(c.root.NotBefore) || now.After(c.root.NotAfter) {
		return nil, &akcert.ProfileError{Rule: akcert.RuleExpired, Msg: fmt.Sprintf("the CA root %q is outside its validity at %s", c.root.Subject.CommonName, now.UTC().Format(time.RFC3339))}
	}
	var inters []*x509.Certificate
	for _, s := range append(c.Intermediates(), sent...) {
		if s != nil && !c.anchorRaw[string(s.Raw)] {
			inters = append(inters, s)
		}
	}
	f, err := akcert.Verify(cert, inters, c.anchors, now)
	if err != nil {
		return nil, err
	}
	if last := f.Chain[len(f.Chain)-1]; !last.Equal(c.root) {
		f.Chain = append(f.Chain, c.root)
	}
	return f, nil
}

// MaxChain bounds the certificates CheckAK accepts (leaf and
// intermediates), MaxCertSize each one.
const (
	MaxChain    = 4
	MaxCertSize = 16 << 10
)

// verifiedAKChains is how many accepted AK certificate chains a loaded CA
// remembers (a few KB each).
const verifiedAKChains = 4096

// CheckAK answers the fast path's question: is chain (DER, leaf first, as
// the agent keeps and presents it) an AK certificate of this CA, valid at
// now and meeting the profile, for exactly this AK, this EK (PKIX DER: the
// permanent identifier) and this SPIFFE ID? It returns the leaf's facts
// (NotAfter for renewal). Every error is an *akcert.ProfileError naming
// the rule (malformed, chain, expired, a profile rule, ak_mismatch,
// ek_mismatch, spiffe_id_mismatch): the caller falls back to the full
// path. Whether the EK is revoked is the caller's (the store's) to say.
func (c *CA) CheckAK(chain [][]byte, ak crypto.PublicKey, ekPKIXDER []byte, id spiffeid.ID, now time.Time) (*akcert.Facts, error) {
	if len(chain) == 0 || len(chain) > MaxChain {
		return nil, &akcert.ProfileError{Rule: akcert.RuleMalformed, Msg: fmt.Sprintf("%d certificates, want 1 to %d", len(chain), MaxChain)}
	}
	for i, b := range chain {
		if len(b) > MaxCertSize {
			return nil, &akcert.ProfileError{Rule: akcert.RuleMalformed, Msg: fmt.Sprintf("certificate %d is %d bytes, limit %d", i, len(b), MaxCertSize)}
		}
	}
	f, err := c.verifyChain(chain, now)
	if err != nil {
		return nil, err
	}
	// Checked every time, cached chain or not.
	switch {
	case !samePublicKey(f.Chain[0].PublicKey, ak):
		return nil, &akcert.ProfileError{Rule: akcert.RuleAKMismatch, Msg: "the certificate is for another AK"}
	case len(ekPKIXDER) == 0 || f.PermanentIdentifier != akcert.PermanentIdentifier(ekPKIXDER):
		return nil, &akcert.ProfileError{Rule: akcert.RuleEKMismatch, Msg: fmt.Sprintf("the certificate is for TPM %s, not this EK", f.PermanentIdentifier)}
	case f.SPIFFEID != id:
		return nil, &akcert.ProfileError{Rule: akcert.RuleSPIFFEIDMismatch, Msg: fmt.Sprintf("the certificate is for %s, not %s", f.SPIFFEID, id)}
	}
	return f, nil
}

// verifyChain parses and verifies chain (VerifyAK), or answers from the
// cache of chains already accepted with these exact bytes, inside their
// validity window. Refusals are not cached.
func (c *CA) verifyChain(chain [][]byte, now time.Time) (*akcert.Facts, error) {
	key := chaincache.Key(chain...)
	if f, ok := c.verified.Get(key, now); ok {
		return &f, nil
	}
	certs := make([]*x509.Certificate, len(chain))
	for i, b := range chain {
		cert, err := x509.ParseCertificate(b)
		if err != nil {
			return nil, &akcert.ProfileError{Rule: akcert.RuleMalformed, Msg: fmt.Sprintf("certificate %d", i), Err: err}
		}
		certs[i] = cert
	}
	f, err := c.VerifyAK(certs[0], certs[1:], now)
	if err != nil {
		return nil, err
	}
	c.verified.Put(key, *f, f.Chain)
	return f, nil
}

// NeedsRenewal reports whether an AK certificate expiring at notAfter
// should be replaced at now: when less than a third of ak.lifetime is left
// (8h of the default 24h).
func (c *CA) NeedsRenewal(notAfter, now time.Time) bool {
	return notAfter.Sub(now) < c.cfg.AK.Lifetime.Std()/3
}

// IssueAK certifies req.AKPublic: it returns the AK certificate and the
// intermediate that issued it (the chain to send; the root is the relying
// party's). The certificate is built from the AK template with
// go.step.sm/crypto's x509util (NewCertificateFromX509: the server holds
// only the AK's public key, which cannot sign a CSR), then the serial (128
// random bits), validity and key identifiers are set, and it is signed by
// the intermediate's key. The result is checked against the AK profile
// and the request before it is returned: a template that breaks the
// profile yields an error, never a certificate.
func (c *CA) IssueAK(ctx context.Context, req AKRequest) ([]*x509.Certificate, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := akcert.CheckAKPublicKey(req.AKPublic); err != nil {
		return nil, err
	}
	if len(req.EKPublicDER) == 0 {
		return nil, errors.New("no EK public key")
	}
	if _, err := x509.ParsePKIXPublicKey(req.EKPublicDER); err != nil {
		return nil, fmt.Errorf("EK public key is not PKIX DER: %w", err)
	}
	if bytes.Equal(mustPKIX(req.AKPublic), req.EKPublicDER) {
		return nil, errors.New("the AK and the EK are the same key")
	}
	if err := req.TPM.Validate(); err != nil {
		return nil, err
	}
	if req.SPIFFEID.IsZero() {
		return nil, errors.New("no SPIFFE ID")
	}
	lifetime := req.Lifetime
	if lifetime == 0 {
		lifetime = c.cfg.AK.Lifetime.Std()
	}
	if lifetime < 0 {
		return nil, fmt.Errorf("negative lifetime %s", lifetime)
	}
	now := c.now()
	notBefore, notAfter := req.NotBefore, req.NotBefore.Add(lifetime)
	if req.NotBefore.IsZero() {
		notBefore, notAfter = now.Add(-c.cfg.AK.Backdate.Std()), now.Add(lifetime)
	}
	if !now.Before(c.inter.NotAfter) {
		return nil, fmt.Errorf("the intermediate expired at %s: run tpmid ca rotate-intermediate", c.inter.NotAfter.UTC().Format(time.RFC3339))
	}
	if notAfter.After(c.inter.NotAfter) {
		notAfter = c.inter.NotAfter
	}
	if notBefore.Before(c.inter.NotBefore) {
		notBefore = c.inter.NotBefore
	}
	if !notAfter.After(notBefore) || !notAfter.After(now) {
		return nil, fmt.Errorf("validity %s to %s is empty or over", notBefore.UTC().Format(time.RFC3339), notAfter.UTC().Format(time.RFC3339))
	}

	names := akcert.Names{TPM: req.TPM, PermanentIdentifier: akcert.PermanentIdentifier(req.EKPublicDER), SPIFFEID: req.SPIFFEID}
	san, err := akcert.SubjectAltName(names)
	if err != nil {
		return nil, err
	}
	data := x509util.NewTemplateData()
	data.Set("AK", AKTemplateData{
		SubjectAltName: san.Value, TPM: req.TPM, PermanentIdentifier: names.PermanentIdentifier,
		SPIFFEID: req.SPIFFEID.String(), EKPublicKeyDER: req.EKPublicDER,
	})
	xc, err := x509util.NewCertificateFromX509(&x509.Certificate{PublicKey: req.AKPublic}, c.withTemplate(data))
	if err != nil {
		return nil, fmt.Errorf("AK template: %w", err)
	}
	tmpl := xc.GetCertificate()
	if tmpl.SerialNumber, err = serialNumber(); err != nil {
		return nil, err
	}
	tmpl.NotBefore, tmpl.NotAfter = notBefore.UTC().Truncate(time.Second), notAfter.UTC().Truncate(time.Second)
	if tmpl.SubjectKeyId, err = x509util.GenerateSubjectKeyID(req.AKPublic); err != nil {
		return nil, err
	}
	tmpl.AuthorityKeyId = c.inter.SubjectKeyId
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	leaf, err := x509util.CreateCertificate(tmpl, c.inter, req.AKPublic, c.signer)
	if err != nil {
		return nil, fmt.Errorf("signing the AK certificate: %w", err)
	}
	got, err := akcert.CheckProfile(leaf)
	if err != nil {
		return nil, fmt.Errorf("the AK template made a certificate outside the AK profile: %w", err)
	}
	if got.TPM != names.TPM || got.PermanentIdentifier != names.PermanentIdentifier || got.SPIFFEID != names.SPIFFEID {
		return nil, fmt.Errorf("the AK template changed the subjectAltName: %+v, want %+v", *got, names)
	}
	if !samePublicKey(leaf.PublicKey, req.AKPublic) {
		return nil, errors.New("the AK certificate is not for the AK")
	}
	return []*x509.Certificate{leaf, c.inter}, nil
}

// parseTemplate parses an x509util template once, with x509util's
// function map (sprig without env, plus the asn1 functions). Its "fail"
// is replaced by one that only returns its error: x509util's writes the
// message to a variable shared by every execution of the parsed template,
// which concurrent issuances would race on.
func parseTemplate(text string) (*template.Template, error) {
	fm := x509util.GetFuncMap()
	fm["fail"] = func(msg string) (string, error) { return "", errors.New(msg) }
	return template.New("ak").Funcs(fm).Parse(text)
}

// withTemplate is x509util.WithTemplate for the template parsed at Load
// (parsing it, with its function map, for every certificate was a quarter
// of the issuance cost).
func (c *CA) withTemplate(data x509util.TemplateData) x509util.Option {
	return func(cr *x509.CertificateRequest, o *x509util.Options) error {
		data.SetCertificateRequest(cr)
		buf := new(bytes.Buffer)
		if err := c.tmpl.Execute(buf, data); err != nil {
			return fmt.Errorf("executing the AK template: %w", err)
		}
		o.CertBuffer = buf
		return nil
	}
}

// serialNumber is 128 random bits, not zero.
func serialNumber() (*big.Int, error) {
	b := make([]byte, 16)
	for {
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("serial number: %w", err)
		}
		if n := new(big.Int).SetBytes(b); n.Sign() > 0 {
			return n, nil
		}
	}
}

func mustPKIX(pub crypto.PublicKey) []byte {
	b, _ := x509.MarshalPKIXPublicKey(pub)
	return b
}

func samePublicKey(a, b crypto.PublicKey) bool {
	da, db := mustPKIX(a), mustPKIX(b)
	return da != nil && bytes.Equal(da, db)
}

// readCert reads one PEM certificate.
func readCert(path string) (*x509.Certificate, error) {
	certs, err := pemutil.ReadCertificateBundle(path)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("%s holds %d certificates, want 1", path, len(certs))
	}
	return certs[0], nil
}

// checkIssuedBy: a CA certificate signed by parent.
func checkIssuedBy(c, parent *x509.Certificate) error {
	if !c.IsCA || !c.BasicConstraintsValid {
		return errors.New("not a CA certificate")
	}
	if c.Equal(parent) || bytes.Equal(c.RawSubjectPublicKeyInfo, parent.RawSubjectPublicKeyInfo) {
		return errors.New("it is the root: AK certificates are issued by an intermediate")
	}
	if err := c.CheckSignatureFrom(parent); err != nil {
		return fmt.Errorf("not issued by the root: %w", err)
	}
	return nil
}
