package verify

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/tpmid/tpmid/internal/realdata"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// realPath is a file of the real TPM evidence; the test skips without it.
func realPath(t testing.TB, rel string) string {
	t.Helper()
	return realdata.Path(t, rel)
}

func readReal(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(realPath(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// realQuote is one real quote with everything needed to verify it.
type realQuote struct {
	name      string
	dir       string
	ak        string // file
	attest    string
	sig       string
	extraData []byte
	values    pcrs.Values
	bank      pcrs.Alg
	pcrs      []int
	sigHash   pcrs.Alg
	reset     uint32
	restart   uint32
	clock     uint64
}

func all24() []int {
	out := make([]int, 24)
	for i := range out {
		out[i] = i
	}
	return out
}

// loadRealQuotes converts each bundle's own PCR file to pcrs.Values:
// T490 pcrs-t490.txt is tpm2-tools YAML; Windows pcrs.sha1.json has
// "expected_pcrs"; COS decoded_summary.json has one PCR list per quote.
func loadRealQuotes(t testing.TB) []realQuote {
	t.Helper()
	var out []realQuote

	// Lenovo T490, STM TPM, ECDSA P-256 AK, nonce file "abcdef" = bytes ab cd ef.
	t490 := pcrs.Values{}
	yaml := readReal(t, "quotes/lenovo-t490-stm/pcrs-t490.txt")
	if err := parsePCRsYAML(yaml, t490); err != nil {
		t.Fatal(err)
	}
	out = append(out, realQuote{
		name: "lenovo-t490-stm", dir: "quotes/lenovo-t490-stm", ak: "ak.pub", attest: "quote.out", sig: "quote.sig",
		extraData: []byte{0xab, 0xcd, 0xef}, values: t490, bank: pcrs.SHA256, pcrs: []int{0, 1, 2, 4}, sigHash: pcrs.SHA256,
		reset: 35, restart: 4, clock: 13391371438,
	})

	// GCE Windows shielded VM, RSASSA-SHA1, no nonce, SHA-1 bank 0..23.
	var win struct {
		Expected pcrs.JSON `json:"expected_pcrs"`
	}
	if err := json.Unmarshal(readReal(t, "quotes/gce-windows-shielded-vm/pcrs.sha1.json"), &win); err != nil {
		t.Fatal(err)
	}
	wv, err := pcrs.FromJSON(win.Expected)
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, realQuote{
		name: "gce-windows", dir: "quotes/gce-windows-shielded-vm", ak: "ak.tpmt_public.bin", attest: "quote.tpms_attest.bin", sig: "quote.tpmt_signature.bin",
		extraData: nil, values: wv, bank: pcrs.SHA1, pcrs: all24(), sigHash: pcrs.SHA1,
		reset: 1045281252, restart: 822490842, clock: 10257171,
	})

	// GCE COS 85, nonce 0x9009 and no nonce, three banks each, RSASSA-SHA256.
	for _, run := range []struct {
		dir    string
		extra  []byte
		clocks [3]uint64
	}{
		{"nonce9009", []byte{0x90, 0x09}, [3]uint64{8219159479, 8219159552, 8219159625}},
		{"no-nonce", nil, [3]uint64{8219152461, 8219152533, 8219152605}},
	} {
		dir := "quotes/gce-cos-85/" + run.dir
		cos := cosValues(t, dir+"/decoded_summary.json")
		for i, bank := range []pcrs.Alg{pcrs.SHA1, pcrs.SHA256, pcrs.SHA384} {
			out = append(out, realQuote{
				name: "gce-cos-85-" + run.dir + "-" + bank.String(), dir: dir, ak: "ak.tpmt_public.bin",
				attest: "quote." + bank.String() + ".tpms_attest.bin", sig: "quote." + bank.String() + ".tpmt_signature.bin",
				extraData: run.extra, values: cos, bank: bank, pcrs: all24(), sigHash: pcrs.SHA256,
				reset: 10, restart: 0, clock: run.clocks[i],
			})
		}
	}
	return out
}

func cosValues(t testing.TB, rel string) pcrs.Values {
	t.Helper()
	var sum struct {
		Quotes []struct {
			Bank string            `json:"bank"`
			PCRs map[string]string `json:"pcrs"`
		} `json:"quotes"`
	}
	if err := json.Unmarshal(readReal(t, rel), &sum); err != nil {
		t.Fatal(err)
	}
	j := pcrs.JSON{}
	for _, q := range sum.Quotes {
		j[q.Bank] = q.PCRs
	}
	v, err := pcrs.FromJSON(j)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// parsePCRsYAML reads the tpm2_pcrread/tpm2_quote YAML form:
//
//	pcrs:
//	  sha256:
//	    0 : 0x3FBF...
func parsePCRsYAML(b []byte, v pcrs.Values) error {
	j := pcrs.JSON{}
	var bank string
	for _, line := range strings.Split(string(b), "\n") {
		trim := strings.TrimSpace(line)
		if trim == "" || trim == "pcrs:" {
			continue
		}
		if trim[len(trim)-1] == ':' {
			bank = trim[:len(trim)-1]
			j[bank] = map[string]string{}
			continue
		}
		var idx, val string
		for k := 0; k < len(trim); k++ {
			if trim[k] == ':' {
				idx, val = strings.TrimSpace(trim[:k]), strings.TrimSpace(trim[k+1:])
				break
			}
		}
		if _, err := strconv.Atoi(idx); err != nil || bank == "" {
			continue
		}
		j[bank][idx] = val
	}
	got, err := pcrs.FromJSON(j)
	if err != nil {
		return err
	}
	for a, m := range got {
		for i, x := range m {
			v.Set(a, i, x)
		}
	}
	return nil
}
