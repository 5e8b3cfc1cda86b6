package profile

import (
	"encoding/hex"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/tpmid/tpmid/pkg/common/eventlog"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// Input is what an attestation established, all of it already verified by
// the caller:
//   - Quoted: the PCR values of the verified quote(s), every quoted bank
//     and index;
//   - Log and Replayed: the parsed event log and eventlog.VerifyAgainst's
//     result for it against Quoted (Replayed.Verified says which PCRs
//     replayed to the quote; VerifyAgainst also checked the digests defined
//     over event data). A Replayed returned with a *MismatchError is fine:
//     the mismatched PCRs are simply not in Verified;
//   - SecureBoot: eventlog.VerifiedSecureBoot's state (nil: unknown).
type Input struct {
	Log        *eventlog.Log
	Replayed   *eventlog.Replayed
	Quoted     pcrs.Values
	SecureBoot *eventlog.SecureBootState
}

// Rule names used in Failure.Rule.
const (
	RuleProfile          = "profile"           // the profile itself is malformed (fails closed)
	RulePCR              = "pcr"               // a covered PCR was not quoted, or its events are not bound by the quote
	RuleValue            = "value"             // a quoted value differs from the profile's exact value
	RuleSecureBoot       = "secure_boot"       // rules.secure_boot
	RuleBootApplications = "boot_applications" // rules.boot_applications
	RuleKernels          = "kernels"           // rules.kernels
)

// Verdict is the outcome of Appraise. It marshals to JSON as is, and
// String renders it on one bounded line for a log.
type Verdict struct {
	Allowed bool `json:"allowed"`
	// Profile and Version name the profile that allowed the boot.
	Profile string `json:"profile,omitempty"`
	Version int    `json:"version,omitempty"`
	// Denials, when denied, say why each profile tried refused, in the
	// order tried. Empty when Appraise had no profile.
	Denials []Denial `json:"denials,omitempty"`
}

// Denial is why one profile refused the boot.
type Denial struct {
	Profile string `json:"profile"`
	Version int    `json:"version,omitempty"`
	// Unrecognised are the events, in verified PCRs the profile lists
	// digests for, whose digest is not in that PCR's list.
	Unrecognised []EventRef `json:"unrecognised,omitempty"`
	// Failed are the PCR and rule checks that failed.
	Failed []Failure `json:"failed,omitempty"`
}

// Failure is one failed check.
type Failure struct {
	Rule   string     `json:"rule"`
	Reason string     `json:"reason"`
	Events []EventRef `json:"events,omitempty"` // the events that broke it, if any
}

// EventRef names one event of the log. Digest is bound by the quote;
// Type and Description are what the log says and are not.
type EventRef struct {
	Bank        string `json:"bank"`
	PCR         int    `json:"pcr"`
	Event       int    `json:"event"` // index in the log (0 is the first record)
	Type        string `json:"type"`
	Digest      string `json:"digest"`
	Description string `json:"description,omitempty"`
}

// Appraise decides whether the boot in `in` is allowed by one of profiles,
// tried in order; the first that allows it wins. A profile allows the boot
// when, for every (bank, PCR) it covers:
//   - the PCR was quoted (else RulePCR);
//   - its exact value, if given, equals the quoted value (else RuleValue);
//   - if it lists event digests: the PCR replayed to the quote
//     (Replayed.Verified; or it is quoted at its reset value and the log
//     never extends it), else RulePCR, since nothing binds its events; and
//     every event the log extends into it in that bank has a listed digest
//     (else each one is in Denial.Unrecognised);
//
// and every rule holds (secure_boot, boot_applications, kernels; see Rules
// and KernelEvents). PCRs and banks the profile does not cover are not
// examined.
//
// Callers decide what having no profile means: with an empty list Appraise
// denies (Verdict with no Denials), but the server is expected not to call
// it at all then. Appraise is pure and safe for concurrent use; it does not
// modify in or profiles.
func Appraise(in Input, profiles []Profile) Verdict {
	if len(profiles) == 0 {
		return Verdict{}
	}
	a := newAppraiser(&in)
	var denials []Denial
	for i := range profiles {
		p := &profiles[i]
		d, ok := a.check(p)
		if ok {
			return Verdict{Allowed: true, Profile: p.Name, Version: p.Version}
		}
		if denials == nil {
			denials = make([]Denial, 0, len(profiles))
		}
		denials = append(denials, d)
	}
	return Verdict{Denials: denials}
}

// appraiser holds what is shared by every profile of one Appraise call,
// computed once (or lazily, once).
type appraiser struct {
	in *Input
	l  *eventlog.Log
	// order holds the indices of the extending records grouped by PCR, in
	// log order within a PCR; start[i]:start[i+1] is PCR i's slice.
	order []int32
	start [pcrs.MaxIndex + 2]int32
	posOf []int32 // record index -> position in order, -1 if not extending

	quoted, verified, atReset [len(knownBanks)]uint32 // bit i: PCR i

	width  [len(knownBanks)]int    // per bank: hex digits of a digest
	hexes  [len(knownBanks)][]byte // per bank: width hex chars per position
	hexStr [len(knownBanks)]string // per bank: hexes as one string, for EventRef.Digest
	desc   []string
	descOK []bool
	kern   [len(knownBanks)]*kernelInfo
	// unrec collects the current profile's unrecognised events (bank
	// slot, position), so that its Denial gets one exact allocation.
	unrec []slotPos
}

type slotPos struct {
	slot int32
	pos  int32
}

type kernelInfo struct {
	events []int
	source string
	why    string
}

func newAppraiser(in *Input) *appraiser {
	a := &appraiser{in: in, l: in.Log}
	for alg, m := range in.Quoted {
		if s := bankSlot(alg); s >= 0 {
			for i := range m {
				if i >= 0 && i <= pcrs.MaxIndex {
					a.quoted[s] |= 1 << i
				}
			}
		}
	}
	// Without both the log and its replay, no event is bound to anything.
	if a.l == nil || in.Replayed == nil {
		return a
	}
	for alg, idx := range in.Replayed.Verified {
		if s := bankSlot(alg); s >= 0 {
			a.verified[s] = mask(idx) & a.quoted[s]
		}
	}
	for alg, idx := range in.Replayed.AtReset {
		if s := bankSlot(alg); s >= 0 {
			a.atReset[s] = mask(idx) & a.quoted[s]
		}
	}
	// Group extending records by PCR (a counting sort).
	var count [pcrs.MaxIndex + 1]int32
	n := 0
	for i := range a.l.Events {
		if e := &a.l.Events[i]; extends(e) {
			count[e.PCR]++
			n++
		}
	}
	for i := 0; i <= pcrs.MaxIndex; i++ {
		a.start[i+1] = a.start[i] + count[i]
	}
	a.order = make([]int32, n)
	a.posOf = make([]int32, len(a.l.Events))
	next := a.start
	for i := range a.l.Events {
		a.posOf[i] = -1
		if e := &a.l.Events[i]; extends(e) {
			a.order[next[e.PCR]] = int32(i)
			a.posOf[i] = next[e.PCR]
			next[e.PCR]++
		}
	}
	return a
}

func mask(idx []int) uint32 {
	var m uint32
	for _, i := range idx {
		if i >= 0 && i <= pcrs.MaxIndex {
			m |= 1 << i
		}
	}
	return m
}

// hexAt returns the lowercase hex digest of the record at position pos in
// bank slot s, computed for all records of the bank on first use. A record
// without a digest of the right size gets 'x's, which match nothing.
func (a *appraiser) hexAt(s int, alg pcrs.Alg, pos int32) []byte {
	w := a.width[s]
	if a.hexes[s] == nil {
		w = 2 * alg.Size()
		a.width[s] = w
		buf := make([]byte, len(a.order)*w)
		for p, idx := range a.order {
			dst := buf[p*w : (p+1)*w]
			if d := a.l.Events[idx].Digests[alg]; len(d) == alg.Size() {
				hex.Encode(dst, d)
			} else {
				for j := range dst {
					dst[j] = 'x'
				}
			}
		}
		a.hexes[s] = buf
	}
	return a.hexes[s][int(pos)*w : int(pos+1)*w]
}

func (a *appraiser) ref(s int, alg pcrs.Alg, pos int32) EventRef {
	idx := a.order[pos]
	e := &a.l.Events[idx]
	a.hexAt(s, alg, pos) // computes the bank's digests if needed
	if a.hexStr[s] == "" {
		a.hexStr[s] = string(a.hexes[s]) // one allocation; every Digest is a substring
	}
	w := int32(a.width[s])
	if a.desc == nil {
		a.desc = make([]string, len(a.l.Events))
		a.descOK = make([]bool, len(a.l.Events))
	}
	if !a.descOK[idx] {
		a.desc[idx] = describe(a.l, e)
		a.descOK[idx] = true
	}
	return EventRef{Bank: alg.String(), PCR: int(e.PCR), Event: e.Index, Type: e.Type.String(),
		Digest: a.hexStr[s][pos*w : (pos+1)*w], Description: a.desc[idx]}
}

func (a *appraiser) kernels(s int, alg pcrs.Alg) *kernelInfo {
	if a.kern[s] == nil {
		k := &kernelInfo{why: "no verified event log"}
		if a.l != nil {
			v := a.verified[s]
			k.events, k.source, k.why = kernelEvents(a.l, alg, func(i int) bool { return v&(1<<i) != 0 })
		}
		a.kern[s] = k
	}
	return a.kern[s]
}

// check appraises one profile; ok means it allows the boot.
func (a *appraiser) check(p *Profile) (d Denial, ok bool) {
	d = Denial{Profile: p.Name, Version: p.Version}
	a.unrec = a.unrec[:0]
	fail := func(rule, reason string, ev []EventRef) {
		d.Failed = append(d.Failed, Failure{Rule: rule, Reason: reason, Events: ev})
	}
	if len(p.PCRs) == 0 && p.Rules.empty() {
		fail(RuleProfile, "the profile checks nothing", nil)
	}
	banks := 0
	for s, alg := range knownBanks {
		bank, present := p.PCRs[alg]
		if !present {
			continue
		}
		banks++
		n := 0
		for i := 0; i <= pcrs.MaxIndex; i++ {
			if e, ok := bank[i]; ok {
				n++
				a.checkPCR(s, alg, i, &e, fail)
			}
		}
		if n == 0 || n != len(bank) {
			fail(RuleProfile, fmt.Sprintf("%s: a PCR index is outside 0..%d or none is given", alg, pcrs.MaxIndex), nil)
		}
	}
	if banks != len(p.PCRs) {
		fail(RuleProfile, "pcrs: unknown bank", nil)
	}
	if len(a.unrec) > 0 {
		d.Unrecognised = make([]EventRef, len(a.unrec))
		for i, u := range a.unrec {
			d.Unrecognised[i] = a.ref(int(u.slot), knownBanks[u.slot], u.pos)
		}
	}

	switch p.Rules.SecureBoot {
	case "":
	case SecureBootRequired:
		switch st := a.in.SecureBoot; {
		case st == nil:
			fail(RuleSecureBoot, "Secure Boot state unknown (not established)", nil)
		case st.Mode == eventlog.SecureBootDisabled:
			fail(RuleSecureBoot, "Secure Boot is disabled", nil)
		case st.Mode != eventlog.SecureBootEnabled:
			fail(RuleSecureBoot, "Secure Boot state unknown: "+st.Why, nil)
		}
	default:
		fail(RuleProfile, fmt.Sprintf("rules.secure_boot %q is not %q", clean(p.Rules.SecureBoot, 32), SecureBootRequired), nil)
	}

	a.checkSet(RuleBootApplications, p.Rules.BootApplications, fail, func(s int, alg pcrs.Alg, set map[string]Event) (string, []EventRef) {
		const pcr = 4
		if a.verified[s]&(1<<pcr) == 0 {
			if a.atReset[s]&(1<<pcr) != 0 {
				return "", nil // quoted at reset and never extended: no application ran
			}
			return fmt.Sprintf("%s PCR4 is not verified against the quote, so its boot applications are not trusted", alg), nil
		}
		var bad []EventRef
		n := 0
		for pos := a.start[pcr]; pos < a.start[pcr+1]; pos++ {
			if checkedType(a.l.Events[a.order[pos]].Type) {
				continue
			}
			n++
			if _, ok := set[string(a.hexAt(s, alg, pos))]; !ok {
				bad = append(bad, a.ref(s, alg, pos))
			}
		}
		if len(bad) > 0 {
			return fmt.Sprintf("%s: %d of %d boot applications not in the list", alg, len(bad), n), bad
		}
		return "", nil
	})
	a.checkSet(RuleKernels, p.Rules.Kernels, fail, func(s int, alg pcrs.Alg, set map[string]Event) (string, []EventRef) {
		k := a.kernels(s, alg)
		if len(k.events) == 0 {
			return fmt.Sprintf("%s: no kernel measurement recognised: %s", alg, k.why), nil
		}
		var bad []EventRef
		for _, idx := range k.events {
			pos := a.posOf[idx]
			if _, ok := set[string(a.hexAt(s, alg, pos))]; !ok {
				bad = append(bad, a.ref(s, alg, pos))
			}
		}
		if len(bad) > 0 {
			return fmt.Sprintf("%s: kernel not in the list (found by %s)", alg, k.source), bad
		}
		return "", nil
	})
	return d, len(d.Failed) == 0 && len(d.Unrecognised) == 0
}

func (a *appraiser) checkSet(rule string, m map[pcrs.Alg]map[string]Event, fail func(string, string, []EventRef),
	one func(s int, alg pcrs.Alg, set map[string]Event) (string, []EventRef)) {
	n := 0
	for s, alg := range knownBanks {
		set, ok := m[alg]
		if !ok {
			continue
		}
		n++
		if len(set) == 0 {
			fail(RuleProfile, fmt.Sprintf("rules.%s.%s is empty", rule, alg), nil)
			continue
		}
		if reason, ev := one(s, alg, set); reason != "" {
			fail(rule, reason, ev)
		}
	}
	if n != len(m) {
		fail(RuleProfile, fmt.Sprintf("rules.%s: unknown bank", rule), nil)
	}
}

func (a *appraiser) checkPCR(s int, alg pcrs.Alg, i int, e *PCR, fail func(string, string, []EventRef)) {
	bit := uint32(1) << i
	if a.quoted[s]&bit == 0 {
		fail(RulePCR, fmt.Sprintf("%s PCR%d is in the profile but was not quoted", alg, i), nil)
		return
	}
	if e.Value == "" && len(e.Events) == 0 {
		fail(RuleProfile, fmt.Sprintf("%s PCR%d: neither a value nor events", alg, i), nil)
		return
	}
	if e.Value != "" {
		q, _ := a.in.Quoted.Get(alg, i)
		var buf [2 * 64]byte
		if len(q) > 64 || string(buf[:hex.Encode(buf[:], q)]) != e.Value {
			fail(RuleValue, fmt.Sprintf("%s PCR%d is %s, the profile wants %s", alg, i, short(hexLower(q)), short(e.Value)), nil)
		}
	}
	if len(e.Events) == 0 {
		return
	}
	switch {
	case a.verified[s]&bit != 0:
		for pos := a.start[i]; pos < a.start[i+1]; pos++ {
			if _, ok := e.Events[string(a.hexAt(s, alg, pos))]; !ok {
				a.unrec = append(a.unrec, slotPos{int32(s), pos})
			}
		}
	case a.atReset[s]&bit != 0:
		// Quoted at its reset value and the log never extends it: no
		// event to recognise, and none happened.
	default:
		fail(RulePCR, fmt.Sprintf("%s PCR%d: the event log does not replay to the quoted value, so its events are not trusted", alg, i), nil)
	}
}

func short(h string) string {
	if len(h) > 16 {
		return h[:16] + "..."
	}
	return h
}

// Bounds of String, so that a verdict fits one log line.
const (
	lineProfiles = 5    // profiles shown
	lineEvents   = 3    // events shown per list
	lineDesc     = 40   // bytes of a description shown
	lineMax      = 4096 // bytes of the whole line
)

// String renders the verdict on one line (no newline; bounded: at most 5
// profiles and as many as fit in 4096 bytes, 3 events per list, 40 bytes
// of each description, digests cut to 16 hex digits). The JSON form has
// everything.
func (v Verdict) String() string {
	if v.Allowed {
		return fmt.Sprintf("allowed by profile %q version %d", v.Profile, v.Version)
	}
	if len(v.Denials) == 0 {
		return "denied: no profile to appraise against"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "denied by %d profile(s): ", len(v.Denials))
	for i, d := range v.Denials {
		ds := d.String()
		// Keep room for the "+N more" tail; the first denial is always shown.
		if i == lineProfiles || (i > 0 && b.Len()+3+len(ds) > lineMax-32) {
			fmt.Fprintf(&b, " | +%d more profile(s)", len(v.Denials)-i)
			break
		}
		if i > 0 {
			b.WriteString(" | ")
		}
		b.WriteString(ds)
	}
	return capLine(b.String())
}

// capLine cuts a line to lineMax bytes at a rune boundary.
func capLine(s string) string {
	const more = " ...(truncated)"
	if len(s) <= lineMax {
		return s
	}
	cut := lineMax - len(more)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + more
}

// String renders one denial on one bounded line.
func (d Denial) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%q version %d: ", d.Profile, d.Version)
	var parts []string
	if n := len(d.Unrecognised); n > 0 {
		parts = append(parts, fmt.Sprintf("%d unrecognised event(s) %s", n, refsString(d.Unrecognised)))
	}
	for _, f := range d.Failed {
		s := f.Rule + ": " + clean(f.Reason, 200)
		if len(f.Events) > 0 {
			s += " " + refsString(f.Events)
		}
		parts = append(parts, s)
	}
	b.WriteString(strings.Join(parts, "; "))
	return capLine(b.String())
}

func refsString(refs []EventRef) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, r := range refs {
		if i == lineEvents {
			fmt.Fprintf(&b, ", +%d more", len(refs)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(r.String())
	}
	b.WriteByte(']')
	return b.String()
}

// String renders the event as "sha256 PCR4 #23 EV_EFI_BOOT_SERVICES_APPLICATION
// 1a2b3c4d5e6f7a8b... <description>", bounded.
func (r EventRef) String() string {
	s := fmt.Sprintf("%s PCR%d #%d %s %s", clean(r.Bank, 16), r.PCR, r.Event, clean(r.Type, MaxType), short(clean(r.Digest, 128)))
	if r.Description != "" {
		s += " " + clean(r.Description, lineDesc)
	}
	return s
}
