package verify

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha1" // only for vendor CA signatures the operator accepts (sha1-intermediates)
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ChainQuirk names one defect of a vendor intermediate CA certificate that
// the operator accepts with the server's ek_chain_quirks setting. Each is
// off unless named, excuses that defect only on an intermediate loaded from
// the operator's EK CA bundle (never on the EK certificate, never on an
// intermediate the agent sent), and is reported in EKFacts.ChainQuirks
// (selector ek_chain_quirk:<name>) whenever an EK needed it.
type ChainQuirk string

const (
	// ChainQuirkSHA1Intermediates accepts a bundle intermediate signed with
	// SHA1-RSA or ECDSA-SHA1 (the old Infineon "IFX TPM EK Intermediate
	// CA" certificates). crypto/x509 refuses SHA-1 signatures, so that one
	// signature is checked here, over SHA-1 of the TBSCertificate. The
	// operator chose those bytes by putting the certificate in the
	// bundle, so a SHA-1 collision gains an attacker nothing there; on
	// anything the agent sends it would.
	ChainQuirkSHA1Intermediates ChainQuirk = "sha1-intermediates"
	// ChainQuirkExpiredIntermediates accepts a bundle intermediate past
	// its notAfter at verification time, provided the certificate it
	// signed was issued (notBefore) before it expired. The EK certificate
	// and the root must still be valid; a not-yet-valid intermediate is
	// not excused.
	ChainQuirkExpiredIntermediates ChainQuirk = "expired-intermediates"
)

// chainQuirks lists every ChainQuirk, in the order they are reported.
var chainQuirks = []ChainQuirk{ChainQuirkSHA1Intermediates, ChainQuirkExpiredIntermediates}

// ChainQuirkNames returns the valid ek_chain_quirks values.
func ChainQuirkNames() []string {
	out := make([]string, len(chainQuirks))
	for i, q := range chainQuirks {
		out[i] = string(q)
	}
	return out
}

// ErrUnknownChainQuirk is an ek_chain_quirks value that names no quirk.
var ErrUnknownChainQuirk = errors.New("unknown EK chain quirk")

// ParseChainQuirks checks the ek_chain_quirks setting: every name known,
// none twice. It returns the quirks in canonical order.
func ParseChainQuirks(names []string) ([]ChainQuirk, error) {
	seen := map[ChainQuirk]bool{}
	var errs []error
	for _, n := range names {
		q := ChainQuirk(n)
		switch {
		case !slices.Contains(chainQuirks, q):
			errs = append(errs, fmt.Errorf("ek_chain_quirks: %w %q: valid values are %s", ErrUnknownChainQuirk, n, quoteList(ChainQuirkNames())))
		case seen[q]:
			errs = append(errs, fmt.Errorf("ek_chain_quirks: %q is listed twice", n))
		}
		seen[q] = true
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var out []ChainQuirk
	for _, q := range chainQuirks {
		if seen[q] {
			out = append(out, q)
		}
	}
	return out, nil
}

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return strings.Join(q, ", ")
}

// Bounds on the quirk chain search: it runs only after crypto/x509 found
// no chain, over the bundle's certificates (which the operator chose), but
// its cost must not depend on what the agent sends.
const (
	maxQuirkDepth      = 5  // certificates from the defective intermediate up to the root
	maxQuirkCandidates = 32 // defective bundle intermediates tried per EK
	maxQuirkPaths      = 16 // paths up to a root kept per candidate
	maxQuirkSigChecks  = 256
)

// quirkDefect is one defect a path needs excused.
type quirkDefect struct {
	cert  *x509.Certificate
	quirk ChainQuirk
}

func (d quirkDefect) String() string {
	name := fmt.Sprintf("intermediate %q from the EK CA bundle", d.cert.Subject.String())
	switch d.quirk {
	case ChainQuirkSHA1Intermediates:
		return fmt.Sprintf("%s is signed with %s, which crypto/x509 refuses", name, d.cert.SignatureAlgorithm)
	default:
		return fmt.Sprintf("%s expired on %s", name, d.cert.NotAfter.UTC().Format(time.RFC3339))
	}
}

// quirkPath is a chain that validates once its defects are excused.
type quirkPath struct {
	chain   []*x509.Certificate // leaf first, root last
	defects []quirkDefect
}

// needed returns the quirks the path needs, in canonical order.
func (p *quirkPath) needed() []ChainQuirk {
	var out []ChainQuirk
	for _, q := range chainQuirks {
		for _, d := range p.defects {
			if d.quirk == q {
				out = append(out, q)
				break
			}
		}
	}
	return out
}

// admitted reports whether every quirk the path needs is enabled.
func (p *quirkPath) admitted(enabled []ChainQuirk) bool {
	for _, q := range p.needed() {
		if !slices.Contains(enabled, q) {
			return false
		}
	}
	return true
}

// refusal is the error for a path whose quirks are not all enabled: the
// existing reasons (ek_untrusted while a SHA-1 signature crypto/x509
// refuses is not excused, else ek_expired for an expired intermediate),
// naming each defective intermediate and the whole setting that would
// accept the chain.
func (p *quirkPath) refusal(enabled []ChainQuirk) error {
	var needed []string
	reason := ReasonEKExpired
	for _, q := range p.needed() {
		needed = append(needed, string(q))
		if q == ChainQuirkSHA1Intermediates && !slices.Contains(enabled, q) {
			reason = ReasonEKUntrusted
		}
	}
	var ds []string
	for _, d := range p.defects {
		ds = append(ds, d.String())
	}
	return failf(reason, "%s; ek_chain_quirks = [%s] would accept it", strings.Join(ds, "; "), quoteList(needed))
}

// quirkWalk finds chains through defective bundle intermediates.
type quirkWalk struct {
	trust     *EKTrust
	now       time.Time
	sigChecks int
}

// findQuirkChain looks, after crypto/x509 found no chain for leaf, for one
// that validates once defects of bundle intermediates are excused. Each
// candidate is a defective bundle intermediate I reachable from the leaf by
// issuer names. The part above I is walked here, through bundle
// certificates only, checking every signature (SHA-1 ones by hand) and
// every CA constraint; the part from the leaf up to I is crypto/x509's,
// with I as its only root (widened in time when I is expired), so the
// leaf and every agent-sent intermediate get all of crypto/x509's checks.
//
// It returns the path with the fewest defects among those whose quirks are
// all enabled in trust.ChainQuirks, else the first path found (for the
// refusal), else nil.
func findQuirkChain(leaf *x509.Certificate, extra []*x509.Certificate, trust *EKTrust, now time.Time) *quirkPath {
	if len(trust.inters) == 0 {
		return nil
	}
	w := &quirkWalk{trust: trust, now: now}
	var best, first *quirkPath
	for _, c := range w.candidates(leaf, extra) {
		ups := w.up(c, nil, nil)
		if len(ups) == 0 {
			continue
		}
		lower := w.lower(leaf, c, extra)
		if lower == nil {
			continue
		}
		for _, up := range ups {
			p := &quirkPath{chain: append(lower[:len(lower)-1:len(lower)-1], up.chain...), defects: up.defects}
			if !p.consistent() {
				continue
			}
			if first == nil {
				first = p
			}
			if p.admitted(trust.ChainQuirks) && (best == nil || len(p.defects) < len(best.defects)) {
				best = p
			}
		}
	}
	if best != nil {
		return best
	}
	return first
}

// candidates returns the defective bundle intermediates whose subject is
// an issuer name reachable from leaf through the bundle's and the agent's
// intermediates (names only: signatures are checked on the path).
func (w *quirkWalk) candidates(leaf *x509.Certificate, extra []*x509.Certificate) []*x509.Certificate {
	pool := append(slices.Clone(w.trust.inters), extra...)
	names := map[string]bool{string(leaf.RawIssuer): true}
	for range maxQuirkDepth + 2 {
		grew := false
		for _, c := range pool {
			if c != nil && names[string(c.RawSubject)] && !names[string(c.RawIssuer)] {
				names[string(c.RawIssuer)] = true
				grew = true
			}
		}
		if !grew {
			break
		}
	}
	var out []*x509.Certificate
	for _, c := range w.trust.inters {
		if names[string(c.RawSubject)] && (sha1Signed(c) || w.now.After(c.NotAfter)) {
			out = append(out, c)
			if len(out) == maxQuirkCandidates {
				break
			}
		}
	}
	return out
}

// up returns the paths from x (a bundle intermediate) to a bundle root,
// each with the defects it needs excused. path holds the certificates
// below x already on this path.
func (w *quirkWalk) up(x *x509.Certificate, path []*x509.Certificate, defects []quirkDefect) []*quirkPath {
	if len(path) >= maxQuirkDepth || !mayIssue(x) || len(x.UnhandledCriticalExtensions) > 0 || hasNameConstraints(x) {
		return nil
	}
	if w.now.Before(x.NotBefore) {
		return nil // not yet valid: no quirk excuses that
	}
	path = append(slices.Clone(path), x)
	defects = slices.Clone(defects)
	if w.now.After(x.NotAfter) {
		defects = append(defects, quirkDefect{x, ChainQuirkExpiredIntermediates})
	}
	var out []*quirkPath
	try := func(p *x509.Certificate, root bool) {
		if len(out) >= maxQuirkPaths || w.sigChecks >= maxQuirkSigChecks || slices.ContainsFunc(path, func(c *x509.Certificate) bool { return c.Equal(p) }) {
			return
		}
		if !bytes.Equal(x.RawIssuer, p.RawSubject) {
			return
		}
		w.sigChecks++
		ds := defects
		if sha1Signed(x) {
			if checkSHA1Signature(x, p) != nil {
				return
			}
			ds = append(slices.Clone(defects), quirkDefect{x, ChainQuirkSHA1Intermediates})
		} else if x.CheckSignatureFrom(p) != nil {
			return
		}
		if root {
			// The root is a trust anchor: its own signature is not checked
			// (as crypto/x509 does not), its validity is, and no quirk
			// excuses an expired root.
			if w.now.Before(p.NotBefore) || w.now.After(p.NotAfter) || len(p.UnhandledCriticalExtensions) > 0 || hasNameConstraints(p) {
				return
			}
			out = append(out, &quirkPath{chain: append(slices.Clone(path), p), defects: ds})
			return
		}
		for _, q := range w.up(p, path, ds) {
			if len(out) < maxQuirkPaths {
				out = append(out, q)
			}
		}
	}
	for _, r := range w.trust.roots {
		try(r, true)
	}
	for _, i := range w.trust.inters {
		try(i, false)
	}
	return out
}

// lower returns crypto/x509's chain from leaf to the bundle intermediate
// c, c last, or nil. c is the chain's root here, so crypto/x509 does not
// judge c's own signature (the walk above does); when c has expired, the
// root crypto/x509 sees is a copy of c whose validity covers now, which
// changes nothing else (signatures are checked with c's key over the
// child's bytes).
func (w *quirkWalk) lower(leaf, c *x509.Certificate, extra []*x509.Certificate) []*x509.Certificate {
	anchor := c
	if w.now.After(c.NotAfter) {
		cp := *c
		cp.NotAfter = w.now.Add(time.Second)
		anchor = &cp
	}
	roots := x509.NewCertPool()
	roots.AddCert(anchor)
	inter := w.trust.Intermediates.Clone()
	for _, e := range extra {
		if e != nil {
			inter.AddCert(e)
		}
	}
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: w.now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return nil
	}
	ch := slices.Clone(chains[0])
	ch[len(ch)-1] = c
	return ch
}

// consistent checks what neither part checked across the join: path
// length constraints over the whole chain, and that a certificate signed
// by an expired intermediate was issued before it expired.
func (p *quirkPath) consistent() bool {
	for i, c := range p.chain {
		if i > 0 && c.BasicConstraintsValid && c.MaxPathLen >= 0 && i-1 > c.MaxPathLen {
			return false
		}
	}
	for _, d := range p.defects {
		if d.quirk != ChainQuirkExpiredIntermediates {
			continue
		}
		i := slices.Index(p.chain, d.cert)
		if i <= 0 || p.chain[i-1].NotBefore.After(d.cert.NotAfter) {
			return false
		}
	}
	return true
}

func sha1Signed(c *x509.Certificate) bool {
	return c.SignatureAlgorithm == x509.SHA1WithRSA || c.SignatureAlgorithm == x509.ECDSAWithSHA1
}

// mayIssue: a CA certificate allowed to sign certificates (the checks
// crypto/x509 makes on an intermediate and on a signing parent).
func mayIssue(c *x509.Certificate) bool {
	if !c.BasicConstraintsValid || !c.IsCA {
		return false
	}
	return c.KeyUsage == 0 || c.KeyUsage&x509.KeyUsageCertSign != 0
}

func hasNameConstraints(c *x509.Certificate) bool {
	return c.PermittedDNSDomainsCritical || len(c.PermittedDNSDomains) > 0 || len(c.ExcludedDNSDomains) > 0 ||
		len(c.PermittedIPRanges) > 0 || len(c.ExcludedIPRanges) > 0 || len(c.PermittedEmailAddresses) > 0 ||
		len(c.ExcludedEmailAddresses) > 0 || len(c.PermittedURIDomains) > 0 || len(c.ExcludedURIDomains) > 0
}

// minSHA1RSABits: an RSA issuer key for a SHA-1 signature must be at least
// this large (the old Infineon root is RSA-2048).
const minSHA1RSABits = 2048

// errSHA1Signature is a SHA-1 signature that does not verify.
var errSHA1Signature = errors.New("SHA-1 signature does not verify")

// checkSHA1Signature checks child's SHA1-RSA or ECDSA-SHA1 signature with
// parent's key, over SHA-1 of child's TBSCertificate: the check
// crypto/x509 refuses to make. Only for a bundle intermediate under
// sha1-intermediates. parent must be a CA allowed to sign certificates.
func checkSHA1Signature(child, parent *x509.Certificate) error {
	if parent.Version == 3 && !parent.BasicConstraintsValid || parent.BasicConstraintsValid && !parent.IsCA ||
		parent.KeyUsage != 0 && parent.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("%w: issuer %q is not a CA allowed to sign certificates", errSHA1Signature, parent.Subject.String())
	}
	d := sha1.Sum(child.RawTBSCertificate)
	switch child.SignatureAlgorithm {
	case x509.SHA1WithRSA:
		pub, ok := parent.PublicKey.(*rsa.PublicKey)
		if !ok || pub.N.BitLen() < minSHA1RSABits {
			return fmt.Errorf("%w: SHA1-RSA needs an RSA issuer key of %d bits or more", errSHA1Signature, minSHA1RSABits)
		}
		if err := rsa.VerifyPKCS1v15(pub, crypto.SHA1, d[:], child.Signature); err != nil {
			return fmt.Errorf("%w: %w", errSHA1Signature, err)
		}
		return nil
	case x509.ECDSAWithSHA1:
		pub, ok := parent.PublicKey.(*ecdsa.PublicKey)
		if !ok || !ecdsa.VerifyASN1(pub, d[:], child.Signature) {
			return errSHA1Signature
		}
		return nil
	}
	return fmt.Errorf("%w: %s is not a SHA-1 signature", errSHA1Signature, child.SignatureAlgorithm)
}

// quirkHint explains, after a refusal, a defect that no ek_chain_quirks
// setting excuses because of where it is: on the EK certificate itself or
// on an intermediate the agent sent. "" when there is none.
func quirkHint(leaf *x509.Certificate, extra []*x509.Certificate, now time.Time) string {
	var hs []string
	if sha1Signed(leaf) {
		hs = append(hs, fmt.Sprintf("the EK certificate itself is signed with %s", leaf.SignatureAlgorithm))
	}
	for _, c := range extra {
		if c == nil {
			continue
		}
		if sha1Signed(c) {
			hs = append(hs, fmt.Sprintf("intermediate %q sent by the agent is signed with %s", c.Subject.String(), c.SignatureAlgorithm))
		}
		if now.After(c.NotAfter) {
			hs = append(hs, fmt.Sprintf("intermediate %q sent by the agent expired on %s", c.Subject.String(), c.NotAfter.UTC().Format(time.RFC3339)))
		}
	}
	if len(hs) == 0 {
		return ""
	}
	return " (" + strings.Join(hs, "; ") + ": ek_chain_quirks excuse such defects only on intermediates from the EK CA bundle)"
}
