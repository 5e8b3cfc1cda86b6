package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tpmid/tpmid/ca/issuer"
)

func TestCAInitRotate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	run := func(args ...string) (string, error) { return runCmd(t, newCACmd(), args...) }

	out, err := run("init", "--dir", dir, "--name", "Example", "--root-lifetime", "5y", "--intermediate-lifetime", "90d", "--ak-lifetime", "12h", "--json")
	if err != nil {
		t.Fatalf("ca init: %v\n%s", err, out)
	}
	var rep caReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if rep.Root.Subject != "CN=Example Root CA" || rep.Intermediate.Subject != "CN=Example Intermediate CA" || rep.KMS != "softkms:" ||
		rep.Root.KeyType != "ECDSA P-256" || rep.AKLifetime != "12h" || len(rep.Previous) != 0 || rep.Root.Key != "softkms:path=root.key" {
		t.Errorf("report %+v", rep)
	}
	if d := rep.Root.NotAfter.Sub(rep.Root.NotBefore); d != 5*issuer.Year+time.Minute {
		t.Errorf("root validity %v", d)
	}
	if d := rep.Intermediate.NotAfter.Sub(rep.Intermediate.NotBefore); d != 90*24*time.Hour+time.Minute {
		t.Errorf("intermediate validity %v", d)
	}
	for _, f := range []string{"ca.json", "root.key", strings.TrimPrefix(rep.Intermediate.Key, "softkms:path=")} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", f, fi, err)
		}
	}
	if rep.RootFile != filepath.Join(dir, "root.crt") {
		t.Errorf("root file %s", rep.RootFile)
	}

	// A second init is refused; --force replaces the CA.
	if out, err := run("init", "--dir", dir); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("second init: %v\n%s", err, out)
	}
	out, err = run("init", "--dir", dir, "--force")
	if err != nil || !strings.Contains(out, "CA created") || !strings.Contains(out, "trust anchor for relying parties") {
		t.Fatalf("init --force: %v\n%s", err, out)
	}
	if strings.Contains(out, rep.Root.SHA256) {
		t.Error("--force kept the root")
	}

	// Rotation keeps the previous intermediate in the bundle.
	out, err = run("rotate-intermediate", "--dir", dir, "--json")
	if err != nil {
		t.Fatalf("rotate-intermediate: %v\n%s", err, out)
	}
	var rot caReport
	if err := json.Unmarshal([]byte(out), &rot); err != nil {
		t.Fatal(err)
	}
	if len(rot.Previous) != 1 || rot.Previous[0].SHA256 == rot.Intermediate.SHA256 {
		t.Errorf("after rotation: %+v", rot)
	}

	for name, args := range map[string][]string{
		"no dir":           {"init"},
		"bad KMS":          {"init", "--dir", filepath.Join(t.TempDir(), "x"), "--kms", "nosuchkms:"},
		"bad lifetime":     {"init", "--dir", filepath.Join(t.TempDir(), "x"), "--root-lifetime", "ten years"},
		"zero lifetime":    {"init", "--dir", filepath.Join(t.TempDir(), "x"), "--ak-lifetime", "0s"},
		"bad algorithm":    {"init", "--dir", filepath.Join(t.TempDir(), "x"), "--key-algorithm", "dsa"},
		"rotate no CA":     {"rotate-intermediate", "--dir", t.TempDir()},
		"rotate no dir":    {"rotate-intermediate"},
		"extra argument":   {"init", "--dir", filepath.Join(t.TempDir(), "x"), "extra"},
		"missing template": {"init", "--dir", filepath.Join(t.TempDir(), "x"), "--ak-template", "/nonexistent.tpl"},
	} {
		if out, err := run(args...); err == nil {
			t.Errorf("%s: accepted\n%s", name, out)
		}
	}
	if out, err := run("init", "--dir", filepath.Join(t.TempDir(), "x"), "--kms", "nosuchkms:"); err == nil || !strings.Contains(err.Error(), "unknown KMS type") {
		t.Errorf("bad KMS message: %v\n%s", err, out)
	}
}
