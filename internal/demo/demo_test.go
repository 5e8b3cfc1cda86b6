package demo

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl"

	"github.com/tpmid/tpmid/pkg/common/eventlog"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

func TestMeasureBootReplaysAndSaysSecureBoot(t *testing.T) {
	kernel := filepath.Join(t.TempDir(), "vmlinuz")
	if err := os.WriteFile(kernel, []byte("not really a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, sb := range []bool{true, false} {
		b, err := MeasureBoot(BootOptions{SecureBoot: sb, Kernel: kernel, Loader: kernel}, "")
		if err != nil {
			t.Fatal(err)
		}
		l, err := eventlog.Parse(b.Log)
		if err != nil {
			t.Fatal(err)
		}
		replayed, err := l.Replay()
		if err != nil {
			t.Fatal(err)
		}
		// What the TPM will be extended with must give the replayed PCRs.
		for _, alg := range []pcrs.Alg{pcrs.SHA1, pcrs.SHA256} {
			for pcr := 0; pcr < 8; pcr++ {
				h, _ := alg.New()
				v := make([]byte, alg.Size())
				for _, x := range b.Extends {
					if x.PCR == pcr {
						h.Reset()
						h.Write(v)
						h.Write(x.Digests[alg])
						v = h.Sum(nil)
					}
				}
				got, ok := replayed.Get(alg, pcr)
				if !ok || string(got) != string(v) {
					t.Errorf("%s PCR %d: replay %x, extends %x", alg, pcr, got, v)
				}
			}
		}
		st, err := eventlog.SecureBoot(l)
		if err != nil {
			t.Fatal(err)
		}
		want := eventlog.SecureBootDisabled
		if sb {
			want = eventlog.SecureBootEnabled
		}
		if st.Mode != want {
			t.Errorf("secure boot %v: mode %v", sb, st.Mode)
		}
	}
}

func TestParseAgentList(t *testing.T) {
	out := `{"agents":[{"id":{"trust_domain":"example.org","path":"/spire/agent/tpm/abcd"},"attestation_type":"tpm","x509svid_serial_number":"1","x509svid_expires_at":"0","selectors":[{"type":"tpm","value":"pub_hash:abcd"},{"type":"tpm","value":"secureboot:enabled"}],"banned":false,"can_reattest":true}],"next_page_token":""}`
	recs, err := ParseAgentList([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].ID != "spiffe://example.org/spire/agent/tpm/abcd" || !recs[0].CanReattest {
		t.Fatalf("%+v", recs)
	}
	if v, ok := Selector(recs[0].Selectors, "secureboot"); !ok || v != "enabled" {
		t.Errorf("secureboot selector: %q %v", v, ok)
	}
}

func TestConfigsAreHCL(t *testing.T) {
	p := &Plugins{Server: "/x/server", ServerSum: "00", Agent: "/x/agent", AgentSum: "11"}
	srv := ServerConfig("/d", "/s.sock", 1234, p.Server, p.ServerSum, ServerOptions{EKCABundle: `/ca "dir"`, EKPolicy: "cert", PCRBanks: []string{"sha256"}})
	agent := AgentConfig("/d", "/a.sock", "/b.pem", 1234, p.Agent, p.AgentSum, AgentOptions{TPMDevice: "tcp://127.0.0.1:1", AKAlgorithm: "rsa"})
	for name, c := range map[string]string{"server": srv, "agent": agent} {
		var v map[string]any
		if err := hcl.Decode(&v, c); err != nil {
			t.Errorf("%s config is not HCL: %v\n%s", name, err, c)
		}
	}
	if !strings.Contains(srv, `ek_ca_bundle = "/ca \"dir\""`) {
		t.Errorf("quoting: %s", srv)
	}
}
