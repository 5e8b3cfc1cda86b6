package verify

import (
	"bytes"
	"crypto/sha256"
	"slices"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// TestVerifyQuoteMulti re-signs the real T490 TPMS_ATTEST with multi-bank
// selections and pcrDigests computed here, bank by bank in selection order.
func TestVerifyQuoteMulti(t *testing.T) {
	t490 := loadRealQuotes(t)[0]
	attest := readReal(t, t490.dir+"/"+t490.attest)
	signer := newTestSigner(t)

	// The T490's SHA-256 values plus made-up SHA-1 and SHA-384 values.
	values := pcrs.Values{}
	for i, v := range t490.values[pcrs.SHA256] {
		values.Set(pcrs.SHA256, i, bytes.Clone(v))
	}
	for i := 0; i < 8; i++ {
		values.Set(pcrs.SHA1, i, bytes.Repeat([]byte{byte(0x10 + i)}, 20))
		values.Set(pcrs.SHA384, i, bytes.Repeat([]byte{byte(0x40 + i)}, 48))
	}
	sel := func(bank pcrs.Alg, mask ...byte) tpm2.TPMSPCRSelection {
		return tpm2.TPMSPCRSelection{Hash: tpm2.TPMIAlgHash(bank), PCRSelect: mask}
	}
	// digest is SHA-256 (the test signer's scheme) over vals in the order given.
	digest := func(vals pcrs.Values, order ...BankSelection) []byte {
		h := sha256.New()
		for _, bs := range order {
			for _, i := range bs.PCRs {
				v, _ := vals.Get(bs.Bank, i)
				h.Write(v)
			}
		}
		return h.Sum(nil)
	}
	quote := func(sels []tpm2.TPMSPCRSelection, d []byte) Quote {
		a := reencode(t, attest, func(_ *tpm2.TPMSAttest, i *tpm2.TPMSQuoteInfo) {
			i.PCRSelect.PCRSelections = sels
			i.PCRDigest.Buffer = d
		})
		return Quote{Attest: a, Signature: signer.sign(t, a)}
	}
	sha1First := []BankSelection{{pcrs.SHA1, []int{0, 1, 7}}, {pcrs.SHA256, []int{0, 1, 2, 4}}}
	sha256First := []BankSelection{sha1First[1], sha1First[0]}
	sha1Sel := sel(pcrs.SHA1, 0x83, 0, 0)
	sha256Sel := sel(pcrs.SHA256, 0x17, 0, 0)
	ak := &signer.k.PublicKey

	// Accepted: two banks, either order, with the digest in that order.
	for _, c := range []struct {
		name string
		sels []tpm2.TPMSPCRSelection
		want []BankSelection
	}{
		{"sha1 then sha256", []tpm2.TPMSPCRSelection{sha1Sel, sha256Sel}, sha1First},
		{"sha256 then sha1", []tpm2.TPMSPCRSelection{sha256Sel, sha1Sel}, sha256First},
		{"three banks", []tpm2.TPMSPCRSelection{sel(pcrs.SHA384, 0x01, 0, 0), sha256Sel, sha1Sel},
			[]BankSelection{{pcrs.SHA384, []int{0}}, sha256First[0], sha256First[1]}},
		{"one bank", []tpm2.TPMSPCRSelection{sha256Sel}, sha256First[:1]},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, err := VerifyQuoteMulti(ak, quote(c.sels, digest(values, c.want...)), t490.extraData, values)
			if err != nil {
				t.Fatalf("VerifyQuoteMulti: %v", err)
			}
			if !slices.EqualFunc(f.Selection, c.want, func(a, b BankSelection) bool { return a.Bank == b.Bank && slices.Equal(a.PCRs, b.PCRs) }) {
				t.Errorf("Selection %v, want %v", f.Selection, c.want)
			}
			if len(c.want) == 1 {
				if f.Bank != c.want[0].Bank || !slices.Equal(f.PCRs, c.want[0].PCRs) {
					t.Errorf("one bank: Bank %s PCRs %v", f.Bank, f.PCRs)
				}
			} else {
				if f.Bank != 0 || f.PCRs != nil {
					t.Errorf("several banks: Bank %s PCRs %v, want unset", f.Bank, f.PCRs)
				}
				if err := CheckSelection(f, pcrs.SHA256, []int{0, 1, 2, 4}); ReasonOf(err) != ReasonQuotePCRSelection {
					t.Errorf("CheckSelection of a multi-bank quote: %v", err)
				}
			}
			wantWeak := slices.ContainsFunc(c.want, func(b BankSelection) bool { return b.Bank == pcrs.SHA1 })
			if got := slices.Contains(f.Weak, "pcr bank sha1"); got != wantWeak {
				t.Errorf("Weak %q", f.Weak)
			}
			// The plugin's rule is unchanged: VerifyQuote refuses several banks.
			if len(c.want) > 1 {
				if _, err := VerifyQuote(ak, quote(c.sels, digest(values, c.want...)), t490.extraData, values); ReasonOf(err) != ReasonQuotePCRSelection {
					t.Errorf("VerifyQuote of a multi-bank quote: %v, want %s", err, ReasonQuotePCRSelection)
				}
			}
		})
	}

	altered := func(bank pcrs.Alg, i int) pcrs.Values {
		out := pcrs.Values{}
		for a, m := range values {
			for j, v := range m {
				out.Set(a, j, bytes.Clone(v))
			}
		}
		out[bank][i][0] ^= 0xff
		return out
	}
	without := func(bank pcrs.Alg, i int) pcrs.Values {
		out := pcrs.Values{}
		for a, m := range values {
			for j, v := range m {
				if a != bank || j != i {
					out.Set(a, j, v)
				}
			}
		}
		return out
	}
	both := []tpm2.TPMSPCRSelection{sha1Sel, sha256Sel}
	good := digest(values, sha1First...)
	for _, c := range []struct {
		name   string
		q      Quote
		values pcrs.Values
		want   Reason
	}{
		{"digest in the other bank order", quote(both, digest(values, sha256First...)), values, ReasonQuoteDigest},
		{"selection reordered, digest not", quote([]tpm2.TPMSPCRSelection{sha256Sel, sha1Sel}, good), values, ReasonQuoteDigest},
		{"digest in index order across banks", quote(both, digest(values, BankSelection{pcrs.SHA1, []int{0}}, BankSelection{pcrs.SHA256, []int{0}},
			BankSelection{pcrs.SHA1, []int{1}}, BankSelection{pcrs.SHA256, []int{1, 2, 4}}, BankSelection{pcrs.SHA1, []int{7}})), values, ReasonQuoteDigest},
		{"first bank's value altered", quote(both, good), altered(pcrs.SHA1, 7), ReasonQuoteDigest},
		{"second bank's value altered", quote(both, good), altered(pcrs.SHA256, 4), ReasonQuoteDigest},
		{"second bank's value missing", quote(both, good), without(pcrs.SHA256, 2), ReasonQuotePCRValues},
		{"first bank's value missing", quote(both, good), without(pcrs.SHA1, 0), ReasonQuotePCRValues},
		{"second bank's value of the first bank's size", quote(both, good), func() pcrs.Values {
			v := without(pcrs.SHA256, 1)
			v.Set(pcrs.SHA256, 1, make([]byte, 20))
			return v
		}(), ReasonQuotePCRValues},
		{"bank selected twice", quote([]tpm2.TPMSPCRSelection{sha1Sel, sha256Sel, sel(pcrs.SHA1, 0x01, 0, 0)}, good), values, ReasonQuotePCRSelection},
		{"second bank with no PCR", quote([]tpm2.TPMSPCRSelection{sha1Sel, sel(pcrs.SHA256, 0, 0, 0)}, digest(values, sha1First[0])), values, ReasonQuotePCRSelection},
		{"second bank unknown", quote([]tpm2.TPMSPCRSelection{sha1Sel, {Hash: 0x0099, PCRSelect: []byte{1, 0, 0}}}, good), values, ReasonQuotePCRSelection},
		{"second bank PCR 24", quote([]tpm2.TPMSPCRSelection{sha1Sel, sel(pcrs.SHA256, 0x17, 0, 0, 1)}, good), values, ReasonQuotePCRSelection},
		{"no bank", quote(nil, good), values, ReasonQuotePCRSelection},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, err := VerifyQuoteMulti(ak, c.q, t490.extraData, c.values)
			if err == nil {
				t.Fatalf("accepted (facts %+v), want %s", f, c.want)
			}
			if got := ReasonOf(err); got != c.want {
				t.Fatalf("reason %q (%v), want %q", got, err, c.want)
			}
		})
	}

	// The real single-bank quotes verify the same way through either function.
	for _, q := range loadRealQuotes(t) {
		quote := Quote{Attest: readReal(t, q.dir+"/"+q.attest), Signature: readReal(t, q.dir+"/"+q.sig)}
		f, err := VerifyQuoteMulti(loadAK(t, q), quote, q.extraData, q.values)
		if err != nil {
			t.Errorf("%s: VerifyQuoteMulti: %v", q.name, err)
			continue
		}
		if f.Bank != q.bank || !slices.Equal(f.PCRs, q.pcrs) || len(f.Selection) != 1 {
			t.Errorf("%s: facts %+v", q.name, f)
		}
	}
}
