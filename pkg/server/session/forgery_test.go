package session_test

import (
	"os"
	"testing"

	"github.com/tpmid/tpmid/internal/testmachine"
	"github.com/tpmid/tpmid/internal/tpmtest"
	"github.com/tpmid/tpmid/pkg/agent"
	"github.com/tpmid/tpmid/pkg/common/eventlog"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/server/appraise"
	"github.com/tpmid/tpmid/pkg/server/session"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// root is what an attacker with root on a booted machine can do to PCR7 and
// to the event log file the unmodified agent plugin sends: extend PCR7 at
// locality 0, and rewrite any record's type, name or data.
type root struct {
	t   *testing.T
	m   *testmachine.Machine
	log *eventlog.Log
	out []eventlog.Event // the log as root will write it
}

func asRoot(t *testing.T, m *testmachine.Machine) *root {
	t.Helper()
	data, err := os.ReadFile(m.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	l, err := eventlog.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return &root{t: t, m: m, log: l, out: append([]eventlog.Event(nil), l.Events[1:]...)}
}

// find returns the position in r.out of the first PCR7 record of typ
// (and variable name, when name is not "").
func (r *root) find(typ eventlog.EventType, name string) int {
	for i, e := range r.out {
		if e.PCR != 7 || e.Type != typ {
			continue
		}
		if name == "" {
			return i
		}
		if v, err := eventlog.ParseEFIVariable(e.Data); err == nil && v.Name == name {
			return i
		}
	}
	r.t.Fatalf("no PCR7 %s %s record", typ, name)
	return -1
}

// extend7 extends PCR7 with the digests of a record of typ and data, and
// appends that record to the log.
func (r *root) extend7(typ eventlog.EventType, data []byte) {
	d := map[pcrs.Alg][]byte{}
	for _, a := range r.log.Banks {
		h, _ := a.New()
		h.Write(data)
		d[a] = h.Sum(nil)
	}
	if err := tpmtest.Extend(r.m.TPM, 7, d); err != nil {
		r.t.Fatal(err)
	}
	r.out = append(r.out, eventlog.Event{PCR: 7, Type: typ, Digests: d, Data: data})
}

// write re-encodes the log with the records in r.out, digests unchanged.
func (r *root) write() {
	b, err := eventlog.NewBuilder(r.log.SpecID.Algorithms...)
	if err != nil {
		r.t.Fatal(err)
	}
	for _, e := range r.out {
		if err := b.ExtendDigest(e.PCR, e.Type, e.Digests, e.Data); err != nil {
			r.t.Fatal(err)
		}
	}
	if err := os.WriteFile(r.m.LogPath, b.Bytes(), 0o600); err != nil {
		r.t.Fatal(err)
	}
}

var sbOn = eventlog.EFIVariableData(eventlog.EFIGlobalVariable, "SecureBoot", []byte{1})

// TestSecureBootForgery: a machine boots with Secure Boot off; root forges
// PCR7 and the log so that the log still replays to the quote, and the
// unmodified agent sends it. Each forgery must be refused with the reason
// that names it; none may yield secureboot:enabled. The controls show the
// same machine honestly admitted, so the refusals come from the forgery.
func TestSecureBootForgery(t *testing.T) {
	tests := []struct {
		name   string
		boot   testmachine.BootFunc
		forge  func(r *root)
		reason verify.Reason
		sb     string // selector value when admitted
	}{
		{name: "control: Secure Boot off", boot: testmachine.UEFIBoot(false), sb: "disabled"},
		{name: "control: Secure Boot on", boot: testmachine.UEFIBoot(true), sb: "enabled"},
		{name: "control: legacy boot", boot: testmachine.Boot, sb: ""},
		// Renaming or re-GUIDing changes the record's data, which its
		// digest (extended by firmware) no longer matches.
		{name: "fake record appended, real one renamed", boot: testmachine.UEFIBoot(false), reason: session.ReasonEventLogTampered,
			forge: func(r *root) {
				i := r.find(eventlog.EvEFIVariableDriverConf, "SecureBoot")
				r.out[i].Data = eventlog.EFIVariableData(eventlog.EFIGlobalVariable, "SecureBooX", []byte{0})
				r.extend7(eventlog.EvEFIVariableDriverConf, sbOn)
			}},
		{name: "fake record appended, real one relabelled EV_EFI_ACTION", boot: testmachine.UEFIBoot(false), reason: session.ReasonEventLogPCR7,
			forge: func(r *root) {
				r.out[r.find(eventlog.EvEFIVariableDriverConf, "SecureBoot")].Type = eventlog.EvEFIAction
				r.extend7(eventlog.EvEFIVariableDriverConf, sbOn)
			}},
		{name: "fake record appended, real one relabelled authority", boot: testmachine.UEFIBoot(false), reason: session.ReasonEventLogPCR7,
			forge: func(r *root) {
				r.out[r.find(eventlog.EvEFIVariableDriverConf, "SecureBoot")].Type = eventlog.EvEFIVariableAuthority
				r.extend7(eventlog.EvEFIVariableDriverConf, sbOn)
			}},
		{name: "fake record appended, real one with another vendor GUID", boot: testmachine.UEFIBoot(false), reason: session.ReasonEventLogTampered,
			forge: func(r *root) {
				i := r.find(eventlog.EvEFIVariableDriverConf, "SecureBoot")
				copy(r.out[i].Data, eventlog.EFIImageSecurityDBID[:])
				r.extend7(eventlog.EvEFIVariableDriverConf, sbOn)
			}},
		{name: "separator relabelled, fake record and a new separator appended", boot: testmachine.UEFIBoot(false), reason: session.ReasonEventLogPCR7,
			forge: func(r *root) {
				r.out[r.find(eventlog.EvEFIVariableDriverConf, "SecureBoot")].Type = eventlog.EvEFIVariableAuthority
				r.out[r.find(eventlog.EvSeparator, "")].Type = eventlog.EvEFIAction
				r.extend7(eventlog.EvEFIVariableDriverConf, sbOn)
				r.extend7(eventlog.EvSeparator, []byte{0, 0, 0, 0})
			}},
		{name: "legacy boot: fake record appended", boot: testmachine.Boot, reason: session.ReasonEventLogPCR7,
			forge: func(r *root) { r.extend7(eventlog.EvEFIVariableDriverConf, sbOn) }},
		{name: "two conflicting SecureBoot records", boot: testmachine.UEFIBoot(false), reason: session.ReasonEventLogPCR7,
			forge: func(r *root) { r.extend7(eventlog.EvEFIVariableDriverConf, sbOn) }},
		{name: "SecureBoot data flipped 00 to 01", boot: testmachine.UEFIBoot(false), reason: session.ReasonEventLogTampered,
			forge: func(r *root) {
				i := r.find(eventlog.EvEFIVariableDriverConf, "SecureBoot")
				r.out[i].Data = append([]byte(nil), sbOn...)
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := testmachine.NewWith(t, testmachine.Options{Boot: tc.boot})
			f := &fixture{Machine: m, cfg: agent.Config{EKCertificatePath: m.EKCertPath, Hostname: "node-1"}}
			if tc.forge != nil {
				r := asRoot(t, m)
				tc.forge(r)
				r.write()
			}
			res, err := run(t, f, f.policy(t, appraise.EKPolicyCert, f.TrustDir), hooks{})
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("honest machine refused: %v", err)
				}
				if got := selectorValue(res.Selectors, "secureboot"); got != tc.sb {
					t.Errorf("secureboot selector %q, want %q (%v)", got, tc.sb, res.Selectors)
				}
				return
			}
			if err == nil {
				t.Fatalf("forgery admitted with selectors %v", res.Selectors)
			}
			if got := verify.ReasonOf(err); got != tc.reason {
				t.Errorf("refused as %q, want %q: %v", got, tc.reason, err)
			}
		})
	}
}

func selectorValue(sel []string, key string) string {
	for _, s := range sel {
		if len(s) > len(key) && s[:len(key)+1] == key+":" {
			return s[len(key)+1:]
		}
	}
	return ""
}
