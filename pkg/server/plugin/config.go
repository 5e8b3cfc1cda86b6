package plugin

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/common/pluginconf"
	"github.com/tpmid/tpmid/pkg/common/wire"
	"github.com/tpmid/tpmid/pkg/server/appraise"
	"github.com/tpmid/tpmid/pkg/server/nodes"
	"github.com/tpmid/tpmid/pkg/server/session"
	"github.com/tpmid/tpmid/pkg/server/trustfiles"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// Config is the server plugin's plugin_data.
type Config struct {
	// EKCABundle is a PEM file, or a directory of PEM/DER files, holding
	// the EK roots and intermediates to trust.
	EKCABundle string `hcl:"ek_ca_bundle"`
	// EKHashAllowlist is a file with one hex EK hash a line.
	EKHashAllowlist string `hcl:"ek_hash_allowlist"`
	// EKPolicy is cert (default), allowlist, cert_or_allowlist or cert_and_allowlist.
	EKPolicy string `hcl:"ek_policy"`
	// EKChainQuirks names the defects of vendor intermediates from
	// ek_ca_bundle to accept (verify.ChainQuirk: "sha1-intermediates",
	// "expired-intermediates"); none by default.
	EKChainQuirks []string `hcl:"ek_chain_quirks"`
	// PCRBanks to quote; default ["sha256"].
	PCRBanks []string `hcl:"pcr_banks"`
	// PCRs to quote in every bank; default 0-7.
	PCRs []int `hcl:"pcrs"`
	// RequireEventLog defaults to true.
	RequireEventLog *bool `hcl:"require_event_log"`
	// PCRSelectors adds pcr:<bank>:<index>:<hex> selectors (opt-in).
	PCRSelectors bool `hcl:"pcr_selectors"`
	// MaxHelloSize and MaxEvidenceSize bound the agent's messages in bytes.
	MaxHelloSize    int `hcl:"max_hello_size"`
	MaxEvidenceSize int `hcl:"max_evidence_size"`
	// EvidenceTimeout is how long the agent has to answer the challenge,
	// a Go duration ("60s", the default).
	EvidenceTimeout string `hcl:"evidence_timeout"`
	// Store is where hosts, profiles and attempts are kept: a SQLite file
	// path (default DefaultStore) or a postgres:// DSN.
	Store *string `hcl:"store"`
	// Enrollment is open (default), tofu or required.
	Enrollment string `hcl:"enrollment"`
	// ServerName names this spire-server in attempt records (default: the
	// machine's hostname).
	ServerName string `hcl:"server_name"`
	// CADir is a CA made by `tpmid ca init`: with it, admitted agents get
	// an AK certificate and later attest on the fast path.
	CADir string `hcl:"ca_dir"`
	// AKCertLifetime overrides the CA's AK certificate lifetime (a Go
	// duration, e.g. "24h").
	AKCertLifetime string `hcl:"ak_cert_lifetime"`

	// CAPath is spire-tpm-plugin's name for ek_ca_bundle (deprecated).
	CAPath string `hcl:"ca_path"`
	// HashPath is spire-tpm-plugin's hash directory (deprecated): every file
	// in it named by a hex SHA-256 is an allowlisted EK hash.
	HashPath string `hcl:"hash_path"`
}

// DefaultStore is the SQLite file used when plugin_data has no store.
const DefaultStore = "/var/lib/tpmid/tpmid.db"

// Bounds on the size settings: a hello travels with the agent's CSR in one
// SPIRE message, and nothing larger than wire.MaxTransported reaches the
// plugin at all.
const (
	maxHelloCeiling    = 1 << 20
	maxEvidenceCeiling = wire.MaxTransported
)

// defaultEvidenceTimeout is evidence_timeout's default.
const defaultEvidenceTimeout = 60 * time.Second

// settings is one parsed configuration: the session's configuration with
// its ports, and the shell's own limit on the stream.
type settings struct {
	session         *session.Config
	ek              *session.EKPolicy
	evidenceTimeout time.Duration
	storeDSN        string
	enrollment      nodes.Enrollment
	serverName      string
	caDir           string
	akLifetime      time.Duration
	// warnings are accepted but deprecated settings (Configure logs them,
	// Validate returns them as notes).
	warnings []string
}

// buildConfig parses the plugin_data and reports every error at once, so an
// operator fixes a config in one pass.
func buildConfig(trustDomain, hclText string) (*settings, error) {
	var errs []error
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		errs = append(errs, fmt.Errorf("core configuration trust_domain: %w", err))
	}
	var c Config
	unknown, err := pluginconf.Decode(hclText, &c)
	if err != nil {
		return nil, errors.Join(append(errs, err)...)
	}
	errs = append(errs, unknown...)
	warnings, aliasErrs := applyAliases(&c)
	errs = append(errs, aliasErrs...)
	ek := &session.EKPolicy{Cache: session.NewEKCache(session.DefaultEKCacheSize)}
	p := &session.Config{
		TrustDomain:     td,
		EK:              ek,
		RequireEventLog: c.RequireEventLog == nil || *c.RequireEventLog,
		PCRSelectors:    c.PCRSelectors,
		MaxHello:        orDefault(c.MaxHelloSize, wire.DefaultMaxHello),
		MaxEvidence:     orDefault(c.MaxEvidenceSize, wire.DefaultMaxEvidence),
	}
	if c.MaxHelloSize < 0 || c.MaxEvidenceSize < 0 {
		errs = append(errs, errors.New("max_hello_size and max_evidence_size must be positive"))
	}
	if c.MaxHelloSize > maxHelloCeiling {
		errs = append(errs, fmt.Errorf("max_hello_size %d is more than %d bytes", c.MaxHelloSize, maxHelloCeiling))
	}
	if c.MaxEvidenceSize > maxEvidenceCeiling {
		errs = append(errs, fmt.Errorf("max_evidence_size %d is more than the %d bytes a gRPC message can carry to the plugin", c.MaxEvidenceSize, maxEvidenceCeiling))
	}
	evidenceTimeout := defaultEvidenceTimeout
	if c.EvidenceTimeout != "" {
		if evidenceTimeout, err = time.ParseDuration(c.EvidenceTimeout); err != nil {
			errs = append(errs, fmt.Errorf("evidence_timeout: %w", err))
		} else if evidenceTimeout <= 0 {
			errs = append(errs, fmt.Errorf("evidence_timeout %s must be positive", c.EvidenceTimeout))
		}
	}

	if c.EKPolicy == "" {
		c.EKPolicy = string(appraise.EKPolicyCert)
		// spire-tpm-plugin admits an EK whose certificate validates
		// against ca_path or whose hash is in hash_path.
		switch {
		case c.CAPath != "" && c.HashPath != "":
			c.EKPolicy = string(appraise.EKPolicyCertOrAllowlist)
		case c.HashPath != "":
			c.EKPolicy = string(appraise.EKPolicyAllowlist)
		}
	}
	// The bundle and allowlist checks depend on a valid policy: after a
	// bad ek_policy they would only add misleading errors.
	if ek.Policy, err = appraise.ParseEKPolicy(c.EKPolicy); err != nil {
		errs = append(errs, err)
	} else {
		errs = append(errs, loadEKFiles(ek, c)...)
	}

	banks := c.PCRBanks
	if len(banks) == 0 {
		banks = []string{"sha256"}
	}
	indices := c.PCRs
	if len(indices) == 0 {
		indices = []int{0, 1, 2, 3, 4, 5, 6, 7}
	}
	for _, i := range indices {
		if i < 0 || i > pcrs.MaxIndex {
			errs = append(errs, fmt.Errorf("pcrs: %d is not in 0..%d", i, pcrs.MaxIndex))
		}
	}
	sorted := slices.Clone(indices)
	slices.Sort(sorted)
	if len(slices.Compact(sorted)) != len(indices) {
		errs = append(errs, errors.New("pcrs: an index is listed twice"))
	}
	seen := map[pcrs.Alg]bool{}
	for _, b := range banks {
		a, err := pcrs.ParseAlg(b)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("pcr_banks: %w", err))
		case seen[a]:
			errs = append(errs, fmt.Errorf("pcr_banks: %s is listed twice", a))
		default:
			seen[a] = true
			p.Selections = append(p.Selections, wire.Selection{Bank: a.String(), PCRs: sorted})
		}
	}
	storeDSN := DefaultStore
	if c.Store != nil {
		storeDSN = *c.Store
		if storeDSN == "" {
			errs = append(errs, errors.New("store is empty: give a SQLite file path or a postgres:// DSN"))
		}
	}
	enrollment, err := nodes.ParseEnrollment(c.Enrollment)
	if err != nil {
		errs = append(errs, err)
	}
	var akLifetime time.Duration
	if c.AKCertLifetime != "" {
		switch akLifetime, err = time.ParseDuration(c.AKCertLifetime); {
		case c.CADir == "":
			errs = append(errs, errors.New("ak_cert_lifetime is set but ca_dir is not"))
		case err != nil:
			errs = append(errs, fmt.Errorf("ak_cert_lifetime: %w", err))
		case akLifetime < 5*time.Minute:
			errs = append(errs, fmt.Errorf("ak_cert_lifetime %s is under 5m", c.AKCertLifetime))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &settings{session: p, ek: ek, evidenceTimeout: evidenceTimeout, storeDSN: storeDSN, enrollment: enrollment, serverName: c.ServerName,
		caDir: c.CADir, akLifetime: akLifetime, warnings: warnings}, nil
}

func orDefault(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// applyAliases maps spire-tpm-plugin's settings onto tpmid's: ca_path is
// ek_ca_bundle, hash_path (a directory of files named by EK hash) is
// ek_hash_allowlist. It returns a warning per alias used; an alias set
// together with its new key is an error.
func applyAliases(c *Config) (warnings []string, errs []error) {
	if c.CAPath != "" {
		if c.EKCABundle != "" {
			errs = append(errs, errors.New("ca_path and ek_ca_bundle are both set: ca_path is the deprecated name of ek_ca_bundle, keep only ek_ca_bundle"))
		} else {
			c.EKCABundle = c.CAPath
			warnings = append(warnings, "ca_path is deprecated: rename it to ek_ca_bundle")
		}
	}
	if c.HashPath != "" {
		if c.EKHashAllowlist != "" {
			errs = append(errs, errors.New("hash_path and ek_hash_allowlist are both set: hash_path is the deprecated form of ek_hash_allowlist, keep only ek_hash_allowlist"))
		} else {
			warnings = append(warnings, "hash_path is deprecated: list its hashes in a file (one hex SHA-256 a line) named by ek_hash_allowlist")
		}
	}
	return warnings, errs
}

// loadEKFiles loads the EK CA bundle and the allowlist the policy needs,
// and refuses those it does not use and an allowlist policy with no hash.
func loadEKFiles(ek *session.EKPolicy, c Config) []error {
	var errs []error
	var err error
	bundleKey := "ek_ca_bundle"
	if c.CAPath != "" {
		bundleKey = "ca_path"
	}
	quirks, qerr := verify.ParseChainQuirks(c.EKChainQuirks)
	if qerr != nil {
		errs = append(errs, qerr)
	}
	if ek.Policy.NeedsTrust() {
		if c.EKCABundle == "" {
			errs = append(errs, fmt.Errorf("ek_policy %q needs ek_ca_bundle", ek.Policy))
		} else if ek.Trust, err = trustfiles.LoadEKTrust(c.EKCABundle); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", bundleKey, err))
		} else {
			ek.Trust.ChainQuirks = quirks
		}
	} else {
		if c.EKCABundle != "" {
			errs = append(errs, fmt.Errorf("%s is set but ek_policy %q does not use it", bundleKey, ek.Policy))
		}
		if len(c.EKChainQuirks) > 0 {
			errs = append(errs, fmt.Errorf("ek_chain_quirks is set but ek_policy %q checks no EK certificate chain", ek.Policy))
		}
	}
	allowKey, allowPath := "ek_hash_allowlist", c.EKHashAllowlist
	if c.HashPath != "" && c.EKHashAllowlist == "" {
		allowKey, allowPath = "hash_path", c.HashPath
	}
	switch {
	case !ek.Policy.NeedsAllowlist():
		if allowPath != "" {
			errs = append(errs, fmt.Errorf("%s is set but ek_policy %q does not use it", allowKey, ek.Policy))
		}
	case allowPath == "":
		errs = append(errs, fmt.Errorf("ek_policy %q needs ek_hash_allowlist", ek.Policy))
	default:
		if allowKey == "hash_path" {
			ek.Allowlist, err = trustfiles.LoadHashDir(allowPath)
		} else {
			ek.Allowlist, err = trustfiles.LoadAllowlist(allowPath)
		}
		switch {
		case err != nil:
			errs = append(errs, err)
		case len(ek.Allowlist) == 0:
			errs = append(errs, fmt.Errorf("%s %s lists no EK hash, so ek_policy %q would admit no TPM by allowlist; add the hashes `tpmid ek` prints", allowKey, allowPath, ek.Policy))
		}
	}
	return errs
}
