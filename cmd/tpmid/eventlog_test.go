package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/tpmid/tpmid/internal/realdata"
	"github.com/tpmid/tpmid/pkg/common/eventlog"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

func realEventlogDir(t *testing.T) string {
	t.Helper()
	return realdata.Dir(t)
}

func runCmd(t *testing.T, cmd *cobra.Command, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

// TestEventlogReplayJSONReal: `tpmid eventlog replay --json` on real logs
// prints exactly {"banks", "events"} with the values of the collector's
// independent replay (REPLAYED_PCRS.json).
func TestEventlogReplayJSONReal(t *testing.T) {
	root := realEventlogDir(t)
	var ref struct {
		Logs map[string]struct {
			Events int       `json:"events"`
			PCRs   pcrs.JSON `json:"pcrs"`
		} `json:"logs"`
	}
	b, err := os.ReadFile(filepath.Join(root, "eventlogs", "REPLAYED_PCRS.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{
		"eventlogs/go-tpm-tools/gdc-host.bin",
		"eventlogs/tpm2-tss/binary_measurements_hcrtm.bin",
		"eventlogs/go-attestation/option_rom_eventlog.bin",
		"quotes/lenovo-t490-stm/eventlog",
	} {
		t.Run(name, func(t *testing.T) {
			out, err := runCmd(t, newEventlogReplayCmd(), "--json", filepath.Join(root, name))
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]json.RawMessage
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if len(got) != 2 {
				t.Fatalf("keys %v, want banks and events only", got)
			}
			var banks pcrs.JSON
			var events int
			if err := json.Unmarshal(got["banks"], &banks); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(got["events"], &events); err != nil {
				t.Fatal(err)
			}
			want := ref.Logs[name]
			if events != want.Events {
				t.Errorf("events = %d, want %d", events, want.Events)
			}
			for bank, m := range want.PCRs {
				if len(banks[bank]) != len(m) {
					t.Errorf("%s: %d PCRs, want %d", bank, len(banks[bank]), len(m))
				}
				for i, v := range m {
					if banks[bank][i] != v {
						t.Errorf("%s PCR%s = %s, want %s", bank, i, banks[bank][i], v)
					}
				}
			}
		})
	}
}

func TestEventlogShowReal(t *testing.T) {
	root := realEventlogDir(t)
	tests := []struct {
		log      string
		contains []string
	}{
		{"eventlogs/go-tpm-tools/arch-linux-workstation.bin", []string{"secure boot: disabled", "quirk: secureboot-variable-empty", "EV_EFI_VARIABLE_DRIVER_CONFIG"}},
		{"eventlogs/go-tpm-tools/debian-10.bin", []string{"secure boot: enabled", "format: legacy-sha1", "PCR7 authority records: [19 23]", "quirk: authority-digest-excludes-last-byte"}},
		{"eventlogs/go-attestation/option_rom_eventlog.bin", []string{"PCR-  EV_NO_ACTION", "quirk: pcr-0xffffffff-trailer"}},
		{"eventlogs/go-tpm-tools/gdc-host.bin", []string{"quirk: startup-locality", `"StartupLocality"`, "EV_EFI_BOOT_SERVICES_APPLICATION"}},
	}
	for _, tc := range tests {
		t.Run(tc.log, func(t *testing.T) {
			out, err := runCmd(t, newEventlogShowCmd(), filepath.Join(root, tc.log))
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tc.contains {
				if !strings.Contains(out, s) {
					t.Errorf("output lacks %q:\n%s", s, out)
				}
			}
		})
	}
	out, err := runCmd(t, newEventlogShowCmd(), "--json", filepath.Join(root, "eventlogs/go-tpm-tools/rhel8-uefi.bin"))
	if err != nil {
		t.Fatal(err)
	}
	var o struct {
		Events     []map[string]any `json:"events"`
		SecureBoot struct {
			Mode string `json:"mode"`
		} `json:"secure_boot"`
	}
	if err := json.Unmarshal([]byte(out), &o); err != nil {
		t.Fatal(err)
	}
	if len(o.Events) != 83 || o.SecureBoot.Mode != "enabled" {
		t.Errorf("%d events, secure boot %q", len(o.Events), o.SecureBoot.Mode)
	}
}

// TestEventlogCLIBuiltLog: a log written by the Builder replays through the
// CLI, and bad input is refused with the parser's named reason.
func TestEventlogCLIBuiltLog(t *testing.T) {
	dir := t.TempDir()
	b, err := eventlog.NewBuilder(pcrs.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	b.Extend(4, eventlog.EvEFIAction, []byte("Calling EFI Application from Boot Option"))
	good := filepath.Join(dir, "good.bin")
	if err := os.WriteFile(good, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCmd(t, newEventlogReplayCmd(), good)
	if err != nil || !strings.Contains(out, "sha256:\n   4: ") || !strings.Contains(out, "2 events") {
		t.Fatalf("%v\n%s", err, out)
	}
	bad := filepath.Join(dir, "bad.bin")
	if err := os.WriteFile(bad, b.Bytes()[:50], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := runCmd(t, newEventlogReplayCmd(), bad); !errors.Is(err, eventlog.ErrTruncated) {
		t.Fatalf("truncated: %v", err)
	}
	if _, err := runCmd(t, newEventlogShowCmd(), filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing file accepted")
	}
	// Registered on the root command.
	found := false
	for _, c := range rootCmd.Commands() {
		if c.Name() == "eventlog" && len(c.Commands()) == 2 {
			found = true
		}
	}
	if !found {
		t.Error("eventlog command not registered on rootCmd")
	}
}

// TestEventlogShowTampered: a record whose digest is not the hash of its
// data is named, and the forged Secure Boot state is not shown as enabled.
func TestEventlogShowTampered(t *testing.T) {
	b, _ := eventlog.NewBuilder(pcrs.SHA256)
	off := eventlog.EFIVariableData(eventlog.EFIGlobalVariable, "SecureBoot", []byte{0})
	on := eventlog.EFIVariableData(eventlog.EFIGlobalVariable, "SecureBoot", []byte{1})
	h := sha256.Sum256(off)
	if err := b.ExtendDigest(7, eventlog.EvEFIVariableDriverConf, map[pcrs.Alg][]byte{pcrs.SHA256: h[:]}, on); err != nil {
		t.Fatal(err)
	}
	b.Extend(7, eventlog.EvSeparator, []byte{0, 0, 0, 0})
	path := filepath.Join(t.TempDir(), "log.bin")
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCmd(t, newEventlogShowCmd(), path)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"TAMPERED: event 1 (PCR7 EV_EFI_VARIABLE_DRIVER_CONFIG)", "secure boot: error"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
	if strings.Contains(out, "secure boot: enabled") {
		t.Errorf("forged state shown:\n%s", out)
	}
}
