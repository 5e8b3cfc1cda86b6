package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/tpmid/tpmid/internal/realdata"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/server/session"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

func verifyReal(t *testing.T, rel string) string {
	t.Helper()
	return realdata.Path(t, rel)
}

// runVerify runs a fresh "tpmid verify ..." command tree (flag values of the
// package-level tree would leak between runs).
func runVerify(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := &cobra.Command{Use: "tpmid", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(newVerifyCmd())
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(append([]string{"verify"}, args...))
	err := root.Execute()
	return out.String(), err
}

func writeJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "pcrs.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Conversions of the real bundles' PCR files to our JSON form, in a temp dir.

func t490PCRs(t *testing.T) string {
	b, err := os.ReadFile(verifyReal(t, "quotes/lenovo-t490-stm/pcrs-t490.txt"))
	if err != nil {
		t.Fatal(err)
	}
	j := pcrs.JSON{"sha256": {}}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if _, err := strconv.Atoi(strings.TrimSpace(k)); !ok || err != nil {
			continue
		}
		j["sha256"][strings.TrimSpace(k)] = strings.TrimPrefix(strings.TrimSpace(v), "0x")
	}
	return writeJSON(t, j)
}

func windowsPCRs(t *testing.T) string {
	var w struct {
		Expected pcrs.JSON `json:"expected_pcrs"`
	}
	b, err := os.ReadFile(verifyReal(t, "quotes/gce-windows-shielded-vm/pcrs.sha1.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &w); err != nil {
		t.Fatal(err)
	}
	return writeJSON(t, w.Expected)
}

func cosPCRs(t *testing.T, dir string) string {
	var s struct {
		Quotes []struct {
			Bank string            `json:"bank"`
			PCRs map[string]string `json:"pcrs"`
		} `json:"quotes"`
	}
	b, err := os.ReadFile(verifyReal(t, dir+"/decoded_summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	j := pcrs.JSON{}
	for _, q := range s.Quotes {
		j[q.Bank] = q.PCRs
	}
	return writeJSON(t, j)
}

func TestVerifyQuoteCLI(t *testing.T) {
	t490 := func(f string) string { return verifyReal(t, "quotes/lenovo-t490-stm/"+f) }
	win := func(f string) string { return verifyReal(t, "quotes/gce-windows-shielded-vm/"+f) }
	cos := func(f string) string { return verifyReal(t, "quotes/gce-cos-85/nonce9009/"+f) }
	t490Args := []string{"quote", "--ak", t490("ak.pub"), "--quote", t490("quote.out"), "--signature", t490("quote.sig"), "--nonce", "abcdef"}
	winArgs := []string{"quote", "--ak", win("ak.tpmt_public.bin"), "--quote", win("quote.tpms_attest.bin"), "--signature", win("quote.tpmt_signature.bin"), "--nonce", ""}
	cosArgs := func(bank string) []string {
		return []string{"quote", "--ak", cos("ak.tpmt_public.bin"), "--quote", cos("quote." + bank + ".tpms_attest.bin"),
			"--signature", cos("quote." + bank + ".tpmt_signature.bin"), "--nonce", "9009"}
	}
	with := func(base []string, more ...string) []string { return append(append([]string{}, base...), more...) }

	// TPM2B_ATTEST form of the T490 quote.
	q, _ := os.ReadFile(t490("quote.out"))
	wrapped := filepath.Join(t.TempDir(), "quote.tpm2b")
	os.WriteFile(wrapped, append([]byte{byte(len(q) >> 8), byte(len(q))}, q...), 0o600)
	// A PCR file with PCR4 changed.
	badPCRs := func() string {
		b, _ := os.ReadFile(t490PCRs(t))
		var j pcrs.JSON
		json.Unmarshal(b, &j)
		j["sha256"]["4"] = strings.Repeat("00", 32)
		return writeJSON(t, j)
	}()
	// A PCR file that matches the quote but not the event log: replace PCR2 in
	// both file and... (not signable); instead quote the T490 values against
	// the Windows log, which extends other PCRs of another bank.

	type tc struct {
		name     string
		args     []string
		wantErr  string // substring of the error, "" for success
		wantJSON map[string]any
	}
	for _, c := range []tc{
		{"t490 with pcrs", with(t490Args, "--pcrs", t490PCRs(t), "--json"), "", map[string]any{"bank": "sha256", "reset_count": 35.0, "restart_count": 4.0, "secure_boot": "unknown"}},
		{"t490 from eventlog only", with(t490Args, "--eventlog", t490("eventlog"), "--json"), "", map[string]any{"bank": "sha256", "clock": 13391371438.0}},
		{"t490 pcrs and eventlog", with(t490Args, "--pcrs", t490PCRs(t), "--eventlog", t490("eventlog")), "", nil},
		{"t490 TPM2B_ATTEST", []string{"quote", "--ak", t490("ak.pub"), "--quote", wrapped, "--signature", t490("quote.sig"), "--nonce", "abcdef", "--pcrs", t490PCRs(t)}, "", nil},
		{"windows with pcrs and eventlog", with(winArgs, "--pcrs", windowsPCRs(t), "--eventlog", win("eventlog.bin"), "--allow-weak", "--json"), "", map[string]any{"bank": "sha1", "secure_boot": "enabled", "signature_hash": "sha1"}},
		// The Windows quote is signed with SHA-1: refused as the server refuses it.
		{"windows SHA-1 signature without --allow-weak", with(winArgs, "--pcrs", windowsPCRs(t), "--eventlog", win("eventlog.bin")), "quote_weak: quote uses a weak algorithm: signature hash sha1 (the server refuses it too); pass --allow-weak", nil},
		{"windows SHA-1 signature without --allow-weak, json", with(winArgs, "--pcrs", windowsPCRs(t), "--json"), "quote_weak", nil},
		{"cos sha1 bank", with(cosArgs("sha1"), "--pcrs", cosPCRs(t, "quotes/gce-cos-85/nonce9009"), "--eventlog", cos("eventlog.bin"), "--json"), "", map[string]any{"bank": "sha1", "reset_count": 10.0}},
		{"cos sha256 bank", with(cosArgs("sha256"), "--pcrs", cosPCRs(t, "quotes/gce-cos-85/nonce9009"), "--json"), "", map[string]any{"bank": "sha256"}},
		{"cos sha384 bank", with(cosArgs("sha384"), "--pcrs", cosPCRs(t, "quotes/gce-cos-85/nonce9009"), "--eventlog", cos("eventlog.bin")), "", nil},

		{"wrong nonce", with(t490Args[:len(t490Args)-1], "abcdee", "--pcrs", t490PCRs(t)), "quote_extra_data", nil},
		{"nonce not hex", with(t490Args[:len(t490Args)-1], "xyz", "--pcrs", t490PCRs(t)), "not hex", nil},
		{"changed PCR value", with(t490Args, "--pcrs", badPCRs), "quote_digest", nil},
		{"wrong AK", []string{"quote", "--ak", win("ak.tpmt_public.bin"), "--quote", t490("quote.out"), "--signature", t490("quote.sig"), "--nonce", "abcdef", "--pcrs", t490PCRs(t)}, "quote_signature", nil},
		{"signature file is the quote", []string{"quote", "--ak", t490("ak.pub"), "--quote", t490("quote.out"), "--signature", t490("quote.out"), "--nonce", "abcdef", "--pcrs", t490PCRs(t)}, "quote_signature", nil},
		{"quote file is not a quote", []string{"quote", "--ak", t490("ak.pub"), "--quote", win("ak.certify_creation.tpms_attest.bin"), "--signature", t490("quote.sig"), "--nonce", "abcdef", "--pcrs", t490PCRs(t)}, "quote_not_quote", nil},
		{"quote file is junk", []string{"quote", "--ak", t490("ak.pub"), "--quote", t490("nonce"), "--signature", t490("quote.sig"), "--nonce", "abcdef", "--pcrs", t490PCRs(t)}, "quote_not_generated", nil},
		{"ak file is junk", []string{"quote", "--ak", t490("nonce"), "--quote", t490("quote.out"), "--signature", t490("quote.sig"), "--nonce", "abcdef", "--pcrs", t490PCRs(t)}, "ak_malformed", nil},
		{"pcrs of another bank", with(t490Args, "--pcrs", windowsPCRs(t)), "quote_pcr_values", nil},
		{"eventlog does not extend quoted PCRs", with(winArgs, "--eventlog", win("eventlog.bin")), "pass --pcrs", nil},
		{"eventlog of another machine", with(t490Args, "--pcrs", t490PCRs(t), "--eventlog", cos("eventlog.bin")), "eventlog_mismatch", nil},
		{"eventlog of another machine, no pcrs", with(t490Args, "--eventlog", cos("eventlog.bin")), "quote_digest", nil},
		{"eventlog not a log", with(t490Args, "--eventlog", t490("quote.sig")), "eventlog", nil},
		{"no values", t490Args, "need --pcrs or --eventlog", nil},
		{"missing --nonce", t490Args[:len(t490Args)-2], "nonce", nil},
		{"missing file", with(t490Args[:2], "/nonexistent", "--quote", t490("quote.out"), "--signature", t490("quote.sig"), "--nonce", "abcdef", "--pcrs", t490PCRs(t)), "no such file", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := runVerify(t, c.args...)
			if c.wantErr == "quote_weak" && verify.ReasonOf(err) != session.ReasonQuoteWeak {
				t.Errorf("reason %q, want %q", verify.ReasonOf(err), session.ReasonQuoteWeak)
			}
			if c.wantErr != "" {
				if err == nil {
					t.Fatalf("succeeded, want error containing %q; output %s", c.wantErr, out)
				}
				if !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %q, want it to contain %q", err, c.wantErr)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error is not one line: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("error: %v", err)
			}
			if c.wantJSON != nil {
				var got map[string]any
				if err := json.Unmarshal([]byte(out), &got); err != nil {
					t.Fatalf("not JSON: %v\n%s", err, out)
				}
				for k, v := range c.wantJSON {
					if got[k] != v {
						t.Errorf("%s = %v, want %v", k, got[k], v)
					}
				}
			} else if !strings.HasPrefix(out, "OK: quote verified") {
				t.Errorf("output %q", out)
			}
		})
	}
}

func TestVerifyEKCertCLI(t *testing.T) {
	stmRoots := filepath.Join(t.TempDir(), "roots.pem")
	var bundle []byte
	for _, f := range []string{"GS_TPM_RT.pem", "STM_RSA_RT.pem"} {
		b, err := os.ReadFile(verifyReal(t, "cacerts/keylime-tpm_cert_store/"+f))
		if err != nil {
			t.Fatal(err)
		}
		bundle = append(bundle, b...)
	}
	os.WriteFile(stmRoots, bundle, 0o600)
	stmInter := verifyReal(t, "cacerts/keylime-tpm_cert_store/STM_RSA_05I.pem")
	ek := verifyReal(t, "quotes/lenovo-t490-stm/ek.crt")
	gce := verifyReal(t, "cacerts/google-gce")

	out, err := runVerify(t, "ekcert", "--roots", stmRoots, "--intermediates", stmInter, "--at", "2026-11-25T00:00:00Z", "--json", ek)
	if err != nil {
		t.Fatal(err)
	}
	var rep map[string]any
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if rep["manufacturer"] != "id:53544D20" || rep["model"] != "ST33HTPHAHC0" || rep["version"] != "id:00490008" || rep["issuer"] != "STM TPM EK Intermediate CA 05" {
		t.Errorf("report %v", rep)
	}
	out, err = runVerify(t, "ekcert", "--roots", gce, "--at", "2026-11-25T00:00:00Z", verifyReal(t, "ekcerts/gce-vtpm/uca_tpm_rsa_enc_cert.pem"))
	if err != nil || !strings.Contains(out, "manufacturer: id:474F4F47") {
		t.Errorf("gce: %v %s", err, out)
	}
	out, err = runVerify(t, "ekcert", "--roots", gce, "--at", "2026-11-25T00:00:00Z", verifyReal(t, "ekcerts/gce-vtpm/pca_tpm_rsa_enc_cert.pem"))
	if err != nil || !strings.Contains(out, "ek_quirk: gce-ek-no-san") {
		t.Errorf("gce EK without SAN: %v %s", err, out)
	}

	for _, c := range []struct {
		name, want string
		args       []string
	}{
		{"no intermediate", "ek_untrusted", []string{"--roots", stmRoots, "--at", "2026-11-25T00:00:00Z", ek}},
		{"other vendor's roots", "ek_untrusted", []string{"--roots", gce, "--at", "2026-11-25T00:00:00Z", ek}},
		{"AK certificate", "ek_cert_profile", []string{"--roots", gce, "--at", "2026-11-25T00:00:00Z", verifyReal(t, "ekcerts/gce-vtpm/pca_tpm_rsa_sign_cert.pem")}},
		{"after expiry", "ek_expired", []string{"--roots", stmRoots, "--intermediates", stmInter, "--at", "2029-01-01T00:00:00Z", ek}},
		{"not a certificate", "ek_cert_malformed", []string{"--roots", stmRoots, verifyReal(t, "quotes/lenovo-t490-stm/ek.pub")}},
		{"roots without a root", "ek_trust_config", []string{"--roots", stmInter, ek}},
		{"roots missing", "ek_trust_config", []string{"--roots", "/nonexistent", ek}},
		{"bad --at", "--at", []string{"--roots", stmRoots, "--at", "yesterday", ek}},
		{"no --roots", "roots", []string{ek}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := runVerify(t, append([]string{"ekcert"}, c.args...)...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
		})
	}
}
