package profile

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/tpmid/tpmid/internal/realdata"
	"github.com/tpmid/tpmid/pkg/common/eventlog"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// FuzzParseProfile: ParseProfile never panics; whatever it accepts is valid,
// marshals, and reads back identical (the JSON form is canonical after one
// round); Appraise with it does not panic. Seeded with profiles captured
// from real logs (when the real evidence is present) and the golden form.
func FuzzParseProfile(f *testing.F) {
	f.Add([]byte(golden))
	f.Add([]byte(`{"format":1,"name":"sb","rules":{"secure_boot":"required"}}`))
	f.Add([]byte(`{"format":1,"name":"x","pcrs":{"sha1":{"17":{"value":"` + "ffffffffffffffffffffffffffffffffffffffff" + `"}}}}`))
	var in Input
	if dir, err := realdata.Find(); err == nil {
		for _, s := range []struct {
			log  string
			bank pcrs.Alg
		}{{logGDC, pcrs.SHA256}, {logRHEL8, pcrs.SHA384}, {"eventlogs/go-tpm-tools/debian-10.bin", pcrs.SHA1},
			{"eventlogs/tpm2-tss/binary_measurements_hcrtm.bin", pcrs.SM3}, {logArch, pcrs.SHA256}} {
			b, err := os.ReadFile(filepath.Join(dir, s.log))
			if err != nil {
				f.Fatal(err)
			}
			l, err := eventlog.Parse(b)
			if err != nil {
				f.Fatal(err)
			}
			p, err := Capture(l, "seed", s.bank, pcrRange(0, 9), WithReplayedValues(), RequireSecureBootIfEnabled(), WithBootApplications(), WithKernels())
			if err != nil {
				f.Fatal(err)
			}
			j, err := json.Marshal(p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(j)
			if s.log == logGDC {
				in = selfInput(f, l, s.bank, pcrRange(0, 9))
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParseProfile(data)
		if err != nil {
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("accepted an invalid profile: %v", err)
		}
		j, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("accepted profile does not marshal: %v", err)
		}
		back, err := ParseProfile(j)
		if err != nil {
			t.Fatalf("own JSON refused: %v\n%s", err, j)
		}
		if !reflect.DeepEqual(back, p) {
			t.Fatalf("round trip differs:\n%s", j)
		}
		if j2, _ := json.Marshal(back); !bytes.Equal(j, j2) {
			t.Fatal("JSON form not canonical")
		}
		v := Appraise(in, []Profile{*p})
		if _, err := json.Marshal(v); err != nil {
			t.Fatal(err)
		}
		_ = v.String()
	})
}
