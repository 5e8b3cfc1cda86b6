//go:build cgo

package main

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// TestVerifyQuoteMultiBankSimulator: quotes the simulator makes over two
// banks at once (TPM2_Quote with a two-entry TPML_PCR_SELECTION, in either
// order) verify with `tpmid verify quote`; the same with one bank's value
// altered are refused with quote_digest.
func TestVerifyQuoteMultiBankSimulator(t *testing.T) {
	sim, err := simulator.Get()
	if err != nil {
		t.Fatalf("simulator: %v", err)
	}
	t.Cleanup(func() { sim.Close() }) // after the flushes and resets registered later
	tp := transport.FromReadWriter(sim)

	// Give PCRs 16 and 23 (resettable at locality 0) values of their own in
	// both banks, and put them back at the end.
	for _, pcr := range []uint32{16, 23} {
		h := tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)}
		if _, err := (tpm2.PCRReset{PCRHandle: h}).Execute(tp); err != nil {
			t.Fatalf("PCR_Reset %d: %v", pcr, err)
		}
		t.Cleanup(func() { tpm2.PCRReset{PCRHandle: h}.Execute(tp) })
		s1 := sha1.Sum([]byte("tpmid multi-bank " + strconv.Itoa(int(pcr))))
		s256 := sha256.Sum256([]byte("tpmid multi-bank " + strconv.Itoa(int(pcr))))
		if _, err := (tpm2.PCRExtend{PCRHandle: h, Digests: tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{
			{HashAlg: tpm2.TPMAlgSHA1, Digest: s1[:]}, {HashAlg: tpm2.TPMAlgSHA256, Digest: s256[:]},
		}}}).Execute(tp); err != nil {
			t.Fatalf("PCR_Extend %d: %v", pcr, err)
		}
	}

	// A restricted ECDSA P-256 signing primary in the owner hierarchy: an AK
	// as far as TPM2_Quote and the verifier are concerned.
	ak, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner,
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type:    tpm2.TPMAlgECC,
			NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{
				FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true,
				NoDA: true, Restricted: true, SignEncrypt: true,
			},
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Scheme: tpm2.TPMTECCScheme{
					Scheme:  tpm2.TPMAlgECDSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
				},
				CurveID: tpm2.TPMECCNistP256,
			}),
		}),
	}.Execute(tp)
	if err != nil {
		t.Fatalf("CreatePrimary (AK): %v", err)
	}
	t.Cleanup(func() { tpm2.FlushContext{FlushHandle: ak.ObjectHandle}.Execute(tp) })
	akPub, err := ak.OutPublic.Contents()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	akPath := write("ak.pub", tpm2.Marshal(*akPub)) // TPMT_PUBLIC

	sel := func(bank tpm2.TPMIAlgHash, list ...int) tpm2.TPMSPCRSelection {
		m := make([]byte, 3)
		for _, i := range list {
			m[i/8] |= 1 << (i % 8)
		}
		return tpm2.TPMSPCRSelection{Hash: bank, PCRSelect: m}
	}
	sha1Sel := sel(tpm2.TPMAlgSHA1, 0, 16, 23)
	sha256Sel := sel(tpm2.TPMAlgSHA256, 0, 7, 16, 23)

	// The PCR values, read one at a time, as --pcrs JSON.
	values := pcrs.JSON{}
	for _, s := range []tpm2.TPMSPCRSelection{sha1Sel, sha256Sel} {
		bank := pcrs.Alg(s.Hash)
		values[bank.String()] = map[string]string{}
		for i := 0; i < 24; i++ {
			if s.PCRSelect[i/8]&(1<<(i%8)) == 0 {
				continue
			}
			r, err := tpm2.PCRRead{PCRSelectionIn: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{sel(s.Hash, i)}}}.Execute(tp)
			if err != nil || len(r.PCRValues.Digests) != 1 {
				t.Fatalf("PCR_Read %s:%d: %v (%d values)", bank, i, err, len(r.PCRValues.Digests))
			}
			values[bank.String()][strconv.Itoa(i)] = hex.EncodeToString(r.PCRValues.Digests[0].Buffer)
		}
	}
	files := 0
	pcrFile := func(j pcrs.JSON) string {
		b, err := json.Marshal(j)
		if err != nil {
			t.Fatal(err)
		}
		files++
		return write("pcrs-"+strconv.Itoa(files)+".json", b)
	}
	altered := func(bank, pcr string) string {
		j := pcrs.JSON{}
		for b, m := range values {
			j[b] = map[string]string{}
			for k, v := range m {
				j[b][k] = v
			}
		}
		v := []byte(j[bank][pcr])
		if v[0] == '0' {
			v[0] = '1'
		} else {
			v[0] = '0'
		}
		j[bank][pcr] = string(v)
		return pcrFile(j)
	}
	goodPCRs := pcrFile(values)

	nonce := []byte{0x5e, 0x1e, 0xc7}
	quote := func(name string, order ...tpm2.TPMSPCRSelection) (args []string, pcrDigest []byte) {
		q, err := tpm2.Quote{
			SignHandle:     tpm2.AuthHandle{Handle: ak.ObjectHandle, Name: ak.Name, Auth: tpm2.PasswordAuth(nil)},
			QualifyingData: tpm2.TPM2BData{Buffer: nonce},
			InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
			PCRSelect:      tpm2.TPMLPCRSelection{PCRSelections: order},
		}.Execute(tp)
		if err != nil {
			t.Fatalf("TPM2_Quote %s: %v", name, err)
		}
		attest, err := q.Quoted.Contents()
		if err != nil {
			t.Fatal(err)
		}
		info, err := attest.Attested.Quote()
		if err != nil {
			t.Fatal(err)
		}
		return []string{"quote", "--ak", akPath, "--quote", write(name+".attest", q.Quoted.Bytes()),
			"--signature", write(name+".sig", tpm2.Marshal(q.Signature)), "--nonce", hex.EncodeToString(nonce)}, info.PCRDigest.Buffer
	}
	sha1First, d1 := quote("sha1-first", sha1Sel, sha256Sel)
	sha256First, d2 := quote("sha256-first", sha256Sel, sha1Sel)
	// The TPM hashed the values in selection order: the same PCRs in the
	// other bank order give another pcrDigest.
	if bytes.Equal(d1, d2) {
		t.Fatalf("both bank orders gave pcrDigest %x", d1)
	}

	with := func(base []string, more ...string) []string { return append(slices.Clone(base), more...) }
	type selJSON struct {
		Bank string `json:"bank"`
		PCRs []int  `json:"pcrs"`
	}
	for _, c := range []struct {
		name string
		args []string
		want []selJSON
	}{
		{"sha1 then sha256", sha1First, []selJSON{{"sha1", []int{0, 16, 23}}, {"sha256", []int{0, 7, 16, 23}}}},
		{"sha256 then sha1", sha256First, []selJSON{{"sha256", []int{0, 7, 16, 23}}, {"sha1", []int{0, 16, 23}}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := runVerify(t, with(c.args, "--pcrs", goodPCRs, "--json")...)
			if err != nil {
				t.Fatalf("tpmid verify quote: %v", err)
			}
			var rep struct {
				Bank      string    `json:"bank"`
				PCRs      []int     `json:"pcrs"`
				Selection []selJSON `json:"selection"`
				SigHash   string    `json:"signature_hash"`
				Weak      []string  `json:"weak"`
			}
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, out)
			}
			if rep.Bank != "" || rep.PCRs != nil || rep.SigHash != "sha256" || !slices.Equal(rep.Weak, []string{"pcr bank sha1"}) ||
				!slices.EqualFunc(rep.Selection, c.want, func(a, b selJSON) bool { return a.Bank == b.Bank && slices.Equal(a.PCRs, b.PCRs) }) {
				t.Errorf("report %s", out)
			}
			out, err = runVerify(t, with(c.args, "--pcrs", goodPCRs)...)
			if err != nil || !strings.HasPrefix(out, "OK: quote verified: banks "+c.want[0].Bank+" PCRs ") {
				t.Errorf("text output %q, %v", out, err)
			}

			// One bank's value altered: the digest no longer matches.
			for _, bad := range [][2]string{{"sha1", "16"}, {"sha256", "7"}, {"sha1", "0"}, {"sha256", "23"}} {
				_, err := runVerify(t, with(c.args, "--pcrs", altered(bad[0], bad[1]))...)
				if err == nil || !strings.Contains(err.Error(), "quote_digest") {
					t.Errorf("%s:%s altered: %v, want quote_digest", bad[0], bad[1], err)
				}
			}
			// A bank's values missing: quote_pcr_values.
			j := pcrs.JSON{"sha256": values["sha256"]}
			if _, err := runVerify(t, with(c.args, "--pcrs", pcrFile(j))...); err == nil || !strings.Contains(err.Error(), "quote_pcr_values") {
				t.Errorf("sha1 values missing: %v, want quote_pcr_values", err)
			}
		})
	}

	// A single-bank quote from the same TPM still reports bank and pcrs.
	one, _ := quote("sha256-only", sha256Sel)
	out, err := runVerify(t, with(one, "--pcrs", goodPCRs, "--json")...)
	if err != nil {
		t.Fatal(err)
	}
	var rep map[string]any
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep["bank"] != "sha256" {
		t.Errorf("single-bank report %s (%v)", out, err)
	}
}
