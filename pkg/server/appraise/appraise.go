// Package appraise turns verified facts into a verdict under the operator's
// policy: which EK evidence admits a TPM, and which selectors an admitted
// agent gets. It is pure: facts and policy in, verdict out.
package appraise

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// EKPolicy says what admits an endorsement key.
type EKPolicy string

// The EK policies of the server plugin's ek_policy setting.
const (
	// EKPolicyCert admits an EK whose certificate chains to a trusted root.
	EKPolicyCert EKPolicy = "cert"
	// EKPolicyAllowlist admits an EK whose hash is on the allowlist.
	EKPolicyAllowlist EKPolicy = "allowlist"
	// EKPolicyCertOrAllowlist admits either.
	EKPolicyCertOrAllowlist EKPolicy = "cert_or_allowlist"
	// EKPolicyCertAndAllowlist demands both.
	EKPolicyCertAndAllowlist EKPolicy = "cert_and_allowlist"
)

// ParseEKPolicy checks a policy name.
func ParseEKPolicy(s string) (EKPolicy, error) {
	switch p := EKPolicy(s); p {
	case EKPolicyCert, EKPolicyAllowlist, EKPolicyCertOrAllowlist, EKPolicyCertAndAllowlist:
		return p, nil
	}
	return "", fmt.Errorf("ek_policy %q is not one of cert, allowlist, cert_or_allowlist, cert_and_allowlist", s)
}

// NeedsTrust reports whether the policy consults the EK CA bundle.
func (p EKPolicy) NeedsTrust() bool { return p != EKPolicyAllowlist }

// NeedsAllowlist reports whether the policy consults the allowlist.
func (p EKPolicy) NeedsAllowlist() bool { return p != EKPolicyCert }

// ErrEKNotAdmitted is the reason an EK fails the policy.
var ErrEKNotAdmitted = errors.New("EK not admitted by ek_policy")

// AdmitEK decides on an EK given the outcome of its certificate check
// (nil when the chain validated) and whether its hash is allowlisted. The
// returned error names what was missing, including the certificate error.
func AdmitEK(p EKPolicy, certErr error, allowlisted bool) error {
	certOK := certErr == nil
	switch p {
	case EKPolicyCert:
		if certOK {
			return nil
		}
		return fmt.Errorf("%w (%s): certificate not trusted: %v", ErrEKNotAdmitted, p, certErr)
	case EKPolicyAllowlist:
		if allowlisted {
			return nil
		}
		return fmt.Errorf("%w (%s): EK hash is not on the allowlist", ErrEKNotAdmitted, p)
	case EKPolicyCertOrAllowlist:
		if certOK || allowlisted {
			return nil
		}
		return fmt.Errorf("%w (%s): EK hash is not on the allowlist and certificate not trusted: %v", ErrEKNotAdmitted, p, certErr)
	case EKPolicyCertAndAllowlist:
		switch {
		case certOK && allowlisted:
			return nil
		case certOK:
			return fmt.Errorf("%w (%s): certificate trusted but EK hash is not on the allowlist", ErrEKNotAdmitted, p)
		case allowlisted:
			return fmt.Errorf("%w (%s): EK hash is allowlisted but certificate not trusted: %v", ErrEKNotAdmitted, p, certErr)
		default:
			return fmt.Errorf("%w (%s): EK hash is not on the allowlist and certificate not trusted: %v", ErrEKNotAdmitted, p, certErr)
		}
	}
	return fmt.Errorf("%w: unknown policy %q", ErrEKNotAdmitted, p)
}

// ErrWeakQuote is the reason a verified quote is still refused.
var ErrWeakQuote = errors.New("quote uses a weak algorithm")

// CheckQuoteStrength refuses a quote signed with a hash weaker than SHA-256
// or by an RSA key under 2048 bits, whatever bank it covers: the signature
// is what binds the PCR values, so a SHA-1 signature makes even a SHA-256
// bank forgeable by collision. weak is verify.QuoteFacts.Weak; a SHA-1 bank
// is allowed here because the operator asked for it in pcr_banks.
func CheckQuoteStrength(weak []string) error {
	var bad []string
	for _, w := range weak {
		if !strings.HasPrefix(w, "pcr bank ") {
			bad = append(bad, w)
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: %s", ErrWeakQuote, strings.Join(bad, ", "))
	}
	return nil
}

// Allowlist is a set of EK hashes (lowercase hex SHA-256 of the EK's PKIX DER).
type Allowlist map[string]struct{}

// Contains reports whether hash is allowlisted.
func (a Allowlist) Contains(hash string) bool {
	_, ok := a[strings.ToLower(hash)]
	return ok
}

// ParseAllowlist parses the allowlist file format.
func ParseAllowlist(data []byte) (Allowlist, error) {
	out := Allowlist{}
	var errs []error
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		b, err := hex.DecodeString(line)
		if err != nil || len(b) != 32 {
			errs = append(errs, fmt.Errorf("line %d: %q is not a hex SHA-256", n, line))
			continue
		}
		out[hex.EncodeToString(b)] = struct{}{}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("ek_hash_allowlist: %w", err)
	}
	return out, nil
}

// Facts are what verification established about an admitted node, the
// input of Selectors.
type Facts struct {
	EKHash       string
	Manufacturer string // from the EK certificate's TCG SAN, "" without one
	Model        string
	Version      string
	EKIssuer     string // issuer CN of the EK certificate
	// EKQuirk names the vendor deviation from the TCG EK profile the EK
	// certificate needed (verify.QuirkGCEEKNoSAN: no SAN, so no
	// manufacturer, model or version), "" when none.
	EKQuirk string
	// EKChainQuirks names the ek_chain_quirks the EK certificate's chain
	// needed (verify.ChainQuirk: "sha1-intermediates",
	// "expired-intermediates"), none when it validated as it is. Each is
	// a selector, so a registration can refuse such machines.
	EKChainQuirks []string
	SecureBoot    string   // "enabled", "disabled" or "" when unknown
	Host          string   // the enrolled or bound hostname, "" when none
	Groups        []string // the host's groups
	Profile       string   // the reference profile that allowed the boot
	// PCRs maps "<bank>:<index>" to the quoted hex value.
	PCRs map[string]string
}

// Selectors returns the selector values (SPIRE prefixes the plugin name as
// the type). pcr selectors are opt-in: they change at every firmware update.
func Selectors(f Facts, withPCRs bool) []string {
	var out []string
	add := func(k, v string) {
		if v != "" {
			out = append(out, k+":"+v)
		}
	}
	// pub_hash is the selector the existing SPIRE TPM plugin uses for the
	// same hash; ek_hash is tpmid's name for it.
	add("pub_hash", f.EKHash)
	add("ek_hash", f.EKHash)
	add("manufacturer", f.Manufacturer)
	add("model", f.Model)
	add("version", f.Version)
	add("ek_issuer", f.EKIssuer)
	add("ek_quirk", f.EKQuirk)
	for _, q := range f.EKChainQuirks {
		add("ek_chain_quirk", q)
	}
	add("secureboot", f.SecureBoot)
	add("host", f.Host)
	for _, g := range f.Groups {
		add("group", g)
	}
	add("profile", f.Profile)
	if withPCRs {
		keys := make([]string, 0, len(f.PCRs))
		for k := range f.PCRs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			add("pcr", k+":"+f.PCRs[k])
		}
	}
	return out
}
