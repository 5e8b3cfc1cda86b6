package session

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tpmid/tpmid/pkg/server/appraise"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// EKPolicy is the EK admission of the server plugin's ek_policy: the EK
// certificate against a trust bundle and the TCG EK profile, and/or the EK
// hash against an allowlist.
type EKPolicy struct {
	Policy    appraise.EKPolicy
	Trust     *verify.EKTrust    // nil when the policy needs none
	Allowlist appraise.Allowlist // nil when the policy needs none
	Now       func() time.Time   // default time.Now
	// Cache, when set, remembers accepted certificate chains (EKCache);
	// nil verifies every chain in full.
	Cache *EKCache
}

// AdmitEK implements EKAdmission.
func (p *EKPolicy) AdmitEK(_ context.Context, ek *EKClaim) (*verify.EKFacts, error) {
	var facts *verify.EKFacts
	certErr := errors.New("no EK certificate")
	if ek.Certificate != nil && p.Policy.NeedsTrust() {
		now := time.Now
		if p.Now != nil {
			now = p.Now
		}
		f, err := p.verifyCert(ek, now())
		var ve *verify.Error
		if errors.As(err, &ve) && ve.Reason == verify.ReasonEKCertProfile {
			// A trusted CA's certificate for a key that is not an EK:
			// whoever holds that key could answer the credential in
			// software. Hostile, so refused outright: no allowlist
			// rescues it, and no challenge is made.
			return nil, &verify.Error{Reason: verify.ReasonEKCertProfile, Err: fmt.Errorf("EK %s: %w", ek.Hash, ve.Err)}
		}
		certErr = err
		if err == nil {
			facts = f
		}
	}
	allowlisted := p.Allowlist != nil && p.Allowlist.Contains(ek.Hash)
	if err := appraise.AdmitEK(p.Policy, certErr, allowlisted); err != nil {
		return nil, &verify.Error{Reason: ReasonEKNotAdmitted, Err: fmt.Errorf("EK %s: %w", ek.Hash, err)}
	}
	return facts, nil
}

// verifyCert is verify.VerifyEKCert through the cache, when there is one.
func (p *EKPolicy) verifyCert(ek *EKClaim, now time.Time) (*verify.EKFacts, error) {
	if p.Cache == nil {
		return verify.VerifyEKCert(ek.Certificate, ek.Intermediates, p.Trust, now)
	}
	key := ekCacheKey(ek.Certificate, ek.Intermediates)
	if f, ok := p.Cache.get(key, now); ok {
		return f, nil
	}
	f, err := verify.VerifyEKCert(ek.Certificate, ek.Intermediates, p.Trust, now)
	if err == nil {
		p.Cache.put(key, f)
	}
	return f, err
}
