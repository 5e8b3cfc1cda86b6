package eventlog

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// build returns a sha256 log of the given (pcr, type, data) events and the
// values a TPM that measured them would hold.
type ev struct {
	pcr  uint32
	typ  EventType
	data string
}

func build(t *testing.T, events ...ev) (*Log, pcrs.Values) {
	t.Helper()
	b, err := NewBuilder(pcrs.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		b.Extend(e.pcr, e.typ, []byte(e.data))
	}
	if b.Err() != nil {
		t.Fatal(b.Err())
	}
	l, err := Parse(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	v, err := l.Replay()
	if err != nil {
		t.Fatal(err)
	}
	return l, v
}

func TestMismatchNamesEvent(t *testing.T) {
	a := ev{4, EvEFIBootServicesApp, "shim"}
	b := ev{4, EvEFIBootServicesApp, "grub"}
	c := ev{4, EvEFIBootServicesApp, "kernel"}
	x := ev{4, EvEFIBootServicesApp, "evil"}
	sep := ev{4, EvSeparator, "\x00\x00\x00\x00"}
	tests := []struct {
		name     string
		log, tpm []ev
		cause    MismatchCause
		event    int // index of the event named
		want     []string
	}{
		{"extra events at the end", []ev{a, b, c}, []ev{a, b}, CauseExtraEvents, 3,
			[]string{"sha256 PCR4: the TPM did not measure the log's events from event 3 EV_EFI_BOOT_SERVICES_APPLICATION", "sha256 digest "}},
		{"nothing measured", []ev{a, b}, nil, CauseExtraEvents, 1, []string{"from event 1 "}},
		{"inserted event", []ev{a, x, b, c}, []ev{a, b, c}, CauseUnmeasuredEvent, 2,
			[]string{"sha256 PCR4: the TPM did not measure event 2 EV_EFI_BOOT_SERVICES_APPLICATION", "the log without it replays"}},
		{"only event differs", []ev{{7, EvSeparator, "\x00\x00\x00\x00"}}, []ev{{7, EvSeparator, "\xff\xff\xff\xff"}}, CauseOnlyEvent, 1,
			[]string{"sha256 PCR7: its only event, event 1 EV_SEPARATOR separator", "; quoted ", ", replayed "}},
		{"changed event in the middle", []ev{a, x, c, sep}, []ev{a, b, c, sep}, CauseUnexplained, 4,
			[]string{"no single event explains it", "at or before event 4 EV_SEPARATOR separator", "; quoted ", ", replayed "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, _ := build(t, tt.log...)
			var quoted pcrs.Values
			if len(tt.tpm) > 0 {
				_, quoted = build(t, tt.tpm...)
			} else {
				quoted = pcrs.Values{}
			}
			idx := 4
			if tt.log[0].pcr == 7 {
				idx = 7
			}
			if _, ok := quoted.Get(pcrs.SHA256, idx); !ok {
				quoted.Set(pcrs.SHA256, idx, make([]byte, 32))
			}
			_, err := VerifyAgainst(l, quoted)
			var me *MismatchError
			if !errors.As(err, &me) || len(me.Mismatches) != 1 {
				t.Fatalf("err = %v", err)
			}
			m := me.Mismatches[0]
			if m.Cause != tt.cause || m.Event == nil || m.Event.Index != tt.event {
				t.Fatalf("cause %d event %+v, want %d event %d: %s", m.Cause, m.Event, tt.cause, tt.event, err)
			}
			msg := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("%q does not say %q", msg, w)
				}
			}
			if strings.Count(msg, "does not replay") != 1 || strings.Contains(msg, "\n") {
				t.Errorf("not one line without repetition: %q", msg)
			}
			q, _ := quoted.Get(pcrs.SHA256, idx)
			if strings.Contains(msg, "; quoted ") && !strings.Contains(msg, "; quoted "+hex.EncodeToString(q)) {
				t.Errorf("%q does not show the quoted value in hex", msg)
			}
		})
	}
}

// TestMismatchOneClausePerPCR: two mismatched PCRs give two clauses, each
// naming its PCR once.
func TestMismatchOneClausePerPCR(t *testing.T) {
	l, _ := build(t, ev{4, EvEFIBootServicesApp, "a"}, ev{5, EvEFIAction, "b"}, ev{4, EvEFIBootServicesApp, "c"})
	_, quoted := build(t, ev{4, EvEFIBootServicesApp, "a"}, ev{5, EvEFIAction, "z"})
	_, err := VerifyAgainst(l, quoted)
	msg := fmt.Sprint(err)
	if strings.Count(msg, "sha256 PCR4:") != 1 || strings.Count(msg, "sha256 PCR5:") != 1 || strings.Count(msg, "sha256 PCR") != 2 {
		t.Fatalf("%q", msg)
	}
}

// TestRealLogTamperedEventNamed: a real firmware log whose last PCR4 event
// (an EV_EFI_BOOT_SERVICES_APPLICATION, whose digest the log alone cannot
// check) has a changed digest is refused naming that event; one with an
// EV_EFI_ACTION whose data was edited is refused by the digest check,
// naming the record.
func TestRealLogTamperedEventNamed(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(realDir(t), "eventlogs", "keylime", "binary_bios_measurements-secureboot.bin"))
	if err != nil {
		t.Skip(err)
	}
	l, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	quoted, err := l.Replay() // what the TPM held
	if err != nil {
		t.Fatal(err)
	}
	var last *Event
	for i := range l.Events {
		if e := &l.Events[i]; e.PCR == 4 && e.Type == EvEFIBootServicesApp {
			last = e
		}
	}
	if last == nil {
		t.Fatal("no PCR4 application event")
	}
	tampered := bytes.Clone(raw)
	d := last.Digests[pcrs.SHA256]
	at := last.Offset + bytes.Index(raw[last.Offset:], d)
	tampered[at] ^= 0xff
	tl, err := Parse(tampered)
	if err != nil {
		t.Fatal(err)
	}
	_, err = VerifyAgainst(tl, quoted)
	want := "sha256 PCR4: "
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), fmt.Sprintf("event %d EV_EFI_BOOT_SERVICES_APPLICATION", last.Index)) {
		t.Fatalf("err = %v", err)
	}
	t.Log(err)

	// Edit the data of an EV_EFI_ACTION record.
	for i := range l.Events {
		e := &l.Events[i]
		if e.Type != EvEFIAction || len(e.Data) == 0 {
			continue
		}
		edited := bytes.Clone(raw)
		at := e.Offset + bytes.Index(raw[e.Offset:], e.Data)
		edited[at] ^= 0x20
		el, err := Parse(edited)
		if err != nil {
			t.Fatal(err)
		}
		_, err = VerifyAgainst(el, quoted)
		if !errors.Is(err, ErrEventTampered) || !strings.Contains(err.Error(), fmt.Sprintf("event %d (PCR%d EV_EFI_ACTION)", e.Index, e.PCR)) {
			t.Fatalf("err = %v", err)
		}
		return
	}
	t.Fatal("no EV_EFI_ACTION event")
}
