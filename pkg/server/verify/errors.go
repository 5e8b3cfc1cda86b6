// Package verify holds tpmid's pure verification functions: TPM quotes, AK
// public areas and EK certificates. Bytes, keys, trust anchors and a time go
// in; facts or a typed *Error come out. Nothing here talks to a TPM, a
// database or the clock.
//
// Every rejection is an *Error carrying a Reason (a stable snake_case string
// suitable for logs, metrics and the reason shown to an operator). Use
// errors.As or ReasonOf to get it.
package verify

import (
	"errors"
	"fmt"
)

// Reason names why evidence was rejected.
type Reason string

// Rejection reasons.
const (
	// ReasonInvalidArgument: the caller passed something unusable (nil key, zero time).
	ReasonInvalidArgument Reason = "invalid_argument"

	// Quotes (TPM2_Quote output).
	ReasonQuoteMalformed    Reason = "quote_malformed"     // too large, truncated, trailing bytes, bad encoding
	ReasonQuoteNotGenerated Reason = "quote_not_generated" // magic is not TPM_GENERATED_VALUE
	ReasonQuoteNotQuote     Reason = "quote_not_quote"     // type is not TPM_ST_ATTEST_QUOTE
	ReasonQuoteSignature    Reason = "quote_signature"     // signature malformed, unsupported, wrong key type or invalid
	ReasonQuoteExtraData    Reason = "quote_extra_data"    // extraData differs from the expected nonce/binding
	ReasonQuotePCRSelection Reason = "quote_pcr_selection" // not exactly one bank, no PCR, index out of range, or not what was asked
	ReasonQuotePCRValues    Reason = "quote_pcr_values"    // a selected PCR has no value, or a value of the wrong size
	ReasonQuoteDigest       Reason = "quote_digest"        // pcrDigest differs from the hash of the PCR values

	// Attestation keys.
	ReasonAKMalformed  Reason = "ak_malformed"  // not a parsable TPMT_PUBLIC/TPM2B_PUBLIC/PKIX key, or unsupported key
	ReasonAKAttributes Reason = "ak_attributes" // not a restricted signing key that never leaves its TPM
	ReasonAKWeak       Reason = "ak_weak"       // name algorithm weaker than SHA-256

	// Endorsement key certificates.
	ReasonEKCertMalformed     Reason = "ek_cert_malformed"     // too large, not DER, trailing non-padding bytes
	ReasonEKSAN               Reason = "ek_san"                // TCG subjectAltName missing attributes or malformed
	ReasonEKCertProfile       Reason = "ek_cert_profile"       // not an EK certificate: a CA, signing, AK or TLS certificate (CheckEKProfile)
	ReasonEKCriticalExtension Reason = "ek_critical_extension" // a critical extension we do not understand
	ReasonEKUntrusted         Reason = "ek_untrusted"          // does not chain to a trusted root
	ReasonEKExpired           Reason = "ek_expired"            // the chain would be valid but a certificate is outside its validity at `now`
	ReasonEKTrustConfig       Reason = "ek_trust_config"       // the trust bundle is unreadable or empty
)

// Error is a rejection with its reason.
type Error struct {
	Reason Reason
	Err    error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return string(e.Reason)
	}
	return string(e.Reason) + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// ReasonOf returns the reason of the first *Error in err's chain, or "" if
// there is none.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

func failf(r Reason, format string, a ...any) error {
	return &Error{Reason: r, Err: fmt.Errorf(format, a...)}
}
