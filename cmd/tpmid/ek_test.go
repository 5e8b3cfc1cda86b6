package main

import (
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/tpmid/tpmid/internal/swtpm"
	"github.com/tpmid/tpmid/internal/testmachine"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

func TestEKCommand(t *testing.T) {
	m := testmachine.NewSwtpm(t, swtpm.Options{})
	run := func(args ...string) (string, error) { return runCmd(t, newEKCmd(), args...) }

	out, err := run("--tpm", m.Device, "--json", "--cert")
	if err != nil {
		t.Fatalf("tpmid ek: %v (%s)", err, out)
	}
	var rep ekReportLocal
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	if rep.EKHash != m.EKHash || rep.AgentIDPath != "/spire/agent/tpm/"+m.EKHash || rep.Algorithm != "rsa" {
		t.Errorf("report %+v, want EK hash %s", rep, m.EKHash)
	}
	// The certificate printed is the one the server would check, for this EK.
	blk, _ := pem.Decode([]byte(rep.Certificate))
	if blk == nil {
		t.Fatalf("no PEM certificate in %q", rep.Certificate)
	}
	cert, err := verify.ParseEKCert(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := verify.EKHash(cert.PublicKey); h != m.EKHash {
		t.Errorf("certificate is for EK %s, want %s", h, m.EKHash)
	}

	out, err = run("--tpm", m.Device)
	if err != nil || !strings.Contains(out, "ek_hash: "+m.EKHash) {
		t.Errorf("text output %q, %v", out, err)
	}
	for _, bad := range [][]string{
		{"--tpm", "tcp://nohost"},
		{"--tpm", m.Device, "--alg", "dsa"},
		{"--tpm", m.Device, "--alg", "ecc"}, // swtpm's ECC EK is P-384: named as unsupported
	} {
		if out, err := run(bad...); err == nil {
			t.Errorf("%v accepted: %s", bad, out)
		}
	}
}
