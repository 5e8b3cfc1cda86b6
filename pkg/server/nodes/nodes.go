// Package nodes is the session's node store step: after the TPM evidence is
// verified, it decides with the operator's state who may join and in which
// boot state (enrollment, revocation, reboot counters, reference profiles),
// and records every attempt. Each admission is one store transaction; a
// refusal is recorded in its own, after the admission's was rolled back, so
// nothing is ever half-written.
package nodes

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tpmid/tpmid/pkg/server/profile"
	"github.com/tpmid/tpmid/pkg/server/session"
	"github.com/tpmid/tpmid/pkg/server/store"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// Enrollment says which EKs may join and where their hostname comes from.
type Enrollment string

const (
	// Open: no binding; any EK the EK policy admits joins (the default,
	// tpmid's behaviour before the store). Hosts the store knows are still
	// subject to revocation, reboot tracking and their profiles.
	Open Enrollment = "open"
	// TOFU: the first successful attestation binds the EK to the hostname
	// the agent claims; a hostname already bound to another EK is refused.
	TOFU Enrollment = "tofu"
	// Required: only enrolled EKs join; the hostname comes from the
	// enrollment, never from the agent's claim.
	Required Enrollment = "required"
)

// ParseEnrollment checks an enrollment name ("" is Open).
func ParseEnrollment(s string) (Enrollment, error) {
	switch e := Enrollment(s); e {
	case "":
		return Open, nil
	case Open, TOFU, Required:
		return e, nil
	}
	return "", fmt.Errorf("enrollment %q is not one of open, tofu, required", s)
}

// Refusal reasons.
const (
	ReasonNotEnrolled     verify.Reason = "ek_not_enrolled"
	ReasonRevoked         verify.Reason = "ek_revoked"
	ReasonHostnameTaken   verify.Reason = "hostname_taken"
	ReasonHostnameInvalid verify.Reason = "hostname_invalid"
	ReasonResetRollback   verify.Reason = "reset_count_rollback"
	ReasonRestartRollback verify.Reason = "restart_count_rollback"
	ReasonClockRollback   verify.Reason = "clock_rollback"
	ReasonProfileMismatch verify.Reason = "profile_mismatch"
	ReasonProfileInvalid  verify.Reason = "profile_invalid"
	// ReasonStoreUnavailable: the database could not be reached; the
	// plugin answers gRPC Unavailable and the agent retries.
	ReasonStoreUnavailable verify.Reason = "store_unavailable"
	ReasonStore            verify.Reason = "store_error"
)

// SecurityEvent receives what an operator must see even when nobody reads
// the attempt record (a counter rollback is a cloned or replayed TPM state).
type SecurityEvent func(msg string, keyvals ...any)

// Nodes implements session.Nodes over a store.
type Nodes struct {
	Store      store.Store
	Enrollment Enrollment
	// Server names this spire-server in attempt records.
	Server   string
	Now      func() time.Time // default time.Now
	Security SecurityEvent    // may be nil

	// profiles caches parsed profile bodies (parsedProfile).
	profilesMu sync.Mutex
	profiles   map[[sha256.Size]byte]*profile.Profile
}

// maxParsedProfiles bounds the parsed-profile cache: far more than the
// profiles a fleet assigns at once; when full it is emptied.
const maxParsedProfiles = 256

// parsedProfile is profile.ParseProfile(body) through a cache keyed by
// the body's SHA-256. Parsing a real profile strictly (duplicate keys,
// every digest) costs about a millisecond, more than the rest of an
// attestation, and every attestation of a host with profiles reads them;
// the cache holds only what parsing those exact bytes returned, so it
// answers nothing parsing would not. Appraise only reads profiles.
func (n *Nodes) parsedProfile(body []byte) (*profile.Profile, error) {
	key := sha256.Sum256(body)
	n.profilesMu.Lock()
	p, ok := n.profiles[key]
	n.profilesMu.Unlock()
	if ok {
		return p, nil
	}
	p, err := profile.ParseProfile(body)
	if err != nil {
		return nil, err
	}
	n.profilesMu.Lock()
	defer n.profilesMu.Unlock()
	if n.profiles == nil || len(n.profiles) >= maxParsedProfiles {
		n.profiles = map[[sha256.Size]byte]*profile.Profile{}
	}
	n.profiles[key] = p
	return p, nil
}

// refusal is a refusal that also proposes the boot state it saw, for an
// operator to approve (written by Refused with the attempt).
type refusal struct {
	err      *verify.Error
	proposed []byte
}

func (r *refusal) Error() string { return r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

func refuse(r verify.Reason, format string, a ...any) error {
	return &verify.Error{Reason: r, Err: fmt.Errorf(format, a...)}
}

// hostnameRE is an RFC 1123 host name, lowercased.
var hostnameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

// ValidHostname reports whether s (lowercase) is a host name tpmid binds.
func ValidHostname(s string) bool { return len(s) <= 253 && hostnameRE.MatchString(s) }

// Admit implements session.Nodes: enrollment, revocation, reboot counters
// and profiles, and on success the host's new counters and the attempt,
// all in one transaction.
func (n *Nodes) Admit(ctx context.Context, f *session.Facts) (*session.Admission, error) {
	var adm *session.Admission
	err := n.Store.Update(ctx, func(tx store.Tx) error {
		adm = nil
		h, err := n.host(ctx, tx, f)
		if err != nil {
			return err
		}
		var profileName string
		if h != nil {
			if err := n.checkCounters(h, f); err != nil {
				return err
			}
			if profileName, err = n.appraise(ctx, tx, h, f); err != nil {
				return err
			}
			reset, restart, clock, safe := f.Clock()
			h.Counters = &store.Counters{ResetCount: reset, RestartCount: restart, Clock: clock, Safe: safe}
			h.LastAttestation, h.LastOutcome, h.LastProfile = n.now(), store.OutcomeAdmitted, profileName
			h.Proposed, h.ProposedAt = nil, time.Time{}
			if err := tx.UpdateHost(ctx, h); err != nil {
				return err
			}
			adm = &session.Admission{Hostname: h.Hostname, Groups: slices.Clone(h.Groups), Profile: profileName}
		} else {
			adm = &session.Admission{}
		}
		return tx.AppendAttempt(ctx, &store.Attempt{
			Time: n.now(), EKHash: f.EKHash, Hostname: hostnameOf(h, f), Server: n.Server,
			Outcome: store.OutcomeAdmitted, Profile: profileName,
		})
	})
	if err != nil {
		return nil, StoreError(err)
	}
	return adm, nil
}

// host finds or binds the host of f's EK as the enrollment mode says; nil
// means an unknown EK in open mode.
func (n *Nodes) host(ctx context.Context, tx store.Tx, f *session.Facts) (*store.Host, error) {
	h, err := tx.HostByEK(ctx, f.EKHash)
	switch {
	case errors.Is(err, store.ErrNotFound):
		h = nil
	case err != nil:
		return nil, err
	}
	if h != nil {
		if h.State == store.HostRevoked {
			return nil, refuse(ReasonRevoked, "EK %s (host %s) is revoked", f.EKHash, h.Hostname)
		}
		return h, nil
	}
	switch n.Enrollment {
	case Required:
		return nil, refuse(ReasonNotEnrolled, "EK %s is not enrolled (enrollment = required); enroll it with tpmid hosts enroll", f.EKHash)
	case TOFU:
		name := f.Hostname
		if !ValidHostname(name) {
			return nil, refuse(ReasonHostnameInvalid, "the agent claims hostname %q, which is not a valid host name to bind", name)
		}
		if other, err := tx.HostByName(ctx, name); err == nil {
			return nil, refuse(ReasonHostnameTaken, "hostname %s is already bound to EK %s", name, other.EKHash)
		} else if !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		h = &store.Host{EKHash: f.EKHash, Hostname: name, EKPublic: f.EKPublic, EKCert: f.EKCert, State: store.HostEnrolled}
		if err := tx.CreateHost(ctx, h); err != nil {
			if errors.Is(err, store.ErrConflict) {
				// Another server bound this EK or this name first.
				return nil, refuse(ReasonHostnameTaken, "EK %s or hostname %s was bound concurrently", f.EKHash, name)
			}
			return nil, err
		}
		return h, nil // CreateHost set its times
	}
	return nil, nil
}

// checkCounters refuses a TPM whose counters went back (TPM 2.0 Part 1,
// 36 "Timing Components"): resetCount only grows until TPM2_Clear;
// restartCount only grows within one resetCount; within one reset and
// restart, clock only grows. A lower clock across a restart or reset is
// accepted only when the quote's safe flag is clear: safe = YES promises
// that this clock value was never reported before, so a lower one with safe
// set is a replayed or cloned state.
func (n *Nodes) checkCounters(h *store.Host, f *session.Facts) error {
	last := h.Counters
	if last == nil {
		return nil
	}
	reset, restart, clock, safe := f.Clock()
	security := func(r verify.Reason, format string, a ...any) error {
		err := refuse(r, format, a...)
		if n.Security != nil {
			n.Security("TPM counters went back: cloned or restored TPM state?", "reason", string(r), "ek_hash", h.EKHash, "host", h.Hostname, "error", err.Error())
		}
		return err
	}
	switch {
	case reset < last.ResetCount:
		return security(ReasonResetRollback, "reset count %d is lower than the %d last seen for EK %s", reset, last.ResetCount, h.EKHash)
	case reset == last.ResetCount && restart < last.RestartCount:
		return security(ReasonRestartRollback, "restart count %d is lower than the %d last seen within reset %d", restart, last.RestartCount, reset)
	case reset == last.ResetCount && restart == last.RestartCount && clock < last.Clock:
		return security(ReasonClockRollback, "clock %d is lower than the %d last seen within reset %d, restart %d", clock, last.Clock, reset, restart)
	case clock < last.Clock && safe:
		return security(ReasonClockRollback, "clock %d is lower than the %d last seen, and the quote says safe (the value was never reported before)", clock, last.Clock)
	}
	return nil
}

// appraise judges the boot against the host's profiles; with none assigned
// every boot state is allowed (as before profiles existed).
func (n *Nodes) appraise(ctx context.Context, tx store.Tx, h *store.Host, f *session.Facts) (string, error) {
	stored, err := tx.ProfilesFor(ctx, h)
	if err != nil || len(stored) == 0 {
		return "", err
	}
	profiles := make([]profile.Profile, 0, len(stored))
	for _, sp := range stored {
		p, err := n.parsedProfile(sp.Body)
		if err != nil {
			return "", refuse(ReasonProfileInvalid, "profile %s version %d: %v", sp.Name, sp.Version, err)
		}
		profiles = append(profiles, *p) // a copy: the cached one is shared
		profiles[len(profiles)-1].Version = sp.Version
	}
	in := profile.Input{Log: f.Log, Replayed: f.Replayed, Quoted: f.PCRs, SecureBoot: f.SecureBoot}
	v := profile.Appraise(in, profiles)
	if v.Allowed {
		return fmt.Sprintf("%s@%d", v.Profile, v.Version), nil
	}
	r := &refusal{err: &verify.Error{Reason: ReasonProfileMismatch, Err: errors.New(v.String())}}
	if f.Log != nil {
		// A profile name is [A-Za-z0-9._-], at most profile.MaxName
		// bytes; a valid host name fits once cut to length.
		name := "proposed-" + h.Hostname
		if len(name) > profile.MaxName {
			name = name[:profile.MaxName]
		}
		if p := profile.ProposedFrom(in, name); p != nil {
			r.proposed, _ = json.Marshal(p)
		}
	}
	return "", r
}

// Refused implements session.Nodes: the attempt, and for a boot no profile
// allowed, the host's proposed state, in one transaction of their own.
func (n *Nodes) Refused(ctx context.Context, f *session.Facts, cause error) {
	var r *refusal
	errors.As(cause, &r)
	_ = n.Store.Update(ctx, func(tx store.Tx) error {
		h, err := tx.HostByEK(ctx, f.EKHash)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if err == nil {
			h.LastAttestation, h.LastOutcome = n.now(), store.OutcomeRefused
			if r != nil && r.proposed != nil {
				h.Proposed, h.ProposedAt = r.proposed, n.now()
			}
			if err := tx.UpdateHost(ctx, h); err != nil {
				return err
			}
		} else {
			h = nil
		}
		return tx.AppendAttempt(ctx, &store.Attempt{
			Time: n.now(), EKHash: f.EKHash, Hostname: hostnameOf(h, f), Server: n.Server,
			Outcome: store.OutcomeRefused, Reasons: []string{reasonLine(cause)},
		})
	})
}

// reasonLine is "<reason>: <message>", bounded for the attempt record.
func reasonLine(err error) string {
	s := string(verify.ReasonOf(err))
	if s == "" {
		s = "error"
	}
	s += ": " + err.Error()
	if len(s) > 4000 {
		s = s[:4000] + "…"
	}
	return strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "?")
}

func hostnameOf(h *store.Host, f *session.Facts) string {
	if h != nil {
		return h.Hostname
	}
	return f.Hostname
}

// StoreError keeps refusals as they are and names store failures
// (ReasonStoreUnavailable for an unreachable database, so a shell can answer
// Unavailable; ReasonStore otherwise); context errors pass through.
func StoreError(err error) error {
	var ve *verify.Error
	switch {
	case errors.As(err, &ve):
		return err
	case errors.Is(err, store.ErrUnavailable):
		return &verify.Error{Reason: ReasonStoreUnavailable, Err: err}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	}
	return &verify.Error{Reason: ReasonStore, Err: err}
}

func (n *Nodes) now() time.Time {
	if n.Now != nil {
		return n.Now()
	}
	return time.Now()
}
