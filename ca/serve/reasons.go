package serve

import (
	"net/http"

	"github.com/tpmid/tpmid/pkg/server/nodes"
	"github.com/tpmid/tpmid/pkg/server/session"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// Refusal reasons of this server; the others are the plugin's (verify,
// session, nodes), so one reason means the same thing in the attempt
// record whichever server wrote it.
const (
	ReasonMalformed         verify.Reason = "request_malformed"     // not the protocol's JSON
	ReasonTooLarge          verify.Reason = "request_too_large"     // body over its bound
	ReasonMethod            verify.Reason = "method_not_allowed"    // not POST
	ReasonNotFound          verify.Reason = "not_found"             // no such endpoint
	ReasonTPMVersion        verify.Reason = "tpm_version"           // TPM 1.2 (or unknown) asked for
	ReasonTPMUnknown        verify.Reason = "tpm_unknown"           // no trusted EK certificate names the TPM: no AK certificate can carry it
	ReasonBusy              verify.Reason = "busy"                  // too many requests or pending challenges
	ReasonTooManyChallenges verify.Reason = "too_many_challenges"   // this EK has too many pending challenges
	ReasonSecretUnknown     verify.Reason = "secret_unknown"        // the secret answers no pending challenge
	ReasonIssue             verify.Reason = "ak_certificate_failed" // the CA failed to issue
	ReasonInternal          verify.Reason = "internal"
)

// allReasons is every reason this server answers (the refused counter's
// label values).
var allReasons = []verify.Reason{
	ReasonMalformed, ReasonTooLarge, ReasonMethod, ReasonNotFound, ReasonTPMVersion, ReasonTPMUnknown,
	ReasonBusy, ReasonTooManyChallenges, ReasonSecretUnknown, ReasonIssue, ReasonInternal,
	session.ReasonEKMalformed, session.ReasonEKMismatch, session.ReasonEKNotAdmitted, session.ReasonAKCreation,
	verify.ReasonEKCertMalformed, verify.ReasonEKCertProfile, verify.ReasonEKTrustConfig, verify.ReasonInvalidArgument,
	verify.ReasonAKMalformed, verify.ReasonAKAttributes, verify.ReasonAKWeak,
	nodes.ReasonNotEnrolled, nodes.ReasonRevoked, nodes.ReasonStoreUnavailable, nodes.ReasonStore,
}

var known = func() map[verify.Reason]bool {
	m := map[verify.Reason]bool{}
	for _, r := range allReasons {
		m[r] = true
	}
	return m
}()

// metricReason keeps the refused counter's label set bounded: a reason not
// in allReasons (a verify reason this server never meant to return) is
// counted as internal.
func metricReason(r verify.Reason) verify.Reason {
	if known[r] {
		return r
	}
	return ReasonInternal
}

// status is the HTTP status of a refusal: 400 for input that is not the
// protocol, 403 for evidence or state the policy refuses, 404/405/413 as
// HTTP has them, 429 and 503 for bounds that pass, 500 for the server's
// own failures.
func status(r verify.Reason) int {
	switch r {
	case ReasonMalformed, ReasonTPMVersion, session.ReasonEKMalformed, session.ReasonEKMismatch,
		verify.ReasonEKCertMalformed, verify.ReasonAKMalformed, verify.ReasonInvalidArgument:
		return http.StatusBadRequest
	case ReasonTooLarge:
		return http.StatusRequestEntityTooLarge
	case ReasonMethod:
		return http.StatusMethodNotAllowed
	case ReasonNotFound:
		return http.StatusNotFound
	case ReasonTooManyChallenges:
		return http.StatusTooManyRequests
	case ReasonBusy, nodes.ReasonStoreUnavailable:
		return http.StatusServiceUnavailable
	case ReasonIssue, ReasonInternal, nodes.ReasonStore, verify.ReasonEKTrustConfig:
		return http.StatusInternalServerError
	}
	return http.StatusForbidden
}
