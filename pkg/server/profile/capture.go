package profile

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	"github.com/tpmid/tpmid/pkg/common/eventlog"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// ErrCapture: Capture cannot build a profile from this log and selection.
var ErrCapture = errors.New("cannot capture a profile")

// Option configures Capture.
type Option func(*captureConfig)

type captureConfig struct {
	values     pcrs.Values
	replay     bool
	secureBoot bool
	bootApps   bool
	kernels    bool
}

// WithValues pins the exact value of every selected PCR to its value in v
// (for the captured bank): e.g. a verified quote's values, or
// eventlog.Replayed.Values. A selected PCR the log extends but v lacks is
// an error; one the log never extends gets its reset value.
func WithValues(v pcrs.Values) Option { return func(c *captureConfig) { c.values = v } }

// WithReplayedValues pins the exact value of every selected PCR to the log's
// own replay (eventlog.Log.Replay). Prefer WithValues with a verified
// replay when the log needed a workaround (exit-boot-services-missing).
func WithReplayedValues() Option { return func(c *captureConfig) { c.replay = true } }

// RequireSecureBootIfEnabled sets rules.secure_boot to "required" when the
// log's PCR7 says Secure Boot was enabled (eventlog.SecureBoot); a PCR7 that
// breaks the firmware profile makes Capture fail.
func RequireSecureBootIfEnabled() Option { return func(c *captureConfig) { c.secureBoot = true } }

// WithBootApplications fills rules.boot_applications for the bank with the
// log's PCR4 boot applications (see Rules.BootApplications). PCR4 must be
// selected.
func WithBootApplications() Option { return func(c *captureConfig) { c.bootApps = true } }

// WithKernels fills rules.kernels for the bank with the log's kernel
// measurements as KernelEvents finds them among the selected PCRs; none is
// an error.
func WithKernels() Option { return func(c *captureConfig) { c.kernels = true } }

// Capture builds a profile named name from a known-good event log: for each
// PCR of pcrList, every digest the log extends into it in bank (EV_NO_ACTION
// records and the 0xFFFFFFFF trailer are never extended, so never listed),
// with the event type and the decoded description of its first occurrence.
// A selected PCR the log never extends is pinned to its reset value (zero;
// all ones for PCR17-22), so that a later boot extending it is noticed.
//
// The bank must be one the log carries for every record (not in
// Log.IncompleteBanks). Capture trusts the log: it is meant for a machine
// the operator vouches for. For a log an attestation just verified, use
// ProposedFrom, which keeps only what the quote bound.
func Capture(l *eventlog.Log, name string, bank pcrs.Alg, pcrList []int, opts ...Option) (*Profile, error) {
	var c captureConfig
	for _, o := range opts {
		o(&c)
	}
	if l == nil {
		return nil, fmt.Errorf("%w: no event log", ErrCapture)
	}
	if !slices.Contains(l.Banks, bank) || slices.Contains(l.IncompleteBanks, bank) {
		return nil, fmt.Errorf("%w: the log has no complete %s bank (banks %v, incomplete %v)", ErrCapture, bank, l.Banks, l.IncompleteBanks)
	}
	if len(pcrList) == 0 {
		return nil, fmt.Errorf("%w: no PCR selected", ErrCapture)
	}
	var sel uint32
	for _, i := range pcrList {
		if i < 0 || i > pcrs.MaxIndex {
			return nil, fmt.Errorf("%w: PCR %d is not in 0..%d", ErrCapture, i, pcrs.MaxIndex)
		}
		if sel&(1<<i) != 0 {
			return nil, fmt.Errorf("%w: PCR %d selected twice", ErrCapture, i)
		}
		sel |= 1 << i
	}
	values := c.values
	if c.replay {
		v, err := l.Replay()
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrCapture, err)
		}
		values = v
	}

	entries := make(map[int]PCR, len(pcrList))
	for i := range l.Events {
		e := &l.Events[i]
		if !extends(e) || sel&(1<<e.PCR) == 0 {
			continue
		}
		d, ok := e.Digests[bank]
		if !ok || len(d) != bank.Size() {
			return nil, fmt.Errorf("%w: event %d has no %s digest", ErrCapture, e.Index, bank)
		}
		ent := entries[int(e.PCR)]
		if ent.Events == nil {
			ent.Events = map[string]Event{}
		}
		k := hexLower(d)
		if _, seen := ent.Events[k]; !seen {
			ent.Events[k] = describeEvent(l, e)
		}
		entries[int(e.PCR)] = ent
	}
	for _, i := range pcrList {
		ent := entries[i]
		switch {
		case values != nil || c.replay:
			v, ok := values.Get(bank, i)
			if !ok && len(ent.Events) == 0 {
				v, ok = bank.ResetValue(i), true
			}
			if !ok || len(v) != bank.Size() {
				return nil, fmt.Errorf("%w: no %s value for PCR %d", ErrCapture, bank, i)
			}
			ent.Value = hexLower(v)
		case len(ent.Events) == 0:
			ent.Value = hexLower(bank.ResetValue(i))
		}
		entries[i] = ent
	}
	p := &Profile{Name: name, PCRs: map[pcrs.Alg]map[int]PCR{bank: entries}}

	if c.secureBoot {
		st, err := eventlog.SecureBoot(l)
		if err != nil {
			return nil, fmt.Errorf("%w: Secure Boot state: %v", ErrCapture, err)
		}
		if st.Mode == eventlog.SecureBootEnabled {
			p.Rules.SecureBoot = SecureBootRequired
		}
	}
	avail := func(i int) bool { return sel&(1<<i) != 0 }
	if c.bootApps {
		if !avail(4) {
			return nil, fmt.Errorf("%w: boot applications are in PCR4, which is not selected", ErrCapture)
		}
		set := map[string]Event{}
		for _, idx := range bootApplications(l, bank) {
			e := &l.Events[idx]
			if k := hexLower(e.Digests[bank]); !has(set, k) {
				set[k] = describeEvent(l, e)
			}
		}
		if len(set) == 0 {
			return nil, fmt.Errorf("%w: the log has no boot application in PCR4", ErrCapture)
		}
		p.Rules.BootApplications = map[pcrs.Alg]map[string]Event{bank: set}
	}
	if c.kernels {
		idx, _, why := kernelEvents(l, bank, avail)
		if len(idx) == 0 {
			return nil, fmt.Errorf("%w: no kernel measurement: %s", ErrCapture, why)
		}
		set := map[string]Event{}
		for _, i := range idx {
			e := &l.Events[i]
			if k := hexLower(e.Digests[bank]); !has(set, k) {
				set[k] = describeEvent(l, e)
			}
		}
		p.Rules.Kernels = map[pcrs.Alg]map[string]Event{bank: set}
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// ProposedFrom is the boot state just seen, as a profile an operator can
// approve: Capture of in.Log, per bank the quote covered, over the PCRs that
// replayed to the quote (Replayed.Verified) or that the quote shows at their
// reset value with no event (Replayed.AtReset), with secure_boot "required"
// when in.SecureBoot is enabled. Nothing the quote did not bind is proposed.
// It returns nil when there is no log or replay, nothing was verified, or
// name is not a valid profile name.
func ProposedFrom(in Input, name string) *Profile {
	if in.Log == nil || in.Replayed == nil {
		return nil
	}
	var out *Profile
	for _, bank := range knownBanks {
		list := append(slices.Clone(in.Replayed.Verified[bank]), in.Replayed.AtReset[bank]...)
		if len(list) == 0 {
			continue
		}
		slices.Sort(list)
		list = slices.Compact(list)
		// Not RequireSecureBootIfEnabled: that reads the log's PCR7, and
		// only the verified state counts here.
		p, err := Capture(in.Log, name, bank, list)
		if err != nil {
			return nil
		}
		if out == nil {
			out = p
			continue
		}
		out.PCRs[bank] = p.PCRs[bank]
	}
	if out != nil && in.SecureBoot != nil && in.SecureBoot.Mode == eventlog.SecureBootEnabled {
		out.Rules.SecureBoot = SecureBootRequired
	}
	return out
}

func has(m map[string]Event, k string) bool { _, ok := m[k]; return ok }

// extends reports whether a record is extended into a PCR (PFP 10.4.1:
// EV_NO_ACTION never is; the 0xFFFFFFFF trailer names no PCR).
func extends(e *eventlog.Event) bool {
	return e.Type != eventlog.EvNoAction && e.PCR != eventlog.TrailerPCR && e.PCR <= pcrs.MaxIndex
}

func describeEvent(l *eventlog.Log, e *eventlog.Event) Event {
	return Event{Type: clean(e.Type.String(), MaxType), Description: describe(l, e)}
}

// describe is the decoded summary of a record, cleaned and bounded; "" when
// its data does not decode. It is informational only.
func describe(l *eventlog.Log, e *eventlog.Event) string {
	d, err := l.Decode(e)
	if err != nil || d == nil {
		return ""
	}
	return clean(d.Summary(), MaxDescription)
}

// checkedTypes are the event types whose digest VerifyAgainst (through
// eventlog.CheckDigests) has checked against the record's data: such a
// record is what its data says. Every other PCR4 record counts as a boot
// application, whatever it is labelled, since a label is not bound by the
// quote.
func checkedType(t eventlog.EventType) bool {
	switch t {
	case eventlog.EvSeparator, eventlog.EvEFIAction, eventlog.EvEFIVariableDriverConf,
		eventlog.EvEFIVariableBoot, eventlog.EvEFIVariableBoot2, eventlog.EvEFIVariableAuthority:
		return true
	}
	return false
}

// bootApplications returns the indices (into l.Events) of PCR4's boot
// applications, in log order.
func bootApplications(l *eventlog.Log, bank pcrs.Alg) []int {
	var out []int
	for i := range l.Events {
		e := &l.Events[i]
		if e.PCR == 4 && extends(e) && !checkedType(e.Type) {
			out = append(out, i)
		}
	}
	return out
}

// Kernel sources, as reported by KernelEvents.
const (
	KernelsFromGRUB     = "grub-pcr9"     // GRUB's kernel file measurement in PCR9
	KernelsFromLastPCR4 = "last-boot-app" // the last PCR4 boot application
)

const (
	grubCmdline        = "kernel_cmdline: "
	grubCmdlineRHEL    = "grub_kernel_cmdline "
	grubLinuxEFIKernel = "grub_linuxefi Kernel"
)

// KernelEvents finds the kernel measurements of a boot in bank, using only
// PCRs for which avail is true (in Appraise: PCRs that replayed to the
// quote). It returns indices into l.Events, where they were found, and, when
// there are none, why.
//
//  1. GRUB (PCR8 and PCR9 available): GRUB measures every file it reads
//     into PCR9 as EV_IPL with the path as data, and the kernel command line
//     into PCR8 as EV_IPL "kernel_cmdline: <kernel path> <args>" (RHEL 8's
//     GRUB: "grub_kernel_cmdline <path> ..." and the kernel as
//     "grub_linuxefi Kernel"). The kernels are the PCR9 EV_IPL records whose
//     path is the first word of such a command line. Their digest is the
//     hash of the kernel file.
//  2. Otherwise (systemd-boot, a unified kernel image, shim or the firmware
//     starting an EFI-stub kernel, or PCR8/9 not quoted): the last boot
//     application in PCR4, i.e. the last image started through LoadImage.
//     Its digest is the image's Authenticode hash. With Secure Boot off,
//     GRUB starts the kernel without LoadImage; then the last boot
//     application is GRUB itself, and only source 1 names the kernel.
//
// Caveat: which record is "the kernel" comes from labels and data that the
// quote does not bind, and root can extend PCR4/8/9 after boot. A kernels
// rule is therefore as strong as the PCR lists next to it: pair it with
// rules.boot_applications or digest lists on PCR4 (and PCR8/9 for GRUB),
// so that any other image in those PCRs is refused anyway.
func KernelEvents(l *eventlog.Log, bank pcrs.Alg, avail func(pcr int) bool) (events []int, source, why string) {
	return kernelEvents(l, bank, avail)
}

func kernelEvents(l *eventlog.Log, bank pcrs.Alg, avail func(pcr int) bool) ([]int, string, string) {
	if avail(8) && avail(9) {
		var paths [][]byte
		for i := range l.Events {
			e := &l.Events[i]
			if e.PCR != 8 || e.Type != eventlog.EvIPL {
				continue
			}
			d := bytes.TrimRight(e.Data, "\x00")
			for _, pre := range []string{grubCmdline, grubCmdlineRHEL} {
				if rest, ok := bytes.CutPrefix(d, []byte(pre)); ok {
					path, _, _ := bytes.Cut(rest, []byte(" "))
					if len(path) > 0 {
						paths = append(paths, path)
					}
				}
			}
		}
		var out []int
		for i := range l.Events {
			e := &l.Events[i]
			if e.PCR != 9 || e.Type != eventlog.EvIPL {
				continue
			}
			d := bytes.TrimRight(e.Data, "\x00")
			if string(d) == grubLinuxEFIKernel || slices.ContainsFunc(paths, func(p []byte) bool { return bytes.Equal(p, d) }) {
				out = append(out, i)
			}
		}
		if len(out) > 0 {
			return out, KernelsFromGRUB, ""
		}
	}
	if !avail(4) {
		return nil, "", "PCR4 is not verified, and no GRUB kernel measurement in verified PCR8/PCR9"
	}
	apps := bootApplications(l, bank)
	if len(apps) == 0 {
		return nil, "", "no boot application in PCR4 and no GRUB kernel measurement in PCR8/PCR9"
	}
	return apps[len(apps)-1:], KernelsFromLastPCR4, ""
}
