package store

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Input checks. Everything refused here is refused before any statement
// runs, with ErrInvalid.

func invalid(format string, a ...any) error {
	return fmt.Errorf("store: %w: %s", ErrInvalid, fmt.Sprintf(format, a...))
}

func checkEKHash(s string) error {
	if len(s) != 64 {
		return invalid("EK hash %.80q is not 64 hex digits", s)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return invalid("EK hash %q is not lowercase hex", s)
		}
	}
	return nil
}

// checkHostname: the caller normalises (lowercase); the store only checks
// that it did and that the name is printable and bounded.
func checkHostname(s string) error {
	if s == "" {
		return invalid("empty hostname")
	}
	if len(s) > MaxHostname {
		return invalid("hostname is %d bytes, over the %d-byte limit", len(s), MaxHostname)
	}
	if !utf8.ValidString(s) || strings.IndexFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		return invalid("hostname %q has a space, a control character or invalid UTF-8", s)
	}
	if strings.ToLower(s) != s {
		return invalid("hostname %q is not lowercase", s)
	}
	return nil
}

// checkName: a group, a profile name: 1..MaxName bytes of UTF-8 without
// control characters.
func checkName(what, s string) error {
	if s == "" {
		return invalid("empty %s", what)
	}
	if len(s) > MaxName {
		return invalid("%s is %d bytes, over the %d-byte limit", what, len(s), MaxName)
	}
	if !utf8.ValidString(s) || strings.IndexFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }) >= 0 {
		return invalid("%s %q has a control character or invalid UTF-8", what, s)
	}
	return nil
}

// checkText: a free-form field (may be empty): bounded UTF-8 without NUL
// (PostgreSQL text cannot hold NUL).
func checkText(what, s string, max int) error {
	if len(s) > max {
		return invalid("%s is %d bytes, over the %d-byte limit", what, len(s), max)
	}
	if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
		return invalid("%s has NUL or invalid UTF-8", what)
	}
	return nil
}

func checkList(what string, l []string) error {
	if len(l) > MaxList {
		return invalid("%d %ss, over the limit of %d", len(l), what, MaxList)
	}
	for _, v := range l {
		if err := checkName(what, v); err != nil {
			return err
		}
	}
	return nil
}

// normSet returns l sorted without duplicates, nil when empty.
func normSet(l []string) []string {
	if len(l) == 0 {
		return nil
	}
	l = slices.Clone(l)
	slices.Sort(l)
	return slices.Compact(l)
}

func normTime(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC().Truncate(time.Microsecond)
}

// normHost checks h and normalises it in place: sets sorted and
// deduplicated, times UTC to the microsecond.
func normHost(h *Host) error {
	if h == nil {
		return invalid("nil host")
	}
	if err := checkEKHash(h.EKHash); err != nil {
		return err
	}
	if err := checkHostname(h.Hostname); err != nil {
		return err
	}
	if !h.State.Valid() {
		return invalid("host %s: unknown state %q", h.Hostname, h.State)
	}
	if len(h.Proposed) > MaxProposed {
		return invalid("host %s: proposed state is %d bytes, over the %d-byte limit", h.Hostname, len(h.Proposed), MaxProposed)
	}
	if len(h.EKPublic) > MaxEKBlob || len(h.EKCert) > MaxEKBlob {
		return invalid("host %s: EK public key or certificate over the %d-byte limit", h.Hostname, MaxEKBlob)
	}
	if err := checkText("last outcome", h.LastOutcome, MaxName); err != nil {
		return err
	}
	if err := checkText("last profile", h.LastProfile, 2*MaxName); err != nil {
		return err
	}
	for _, l := range []struct {
		what string
		v    []string
	}{{"group", h.Groups}, {"profile", h.Profiles}, {"retired profile", h.Retired}} {
		if err := checkList(l.what, l.v); err != nil {
			return err
		}
	}
	h.Groups, h.Profiles, h.Retired = normSet(h.Groups), normSet(h.Profiles), normSet(h.Retired)
	h.ProposedAt, h.LastAttestation = normTime(h.ProposedAt), normTime(h.LastAttestation)
	return nil
}

func checkProfile(p *Profile) error {
	if err := checkName("profile name", p.Name); err != nil {
		return err
	}
	if len(p.Body) == 0 {
		return invalid("profile %q: empty body", p.Name)
	}
	if len(p.Body) > MaxProfileBody {
		return invalid("profile %q: body is %d bytes, over the %d-byte limit", p.Name, len(p.Body), MaxProfileBody)
	}
	return nil
}

func checkAssignment(a Assignment) error {
	if err := checkName("profile name", a.Profile); err != nil {
		return err
	}
	switch {
	case a.Host != "" && a.Group != "":
		return invalid("assignment of %q names both host %q and group %q", a.Profile, a.Host, a.Group)
	case a.Host != "":
		return checkHostname(a.Host)
	case a.Group != "":
		return checkName("group", a.Group)
	}
	return invalid("assignment of %q names neither a host nor a group", a.Profile)
}

// normAttempt makes a storable: an attempt records possibly hostile input
// (a claimed hostname), so it is kept rather than refused. Invalid UTF-8
// and NUL become U+FFFD, a field over its bound is cut (at a rune, ending
// in "…"), reasons past MaxList are dropped. Only a missing outcome (a
// caller's bug) is refused.
func normAttempt(a *Attempt) error {
	if a == nil {
		return invalid("nil attempt")
	}
	if a.Outcome == "" {
		return invalid("attempt without outcome")
	}
	a.EKHash = clean(a.EKHash, MaxName)
	a.Hostname = clean(a.Hostname, MaxHostname)
	a.Server = clean(a.Server, MaxName)
	a.Outcome = clean(a.Outcome, MaxName)
	a.Profile = clean(a.Profile, 2*MaxName)
	if len(a.Reasons) > MaxList {
		a.Reasons = a.Reasons[:MaxList]
	}
	for i, r := range a.Reasons {
		a.Reasons[i] = clean(r, MaxReason)
	}
	return nil
}

// clean returns s as valid UTF-8 without NUL, at most max bytes.
func clean(s string, max int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	s = strings.ReplaceAll(s, "\x00", "\uFFFD")
	if len(s) <= max {
		return s
	}
	const ell = "…"
	cut := max - len(ell)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ell
}
