package serve

import (
	"errors"
	"fmt"

	"github.com/tpmid/tpmid/pkg/server/appraise"
	"github.com/tpmid/tpmid/pkg/server/session"
	"github.com/tpmid/tpmid/pkg/server/trustfiles"
)

// LoadEKPolicy builds the EK admission from the server plugin's three
// settings, with the plugin's rules: policy is cert (the default for ""),
// allowlist, cert_or_allowlist or cert_and_allowlist; a policy that uses
// the EK CA bundle (a PEM file or a directory of PEM/DER files) or the
// allowlist needs it, and one that does not refuses it. Every error is
// reported at once.
func LoadEKPolicy(policy, bundle, allowlist string) (*session.EKPolicy, error) {
	var errs []error
	if policy == "" {
		policy = string(appraise.EKPolicyCert)
	}
	p, err := appraise.ParseEKPolicy(policy)
	if err != nil {
		return nil, err
	}
	ek := &session.EKPolicy{Policy: p}
	if p.NeedsTrust() {
		if bundle == "" {
			errs = append(errs, fmt.Errorf("ek policy %q needs an EK CA bundle", p))
		} else if ek.Trust, err = trustfiles.LoadEKTrust(bundle); err != nil {
			errs = append(errs, fmt.Errorf("EK CA bundle: %w", err))
		}
	} else if bundle != "" {
		errs = append(errs, fmt.Errorf("an EK CA bundle is given but ek policy %q does not use it", p))
	}
	if p.NeedsAllowlist() {
		if allowlist == "" {
			errs = append(errs, fmt.Errorf("ek policy %q needs an EK hash allowlist", p))
		} else if ek.Allowlist, err = trustfiles.LoadAllowlist(allowlist); err != nil {
			errs = append(errs, err)
		}
	} else if allowlist != "" {
		errs = append(errs, fmt.Errorf("an EK hash allowlist is given but ek policy %q does not use it", p))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return ek, nil
}
