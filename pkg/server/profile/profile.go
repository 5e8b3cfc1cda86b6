// Package profile holds reference profiles: what a known-good boot of a
// machine looks like, per PCR bank and index, as the event digests that may
// appear there and/or exact PCR values, plus named rules (Secure Boot
// required, allowed boot applications, allowed kernels). Profiles are
// captured from a real event log (Capture), kept by the store as JSON
// (versioned there; the body carries "format": 1), and used to appraise an
// attestation (Appraise).
//
// The package is pure: no TPM, no database, no clock. See docs/profiles.md
// for the JSON form, the matching rule and the security caveats. In short:
// only digests of PCRs whose replay equals a verified quote are compared;
// event types and descriptions are informational and never decide anything.
package profile

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// Format is the version of the JSON form, written as "format" and required
// by ParseProfile. A change that old readers would misread gets a new number.
const Format = 1

// Bounds checked by ParseProfile and Validate.
const (
	// MaxSize bounds the JSON form of one profile.
	MaxSize = 1 << 20
	// MaxName bounds a profile name (bytes; [A-Za-z0-9._-] only).
	MaxName = 128
	// MaxDescription bounds an event description (bytes of UTF-8 with no
	// control characters). Capture truncates longer ones.
	MaxDescription = 256
	// MaxType bounds an event type name (printable ASCII).
	MaxType = 64
)

// SecureBootRequired is the one value of Rules.SecureBoot: the verified
// Secure Boot state must be enabled.
const SecureBootRequired = "required"

// Errors of ParseProfile and Validate; the message says where.
var (
	ErrTooLarge = errors.New("profile exceeds the size limit")
	ErrInvalid  = errors.New("invalid profile")
)

// Profile is one reference profile. Its JSON form (MarshalJSON) is:
//
//	{"format": 1, "name": "...",
//	 "pcrs":  {"<bank>": {"<index>": {"value": "<hex>",
//	                                  "events": {"<digest hex>": {"type": "...", "description": "..."}}}}},
//	 "rules": {"secure_boot": "required",
//	           "boot_applications": {"<bank>": {"<digest hex>": {...}}},
//	           "kernels":           {"<bank>": {"<digest hex>": {...}}}}}
//
// Digests and values are lowercase hex in the Go form (ParseProfile lowers
// them). A Profile built in Go should be checked with Validate; Appraise
// fails closed on a malformed one but does not explain it as well.
type Profile struct {
	// Name identifies the profile ([A-Za-z0-9._-], at most MaxName bytes).
	Name string
	// Version is the store's version number of this body. It is not part
	// of the JSON form: the caller sets it from the store so that a
	// Verdict can name it. 0 for a profile not yet stored.
	Version int
	// PCRs maps bank and PCR index to what that PCR may hold.
	PCRs map[pcrs.Alg]map[int]PCR
	// Rules are the named rules; all of them must hold.
	Rules Rules
}

// PCR is what one PCR of one bank may hold. At least one of Value and
// Events is set.
type PCR struct {
	// Value, when set, is the exact value the quote must report
	// (lowercase hex of the bank's size).
	Value string
	// Events, when non-empty, are the digests (lowercase hex of the bank's
	// size) that the log may extend into this PCR, any number of times and
	// in any order. Every extend the log makes into the PCR must be one of
	// them.
	Events map[string]Event
}

// Event describes an allowed digest for humans. Neither field is compared:
// only the digest (the map key) is.
type Event struct {
	Type        string `json:"type,omitempty"`        // e.g. EV_EFI_BOOT_SERVICES_APPLICATION
	Description string `json:"description,omitempty"` // from the event log's decoded data
}

// Rules are named checks beyond the PCR lists.
type Rules struct {
	// SecureBoot is "" (not checked) or SecureBootRequired.
	SecureBoot string
	// BootApplications, per bank: every boot application the log extends
	// into PCR4 must have one of these digests. A boot application is any
	// PCR4 extend whose type is not one the event log checks against its
	// data (EV_SEPARATOR, EV_EFI_ACTION, the EFI variable types), whatever
	// else it is labelled: labels are not bound by the quote.
	BootApplications map[pcrs.Alg]map[string]Event
	// Kernels, per bank: the kernel measurements of the boot (see
	// KernelEvents) must exist and all have one of these digests.
	Kernels map[pcrs.Alg]map[string]Event
}

func (r Rules) empty() bool {
	return r.SecureBoot == "" && len(r.BootApplications) == 0 && len(r.Kernels) == 0
}

// knownBanks is the fixed order in which banks are walked, so that
// validation errors and verdicts are deterministic.
var knownBanks = [...]pcrs.Alg{pcrs.SHA1, pcrs.SHA256, pcrs.SHA384, pcrs.SHA512, pcrs.SM3}

func bankSlot(a pcrs.Alg) int {
	switch a {
	case pcrs.SHA1:
		return 0
	case pcrs.SHA256:
		return 1
	case pcrs.SHA384:
		return 2
	case pcrs.SHA512:
		return 3
	case pcrs.SM3:
		return 4
	}
	return -1
}

// The JSON form. Maps are written with sorted keys by encoding/json, so the
// output is stable (PCR indices sort as strings: "0", "1", "10", "2", ...).
type profileJSON struct {
	Format int                           `json:"format"`
	Name   string                        `json:"name"`
	PCRs   map[string]map[string]pcrJSON `json:"pcrs,omitempty"`
	Rules  *rulesJSON                    `json:"rules,omitempty"`
}

type pcrJSON struct {
	Value  string           `json:"value,omitempty"`
	Events map[string]Event `json:"events,omitempty"`
}

type rulesJSON struct {
	SecureBoot       string                      `json:"secure_boot,omitempty"`
	BootApplications map[string]map[string]Event `json:"boot_applications,omitempty"`
	Kernels          map[string]map[string]Event `json:"kernels,omitempty"`
}

// MarshalJSON writes the JSON form; it refuses a profile Validate refuses,
// so that nothing is stored that ParseProfile would reject.
func (p Profile) MarshalJSON() ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	w := profileJSON{Format: Format, Name: p.Name}
	if len(p.PCRs) > 0 {
		w.PCRs = map[string]map[string]pcrJSON{}
		for alg, bank := range p.PCRs {
			m := map[string]pcrJSON{}
			for i, e := range bank {
				m[strconv.Itoa(i)] = pcrJSON(e)
			}
			w.PCRs[alg.String()] = m
		}
	}
	if !p.Rules.empty() {
		w.Rules = &rulesJSON{SecureBoot: p.Rules.SecureBoot,
			BootApplications: digestSetsJSON(p.Rules.BootApplications),
			Kernels:          digestSetsJSON(p.Rules.Kernels)}
	}
	return json.Marshal(w)
}

func digestSetsJSON(m map[pcrs.Alg]map[string]Event) map[string]map[string]Event {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]map[string]Event, len(m))
	for a, s := range m {
		out[a.String()] = s
	}
	return out
}

// ParseProfile reads the JSON form strictly: at most MaxSize bytes, one JSON
// object, no unknown fields, no duplicate object keys, "format" 1, canonical
// bank names ("sha256"), PCR indices "0".."23", hex digests and values of
// the bank's size (either case; stored lowercase), then Validate.
func ParseProfile(data []byte) (*Profile, error) {
	p := &Profile{}
	if err := p.UnmarshalJSON(data); err != nil {
		return nil, err
	}
	return p, nil
}

// UnmarshalJSON is ParseProfile into p (so that json.Unmarshal is as strict).
// Version is left as it was.
func (p *Profile) UnmarshalJSON(data []byte) error {
	if len(data) > MaxSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), MaxSize)
	}
	if err := checkDuplicateKeys(data); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var w profileJSON
	if err := dec.Decode(&w); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: data after the profile object", ErrInvalid)
	}
	if w.Format != Format {
		return fmt.Errorf("%w: format %d, want %d", ErrInvalid, w.Format, Format)
	}
	q := Profile{Name: w.Name, Version: p.Version}
	if len(w.PCRs) > 0 {
		q.PCRs = make(map[pcrs.Alg]map[int]PCR, len(w.PCRs))
	}
	for name, bank := range w.PCRs {
		alg, err := parseBank(name)
		if err != nil {
			return fmt.Errorf("%w: pcrs: %v", ErrInvalid, err)
		}
		m := make(map[int]PCR, len(bank))
		for k, e := range bank {
			i, err := strconv.Atoi(k)
			if err != nil || strconv.Itoa(i) != k || i < 0 || i > pcrs.MaxIndex {
				return fmt.Errorf("%w: pcrs.%s: PCR index %q is not one of 0..%d", ErrInvalid, name, k, pcrs.MaxIndex)
			}
			where := fmt.Sprintf("pcrs.%s.%d", name, i)
			v := PCR{Value: lowerHex(e.Value)}
			if v.Events, err = lowerKeys(e.Events, where+".events"); err != nil {
				return err
			}
			m[i] = v
		}
		q.PCRs[alg] = m
	}
	if w.Rules != nil {
		q.Rules.SecureBoot = w.Rules.SecureBoot
		var err error
		if q.Rules.BootApplications, err = digestSets(w.Rules.BootApplications, "rules.boot_applications"); err != nil {
			return err
		}
		if q.Rules.Kernels, err = digestSets(w.Rules.Kernels, "rules.kernels"); err != nil {
			return err
		}
	}
	if err := q.Validate(); err != nil {
		return err
	}
	*p = q
	return nil
}

func parseBank(name string) (pcrs.Alg, error) {
	a, err := pcrs.ParseAlg(name)
	if err != nil || a.String() != name {
		return 0, fmt.Errorf("bank %q is not one of sha1, sha256, sha384, sha512, sm3_256", name)
	}
	return a, nil
}

func digestSets(m map[string]map[string]Event, where string) (map[pcrs.Alg]map[string]Event, error) {
	if len(m) == 0 {
		return nil, nil
	}
	out := make(map[pcrs.Alg]map[string]Event, len(m))
	for name, set := range m {
		a, err := parseBank(name)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, where, err)
		}
		if out[a], err = lowerKeys(set, where+"."+name); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// lowerKeys lowercases digest keys; two keys that differ only in case are
// one digest listed twice.
func lowerKeys(m map[string]Event, where string) (map[string]Event, error) {
	if len(m) == 0 {
		return nil, nil // "events": {} is no events, as when absent
	}
	out := make(map[string]Event, len(m))
	for k, e := range m {
		l := lowerHex(k)
		if _, dup := out[l]; dup {
			return nil, fmt.Errorf("%w: %s: digest %s listed twice", ErrInvalid, where, l)
		}
		out[l] = e
	}
	return out, nil
}

// lowerHex lowercases s when it is ASCII hex; anything else is returned as
// is for Validate to refuse (Unicode case mapping must not make hex).
func lowerHex(s string) string {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return s
		}
	}
	return strings.ToLower(s)
}

// Validate checks a profile: a valid name; something to check (a PCR or a
// rule); known banks; PCR indices 0..23; each PCR with a value or at least
// one event; lowercase hex digests and values of the bank's size; bounded
// printable types and descriptions; secure_boot "" or "required"; rule
// digest lists non-empty.
func (p *Profile) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
	}
	if err := checkName(p.Name); err != nil {
		return bad("%v", err)
	}
	if len(p.PCRs) == 0 && p.Rules.empty() {
		return bad("profile %q checks nothing: no PCR and no rule", p.Name)
	}
	for alg := range p.PCRs {
		if bankSlot(alg) < 0 {
			return bad("pcrs: unknown bank %s", alg)
		}
	}
	for _, alg := range knownBanks {
		bank, ok := p.PCRs[alg]
		if !ok {
			continue
		}
		if len(bank) == 0 {
			return bad("pcrs.%s: no PCR", alg)
		}
		for _, i := range sortedKeys(bank) {
			e := bank[i]
			where := fmt.Sprintf("pcrs.%s.%d", alg, i)
			if i < 0 || i > pcrs.MaxIndex {
				return bad("%s: PCR index not in 0..%d", where, pcrs.MaxIndex)
			}
			if e.Value == "" && len(e.Events) == 0 {
				return bad("%s: neither a value nor events", where)
			}
			if e.Value != "" {
				if err := checkHex(e.Value, alg); err != nil {
					return bad("%s.value: %v", where, err)
				}
			}
			if err := checkEvents(e.Events, alg); err != nil {
				return bad("%s.events: %v", where, err)
			}
		}
	}
	switch p.Rules.SecureBoot {
	case "", SecureBootRequired:
	default:
		return bad("rules.secure_boot: %q, want %q or nothing", p.Rules.SecureBoot, SecureBootRequired)
	}
	for _, r := range []struct {
		name string
		m    map[pcrs.Alg]map[string]Event
	}{{"boot_applications", p.Rules.BootApplications}, {"kernels", p.Rules.Kernels}} {
		for alg, set := range r.m {
			if bankSlot(alg) < 0 {
				return bad("rules.%s: unknown bank %s", r.name, alg)
			}
			if len(set) == 0 {
				return bad("rules.%s.%s: empty list (it would refuse every boot)", r.name, alg)
			}
		}
		for _, alg := range knownBanks {
			if err := checkEvents(r.m[alg], alg); err != nil {
				return bad("rules.%s.%s: %v", r.name, alg, err)
			}
		}
	}
	return nil
}

func sortedKeys[K int | string, V any](m map[K]V) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func checkName(n string) error {
	if n == "" || len(n) > MaxName {
		return fmt.Errorf("name must be 1..%d bytes", MaxName)
	}
	for _, c := range []byte(n) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("name %q: only letters, digits, '.', '_' and '-'", n)
		}
	}
	return nil
}

// checkHex requires lowercase hex of the bank's digest size.
func checkHex(s string, alg pcrs.Alg) error {
	if len(s) != 2*alg.Size() {
		return fmt.Errorf("%q is %d hex digits, want %d for %s", s, len(s), 2*alg.Size(), alg)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("%q is not lowercase hex", s)
		}
	}
	return nil
}

func checkEvents(m map[string]Event, alg pcrs.Alg) error {
	for _, d := range sortedKeys(m) {
		if err := checkHex(d, alg); err != nil {
			return fmt.Errorf("digest %v", err)
		}
		e := m[d]
		if len(e.Type) > MaxType {
			return fmt.Errorf("digest %s: type longer than %d bytes", d, MaxType)
		}
		for i := 0; i < len(e.Type); i++ {
			if c := e.Type[i]; c < 0x21 || c > 0x7e {
				return fmt.Errorf("digest %s: type %q is not printable ASCII", d, e.Type)
			}
		}
		if len(e.Description) > MaxDescription {
			return fmt.Errorf("digest %s: description longer than %d bytes", d, MaxDescription)
		}
		if !printableText(e.Description) {
			return fmt.Errorf("digest %s: description has control characters or invalid UTF-8", d)
		}
	}
	return nil
}

func printableText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// clean makes s safe for a log line and a profile description: invalid
// UTF-8 and non-printable runes are escaped, and the result is cut to at
// most max bytes (ending in "..." when cut).
func clean(s string, max int) string {
	if len(s) <= max && printableText(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() <= max; {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsPrint(r):
			b.WriteRune(r)
		case r < 0x10000:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
		i += n
	}
	out := b.String()
	if len(out) > max {
		cut := max - 3
		for cut > 0 && !utf8.RuneStart(out[cut]) {
			cut--
		}
		out = out[:cut] + "..."
	}
	return out
}

// maxDepth bounds JSON nesting; the profile form needs 6 levels.
const maxDepth = 16

// checkDuplicateKeys walks the JSON tokens and refuses an object that has
// the same key twice: encoding/json would keep the last one silently, and
// a profile that reads one way to a person and another to the server is a
// hazard. It also bounds nesting (maxDepth), so a hostile body cannot make
// the walk hold a deep stack.
func checkDuplicateKeys(data []byte) error {
	type frame struct {
		obj       bool
		expectKey bool
		keys      map[string]struct{}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var stack []*frame
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1].obj {
			stack[n-1].expectKey = true
		}
	}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		switch t := tok.(type) {
		case json.Delim:
			if (t == '{' || t == '[') && len(stack) >= maxDepth {
				return fmt.Errorf("JSON nested deeper than %d levels", maxDepth)
			}
			switch t {
			case '{':
				stack = append(stack, &frame{obj: true, expectKey: true, keys: map[string]struct{}{}})
			case '[':
				stack = append(stack, &frame{})
			default:
				stack = stack[:len(stack)-1]
				valueDone()
			}
		case string:
			if n := len(stack); n > 0 && stack[n-1].obj && stack[n-1].expectKey {
				if _, dup := stack[n-1].keys[t]; dup {
					return fmt.Errorf("key %q appears twice in one object", clean(t, 64))
				}
				stack[n-1].keys[t] = struct{}{}
				stack[n-1].expectKey = false
				continue
			}
			valueDone()
		default:
			valueDone()
		}
	}
}

// hexLower is hex.EncodeToString, named for the call sites.
func hexLower(b []byte) string { return hex.EncodeToString(b) }
