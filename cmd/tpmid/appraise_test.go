package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tpmid/tpmid/internal/realdata"
	"github.com/tpmid/tpmid/pkg/common/boundedfile"
	"github.com/tpmid/tpmid/pkg/common/eventlog"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/server/profile"
	"github.com/tpmid/tpmid/pkg/server/store"
)

// Real event logs (under the real-evidence folder).
const (
	logArch  = "eventlogs/go-tpm-tools/arch-linux-workstation.bin" // sha256, Secure Boot off
	logArch2 = "eventlogs/tpm2-tools/event-arch-linux.bin"         // the same workstation, another kernel (vmlinuz-linux-lts)
	logGDC   = "eventlogs/go-tpm-tools/gdc-host.bin"               // another machine: a Dell server
)

func realLogPath(t *testing.T, rel string) string {
	t.Helper()
	return realdata.Path(t, rel)
}

// TestMain lets a test run the real main (exit status and stderr) by
// re-executing the test binary with TPMID_TEST_MAIN_ARGS set.
func TestMain(m *testing.M) {
	if a := os.Getenv("TPMID_TEST_MAIN_ARGS"); a != "" {
		var args []string
		if err := json.Unmarshal([]byte(a), &args); err != nil {
			panic(err)
		}
		os.Args = append([]string{"tpmid"}, args...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runMain runs tpmid args in a child process: stdout, stderr, exit status.
func runMain(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	a, _ := json.Marshal(args)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "TPMID_TEST_MAIN_ARGS="+string(a))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()
}

func parseAppraise(t *testing.T, out string) appraiseJSON {
	t.Helper()
	var v appraiseJSON
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return v
}

// wantUnrecognised computes, independently of profile.Appraise, the events
// of log rel that profile p does not list: every extend into a PCR whose
// digests p lists (sha256, PCRs 0-9) with a digest not among them.
func wantUnrecognised(t *testing.T, rel string, p *profile.Profile) []profile.EventRef {
	t.Helper()
	b, err := boundedfile.Read(realLogPath(t, rel), 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	l, err := eventlog.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	var out []profile.EventRef
	for _, e := range l.Events {
		if e.Type == eventlog.EvNoAction || e.PCR > 9 {
			continue
		}
		allowed := p.PCRs[pcrs.SHA256][int(e.PCR)].Events
		if len(allowed) == 0 {
			continue
		}
		d := hex.EncodeToString(e.Digests[pcrs.SHA256])
		if _, ok := allowed[d]; !ok {
			out = append(out, profile.EventRef{Bank: "sha256", PCR: int(e.PCR), Event: e.Index, Type: e.Type.String(), Digest: d})
		}
	}
	return out
}

// TestProfilesCaptureAppraiseReal: a profile captured from a real log is
// stored as name@1; appraise allows that log (exit 0) and denies another
// boot (exit 1) naming every unrecognised event, against the stored
// profile, a --profile-file and a host's profiles.
func TestProfilesCaptureAppraiseReal(t *testing.T) {
	db := newDB(t)
	arch := realLogPath(t, logArch)
	out, err := runCmd(t, newProfilesCmd(), "capture", "--store", db, "--eventlog", arch, "--name", "arch-ws", "--pcrs", "0-9", "--boot-apps", "--kernels", "--secure-boot")
	if err != nil || out != "arch-ws@1\n" {
		t.Fatalf("capture: %v %q", err, out)
	}
	// Again: a new version.
	if out, err := runCmd(t, newProfilesCmd(), "capture", "--store", db, "--eventlog", arch, "--name", "arch-ws", "--pcrs", "0-9", "--boot-apps", "--kernels"); err != nil || out != "arch-ws@2\n" {
		t.Fatalf("second capture: %v %q", err, out)
	}
	file := filepath.Join(t.TempDir(), "arch.json")
	if out, err := runCmd(t, newProfilesCmd(), "capture", "--eventlog", arch, "--name", "arch-file", "--pcrs", "0-9", "--out", file); err != nil {
		t.Fatalf("capture --out: %v %s", err, out)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	fileProfile, err := profile.ParseProfile(b)
	if err != nil {
		t.Fatalf("--out wrote an invalid profile: %v", err)
	}
	var stored *store.Profile
	withStore(t, db, func(ctx context.Context, tx store.Tx) (err error) {
		stored, err = tx.Profile(ctx, "arch-ws")
		return err
	})
	storedProfile, err := profile.ParseProfile(stored.Body)
	if err != nil {
		t.Fatal(err)
	}
	if storedProfile.Rules.BootApplications == nil || storedProfile.Rules.Kernels == nil {
		t.Errorf("rules not captured: %+v", storedProfile.Rules)
	}
	runCmd(t, newHostsCmd(), "enroll", "--store", db, "--hostname", "ws1", "--ek-hash", hexOf('a'), "--group", "workstations")
	if out, err := runCmd(t, newProfilesCmd(), "assign", "arch-ws", "--group", "workstations", "--store", db); err != nil {
		t.Fatalf("%v %s", err, out)
	}

	tests := []struct {
		name       string
		log        string
		args       []string
		p          *profile.Profile
		allowed    string // profile name@version, "" for denied
		wantEvents []int  // event numbers of the unrecognised events, nil: computed by wantUnrecognised
		wantText   []string
	}{
		{name: "own log, stored", log: logArch, args: []string{"--profile", "arch-ws", "--pcrs", "0-9"}, allowed: "arch-ws@2"},
		{name: "own log, file", log: logArch, args: []string{"--profile-file", file, "--pcrs", "0-9"}, allowed: "arch-file"},
		{name: "own log, host", log: logArch, args: []string{"--host", "ws1", "--pcrs", "0-9"}, allowed: "arch-ws@2"},
		{name: "own log, fewer PCRs quoted", log: logArch, args: []string{"--profile", "arch-ws", "--pcrs", "0-7"}, p: storedProfile,
			wantText: []string{"failed pcr: sha256 PCR8 is in the profile but was not quoted"}},
		{name: "other kernel", log: logArch2, args: []string{"--profile", "arch-ws", "--pcrs", "0-9"}, p: storedProfile, wantEvents: []int{23},
			wantText: []string{"profile arch-ws@2:", "1 unrecognised event(s):", "PCR  EVENT  TYPE", "4    #23    EV_EFI_BOOT_SERVICES_APPLICATION  sha256:6c1b73563471cd9082ea3d149fa4668cd8f1a0c315531d4bf513bc5ede8939a5", `\vmlinuz-linux-lts`,
				"failed kernels: sha256: kernel not in the list"}},
		{name: "other machine, host", log: logGDC, args: []string{"--host", "ws1", "--pcrs", "0-9"}, p: storedProfile},
		{name: "other machine, file", log: logGDC, args: []string{"--profile-file", file, "--pcrs", "0-9"}, p: fileProfile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"--store", db, "--eventlog", realLogPath(t, tt.log)}, tt.args...)
			out, err := runCmd(t, newAppraiseCmd(), append(args, "--json")...)
			v := parseAppraise(t, out)
			if tt.allowed != "" {
				if err != nil || !v.Allowed || profileRef(profile.Profile{Name: v.Profile, Version: v.Version}) != tt.allowed || len(v.Denials) != 0 {
					t.Fatalf("want allowed by %s: %v\n%s", tt.allowed, err, out)
				}
				text, err := runCmd(t, newAppraiseCmd(), args...)
				if err != nil || !strings.Contains(text, "ALLOWED by profile "+tt.allowed) {
					t.Errorf("text: %v\n%s", err, text)
				}
				return
			}
			if !errors.Is(err, errDenied) || v.Allowed || len(v.Denials) != 1 {
				t.Fatalf("want denied (errDenied): %v\n%s", err, out)
			}
			var got []profile.EventRef
			for _, r := range v.Denials[0].Unrecognised {
				got = append(got, profile.EventRef{Bank: r.Bank, PCR: r.PCR, Event: r.Event, Type: r.Type, Digest: r.Digest})
			}
			want := wantUnrecognised(t, tt.log, tt.p)
			if tt.wantEvents != nil {
				var nums []int
				for _, r := range want {
					nums = append(nums, r.Event)
				}
				if !slices.Equal(nums, tt.wantEvents) {
					t.Errorf("reference computation found events %v, want %v", nums, tt.wantEvents)
				}
			}
			slices.SortFunc(got, func(a, b profile.EventRef) int { return a.Event - b.Event })
			if !slices.Equal(got, want) {
				t.Errorf("unrecognised %d events %+v\nwant %d %+v", len(got), got, len(want), want)
			}
			text, err := runCmd(t, newAppraiseCmd(), args...)
			if !errors.Is(err, errDenied) || !strings.Contains(text, "DENIED by 1 profile(s)") {
				t.Fatalf("text: %v\n%s", err, text)
			}
			for _, r := range want { // every unrecognised event is listed, in full
				if !strings.Contains(text, r.Type) || !strings.Contains(text, "#"+itoa(r.Event)+" ") || !strings.Contains(text, "sha256:"+r.Digest) {
					t.Errorf("text lacks event #%d %s %s", r.Event, r.Type, r.Digest)
				}
			}
			for _, s := range tt.wantText {
				if !strings.Contains(text, s) {
					t.Errorf("text lacks %q:\n%s", s, text)
				}
			}
		})
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

// TestAppraiseJSONForm: the documented keys of appraise --json.
func TestAppraiseJSONForm(t *testing.T) {
	file := filepath.Join(t.TempDir(), "p.json")
	if _, err := runCmd(t, newProfilesCmd(), "capture", "--eventlog", realLogPath(t, logArch), "--name", "p", "--out", file); err != nil {
		t.Fatal(err)
	}
	out, err := runCmd(t, newAppraiseCmd(), "--eventlog", realLogPath(t, logGDC), "--profile-file", file, "--json")
	if !errors.Is(err, errDenied) {
		t.Fatalf("%v\n%s", err, out)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &top); err != nil {
		t.Fatal(err)
	}
	if got, want := sortedKeysOf(top), []string{"allowed", "banks", "denials", "eventlog", "pcrs", "profiles", "secure_boot"}; !slices.Equal(got, want) {
		t.Errorf("keys %v, want %v", got, want)
	}
	var denials []map[string]json.RawMessage
	json.Unmarshal(top["denials"], &denials)
	if got := sortedKeysOf(denials[0]); !slices.Equal(got, []string{"profile", "unrecognised"}) && !slices.Equal(got, []string{"failed", "profile", "unrecognised"}) {
		t.Errorf("denial keys %v", got)
	}
	var refs []map[string]json.RawMessage
	json.Unmarshal(denials[0]["unrecognised"], &refs)
	for _, r := range refs {
		k := sortedKeysOf(r)
		if !slices.Equal(k, []string{"bank", "description", "digest", "event", "pcr", "type"}) && !slices.Equal(k, []string{"bank", "digest", "event", "pcr", "type"}) {
			t.Errorf("event keys %v", k)
		}
	}
	if string(top["secure_boot"]) != `"enabled"` && string(top["secure_boot"]) != `"disabled"` {
		t.Errorf("secure_boot %s", top["secure_boot"])
	}
}

// TestAppraiseRefused: input errors are one line, and a host without
// profiles is allowed as the server allows it.
func TestAppraiseRefused(t *testing.T) {
	db := newDB(t)
	runCmd(t, newHostsCmd(), "enroll", "--store", db, "--hostname", "bare", "--ek-hash", hexOf('a'))
	arch := realLogPath(t, logArch)
	out, err := runCmd(t, newAppraiseCmd(), "--store", db, "--eventlog", arch, "--host", "bare")
	if err != nil || !strings.Contains(out, "ALLOWED: host bare has no profile") {
		t.Errorf("host without profile: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--eventlog", arch}, "give --profile, --profile-file or --host"},
		{[]string{"--eventlog", arch, "--profile", "nosuch"}, `no profile "nosuch"`},
		{[]string{"--eventlog", arch, "--host", "nosuch"}, "no host nosuch"},
		{[]string{"--eventlog", arch, "--host", "bare", "--profile", "x"}, "drop --profile"},
		{[]string{"--eventlog", arch, "--profile", "x", "--bank", "sha384"}, "no complete sha384 bank"},
		{[]string{"--eventlog", arch, "--profile", "x", "--pcrs", "7-3"}, "--pcrs"},
		{[]string{"--eventlog", arch, "--profile-file", arch}, "--profile-file"},
	} {
		_, err := runCmd(t, newAppraiseCmd(), append([]string{"--store", db}, tc.args...)...)
		if err == nil || errors.Is(err, errDenied) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: %v, want one line with %q", tc.args, err, tc.want)
		}
	}
}

// TestAppraiseExitStatus: through main, allowed exits 0 and denied exits 1
// with the verdict on stdout and one line on stderr.
func TestAppraiseExitStatus(t *testing.T) {
	file := filepath.Join(t.TempDir(), "p.json")
	arch := realLogPath(t, logArch)
	if _, err := runCmd(t, newProfilesCmd(), "capture", "--eventlog", arch, "--name", "p", "--pcrs", "0-9", "--out", file); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := runMain(t, "appraise", "--eventlog", arch, "--profile-file", file, "--pcrs", "0-9")
	if code != 0 || stderr != "" || !strings.Contains(stdout, "ALLOWED by profile p") {
		t.Errorf("allowed: exit %d, stderr %q, stdout %q", code, stderr, stdout)
	}
	stdout, stderr, code = runMain(t, "appraise", "--eventlog", realLogPath(t, logArch2), "--profile-file", file, "--pcrs", "0-9")
	if code != 1 || !strings.Contains(stdout, "#23") || strings.Count(stderr, "\n") != 1 ||
		!strings.HasPrefix(stderr, "tpmid: boot denied by 1 profile(s): 1 unrecognised event(s)") {
		t.Errorf("denied: exit %d, stderr %q, stdout %q", code, stderr, stdout)
	}
	_, stderr, code = runMain(t, "appraise", "--eventlog", filepath.Join(t.TempDir(), "missing"), "--profile-file", file)
	if code != 1 || strings.Count(stderr, "\n") != 1 {
		t.Errorf("error: exit %d, stderr %q", code, stderr)
	}
}
