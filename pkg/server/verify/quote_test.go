package verify

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

func loadAK(t testing.TB, q realQuote) crypto.PublicKey {
	t.Helper()
	ak, err := ParseAKPublic(readReal(t, q.dir+"/"+q.ak))
	if err != nil {
		t.Fatalf("%s: ParseAKPublic: %v", q.name, err)
	}
	return ak.Public
}

func TestVerifyQuoteReal(t *testing.T) {
	qs := loadRealQuotes(t)
	ok := 0
	for _, q := range qs {
		t.Run(q.name, func(t *testing.T) {
			ak := loadAK(t, q)
			quote := Quote{Attest: readReal(t, q.dir+"/"+q.attest), Signature: readReal(t, q.dir+"/"+q.sig)}
			f, err := VerifyQuote(ak, quote, q.extraData, q.values)
			if err != nil {
				t.Fatalf("VerifyQuote: %v", err)
			}
			if f.Bank != q.bank || !slices.Equal(f.PCRs, q.pcrs) || f.SignatureHash != q.sigHash {
				t.Errorf("facts bank=%s pcrs=%v sighash=%s, want %s %v %s", f.Bank, f.PCRs, f.SignatureHash, q.bank, q.pcrs, q.sigHash)
			}
			if f.ResetCount != q.reset || f.RestartCount != q.restart || f.Clock != q.clock || !f.Safe {
				t.Errorf("clock info %d/%d/%d safe=%v", f.ResetCount, f.RestartCount, f.Clock, f.Safe)
			}
			if err := CheckSelection(f, q.bank, q.pcrs); err != nil {
				t.Errorf("CheckSelection: %v", err)
			}
			wantWeak := 0
			if q.sigHash == pcrs.SHA1 {
				wantWeak++
			}
			if q.bank == pcrs.SHA1 {
				wantWeak++
			}
			if len(f.Weak) != wantWeak {
				t.Errorf("Weak = %q", f.Weak)
			}
			ok++
		})
	}
	t.Logf("%d of %d real quotes verify", ok, len(qs))
}

// testSigner re-signs mutated real TPMS_ATTEST bytes with a software ECDSA
// key, to reach the checks that come after the signature.
type testSigner struct{ k *ecdsa.PrivateKey }

func newTestSigner(t testing.TB) *testSigner {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &testSigner{k}
}

func (s *testSigner) sign(t testing.TB, attest []byte) []byte {
	d := sha256.Sum256(attest)
	r, ss, err := ecdsa.Sign(rand.Reader, s.k, d[:])
	if err != nil {
		t.Fatal(err)
	}
	return tpm2.Marshal(tpm2.TPMTSignature{
		SigAlg: tpm2.TPMAlgECDSA,
		Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
			Hash:       tpm2.TPMAlgSHA256,
			SignatureR: tpm2.TPM2BECCParameter{Buffer: r.Bytes()},
			SignatureS: tpm2.TPM2BECCParameter{Buffer: ss.Bytes()},
		}),
	})
}

// reencode decodes the real T490 attest, lets mut change it, and encodes it.
func reencode(t testing.TB, attest []byte, mut func(*tpm2.TPMSAttest, *tpm2.TPMSQuoteInfo)) []byte {
	att, err := tpm2.Unmarshal[tpm2.TPMSAttest](attest)
	if err != nil {
		t.Fatal(err)
	}
	info, err := att.Attested.Quote()
	if err != nil {
		t.Fatal(err)
	}
	mut(att, info)
	att.Attested = tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, info)
	return tpm2.Marshal(*att)
}

func TestVerifyQuoteRejects(t *testing.T) {
	qs := loadRealQuotes(t)
	t490, win := qs[0], qs[1]
	ak := loadAK(t, t490)
	attest := readReal(t, t490.dir+"/"+t490.attest)
	sig := readReal(t, t490.dir+"/"+t490.sig)
	winAK := loadAK(t, win)
	winAttest := readReal(t, win.dir+"/"+win.attest)
	winSig := readReal(t, win.dir+"/"+win.sig)
	signer := newTestSigner(t)

	flip := func(b []byte, i int) []byte { c := bytes.Clone(b); c[i] ^= 0x01; return c }
	otherValues := func(v pcrs.Values, bank pcrs.Alg, i int) pcrs.Values {
		out := pcrs.Values{}
		for a, m := range v {
			for j, x := range m {
				out.Set(a, j, bytes.Clone(x))
			}
		}
		out[bank][i][0] ^= 0xff
		return out
	}
	without := func(v pcrs.Values, bank pcrs.Alg, i int) pcrs.Values {
		out := pcrs.Values{}
		for a, m := range v {
			for j, x := range m {
				if a == bank && j == i {
					continue
				}
				out.Set(a, j, x)
			}
		}
		return out
	}
	resigned := func(mut func(*tpm2.TPMSAttest, *tpm2.TPMSQuoteInfo)) (crypto.PublicKey, Quote) {
		a := reencode(t, attest, mut)
		return &signer.k.PublicKey, Quote{Attest: a, Signature: signer.sign(t, a)}
	}

	type tc struct {
		name   string
		ak     crypto.PublicKey
		q      Quote
		extra  []byte
		values pcrs.Values
		want   Reason
	}
	cases := []tc{
		{"oversized attest", ak, Quote{append(bytes.Clone(attest), make([]byte, MaxAttestSize)...), sig}, t490.extraData, t490.values, ReasonQuoteMalformed},
		{"oversized signature", ak, Quote{attest, make([]byte, MaxSignatureSize+1)}, t490.extraData, t490.values, ReasonQuoteMalformed},
		{"truncated attest", ak, Quote{attest[:len(attest)-1], sig}, t490.extraData, t490.values, ReasonQuoteMalformed},
		{"trailing byte after attest", ak, Quote{append(bytes.Clone(attest), 0), sig}, t490.extraData, t490.values, ReasonQuoteMalformed},
		{"tiny attest", ak, Quote{attest[:3], sig}, t490.extraData, t490.values, ReasonQuoteMalformed},
		{"wrong magic", ak, Quote{flip(attest, 0), sig}, t490.extraData, t490.values, ReasonQuoteNotGenerated},
		{"wrong type (certify)", ak, Quote{func() []byte { c := bytes.Clone(attest); binary.BigEndian.PutUint16(c[4:], 0x8017); return c }(), sig}, t490.extraData, t490.values, ReasonQuoteNotQuote},
		{"signature byte flipped", ak, Quote{attest, flip(sig, len(sig)-1)}, t490.extraData, t490.values, ReasonQuoteSignature},
		{"signature truncated", ak, Quote{attest, sig[:len(sig)-1]}, t490.extraData, t490.values, ReasonQuoteSignature},
		{"signature trailing byte", ak, Quote{attest, append(bytes.Clone(sig), 0)}, t490.extraData, t490.values, ReasonQuoteSignature},
		{"signature empty", ak, Quote{attest, nil}, t490.extraData, t490.values, ReasonQuoteSignature},
		{"signature unsupported alg", ak, Quote{attest, func() []byte { c := bytes.Clone(sig); binary.BigEndian.PutUint16(c, 0x001a); return c }()}, t490.extraData, t490.values, ReasonQuoteSignature},
		{"signature unsupported hash", ak, Quote{attest, func() []byte { c := bytes.Clone(sig); binary.BigEndian.PutUint16(c[2:], 0x0012); return c }()}, t490.extraData, t490.values, ReasonQuoteSignature},
		{"attest body byte flipped", ak, Quote{flip(attest, len(attest)-1), sig}, t490.extraData, t490.values, ReasonQuoteSignature},
		{"clock changed", ak, Quote{flip(attest, 0x30), sig}, t490.extraData, t490.values, ReasonQuoteSignature},
		{"signed by another AK", winAK, Quote{attest, sig}, t490.extraData, t490.values, ReasonQuoteSignature},
		{"RSA signature with other RSA key", &signer.k.PublicKey, Quote{winAttest, winSig}, nil, win.values, ReasonQuoteSignature},
		{"other extraData", ak, Quote{attest, sig}, []byte{0xab, 0xcd, 0xee}, t490.values, ReasonQuoteExtraData},
		{"extraData as text", ak, Quote{attest, sig}, []byte("abcdef"), t490.values, ReasonQuoteExtraData},
		{"no extraData expected", ak, Quote{attest, sig}, nil, t490.values, ReasonQuoteExtraData},
		{"extraData expected, none quoted", winAK, Quote{winAttest, winSig}, []byte{1}, win.values, ReasonQuoteExtraData},
		{"PCR value changed", ak, Quote{attest, sig}, t490.extraData, otherValues(t490.values, pcrs.SHA256, 4), ReasonQuoteDigest},
		{"PCR value changed (sha1 bank)", winAK, Quote{winAttest, winSig}, nil, otherValues(win.values, pcrs.SHA1, 23), ReasonQuoteDigest},
		{"PCR value missing", ak, Quote{attest, sig}, t490.extraData, without(t490.values, pcrs.SHA256, 2), ReasonQuotePCRValues},
		{"PCR values of another bank only", ak, Quote{attest, sig}, t490.extraData, pcrs.Values{pcrs.SHA1: win.values[pcrs.SHA1]}, ReasonQuotePCRValues},
		{"PCR value wrong size", ak, Quote{attest, sig}, t490.extraData, func() pcrs.Values {
			v := without(t490.values, pcrs.SHA256, 0)
			v.Set(pcrs.SHA256, 0, make([]byte, 20))
			return v
		}(), ReasonQuotePCRValues},
	}
	// Mutations re-signed with a software key, to reach later checks.
	add := func(name string, want Reason, values pcrs.Values, mut func(*tpm2.TPMSAttest, *tpm2.TPMSQuoteInfo)) {
		k, q := resigned(mut)
		cases = append(cases, tc{name, k, q, t490.extraData, values, want})
	}
	add("resigned control: unchanged", "", t490.values, func(*tpm2.TPMSAttest, *tpm2.TPMSQuoteInfo) {})
	add("other PCRs selected", ReasonQuoteDigest, t490.values, func(_ *tpm2.TPMSAttest, i *tpm2.TPMSQuoteInfo) {
		i.PCRSelect.PCRSelections[0].PCRSelect = []byte{0x07, 0, 0} // 0,1,2 (not 4)
	})
	add("two banks selected", ReasonQuotePCRSelection, t490.values, func(_ *tpm2.TPMSAttest, i *tpm2.TPMSQuoteInfo) {
		i.PCRSelect.PCRSelections = append(i.PCRSelect.PCRSelections, tpm2.TPMSPCRSelection{Hash: tpm2.TPMAlgSHA1, PCRSelect: []byte{1, 0, 0}})
	})
	add("second bank with no PCR", ReasonQuotePCRSelection, t490.values, func(_ *tpm2.TPMSAttest, i *tpm2.TPMSQuoteInfo) {
		i.PCRSelect.PCRSelections = append(i.PCRSelect.PCRSelections, tpm2.TPMSPCRSelection{Hash: tpm2.TPMAlgSHA1, PCRSelect: []byte{0, 0, 0}})
	})
	add("no bank selected", ReasonQuotePCRSelection, t490.values, func(_ *tpm2.TPMSAttest, i *tpm2.TPMSQuoteInfo) {
		i.PCRSelect.PCRSelections = nil
	})
	add("no PCR selected", ReasonQuotePCRSelection, t490.values, func(_ *tpm2.TPMSAttest, i *tpm2.TPMSQuoteInfo) {
		i.PCRSelect.PCRSelections[0].PCRSelect = []byte{0, 0, 0}
	})
	add("PCR 24 selected", ReasonQuotePCRSelection, t490.values, func(_ *tpm2.TPMSAttest, i *tpm2.TPMSQuoteInfo) {
		i.PCRSelect.PCRSelections[0].PCRSelect = []byte{0x17, 0, 0, 1}
	})
	add("unknown bank", ReasonQuotePCRSelection, t490.values, func(_ *tpm2.TPMSAttest, i *tpm2.TPMSQuoteInfo) {
		i.PCRSelect.PCRSelections[0].Hash = 0x0099
	})
	add("other bank, same PCRs", ReasonQuotePCRValues, t490.values, func(_ *tpm2.TPMSAttest, i *tpm2.TPMSQuoteInfo) {
		i.PCRSelect.PCRSelections[0].Hash = tpm2.TPMAlgSHA384
	})
	add("pcrDigest changed", ReasonQuoteDigest, t490.values, func(_ *tpm2.TPMSAttest, i *tpm2.TPMSQuoteInfo) {
		i.PCRDigest.Buffer[0] ^= 1
	})
	add("pcrDigest truncated", ReasonQuoteDigest, t490.values, func(_ *tpm2.TPMSAttest, i *tpm2.TPMSQuoteInfo) {
		i.PCRDigest.Buffer = i.PCRDigest.Buffer[:20]
	})
	add("extraData changed", ReasonQuoteExtraData, t490.values, func(a *tpm2.TPMSAttest, _ *tpm2.TPMSQuoteInfo) {
		a.ExtraData.Buffer = []byte{0xab, 0xcd, 0xee}
	})
	add("extraData extended", ReasonQuoteExtraData, t490.values, func(a *tpm2.TPMSAttest, _ *tpm2.TPMSQuoteInfo) {
		a.ExtraData.Buffer = []byte{0xab, 0xcd, 0xef, 0x00}
	})

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := VerifyQuote(c.ak, c.q, c.extra, c.values)
			if c.want == "" {
				if err != nil {
					t.Fatalf("control case failed: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted (facts %+v), want %s", f, c.want)
			}
			if got := ReasonOf(err); got != c.want {
				t.Fatalf("reason %q (%v), want %q", got, err, c.want)
			}
			// A nonce mismatch shows both values in hex.
			if c.want == ReasonQuoteExtraData && !strings.Contains(err.Error(), fmt.Sprintf("differs from the expected %x (", c.extra)) {
				t.Errorf("%v does not show the expected extraData %x", err, c.extra)
			}
		})
	}
	if _, err := VerifyQuote(nil, Quote{attest, sig}, t490.extraData, t490.values); ReasonOf(err) != ReasonInvalidArgument {
		t.Errorf("nil AK: %v", err)
	}
}

func TestCheckSelection(t *testing.T) {
	f := &QuoteFacts{Bank: pcrs.SHA256, PCRs: []int{0, 1, 2, 4}}
	if err := CheckSelection(f, pcrs.SHA256, []int{4, 2, 1, 0, 0}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		bank pcrs.Alg
		want []int
	}{
		{"other bank", pcrs.SHA1, []int{0, 1, 2, 4}},
		{"fewer PCRs", pcrs.SHA256, []int{0, 1, 2}},
		{"more PCRs", pcrs.SHA256, []int{0, 1, 2, 4, 7}},
		{"other PCRs", pcrs.SHA256, []int{0, 1, 2, 3}},
	} {
		if err := CheckSelection(f, c.bank, c.want); ReasonOf(err) != ReasonQuotePCRSelection {
			t.Errorf("%s: %v, want %s", c.name, err, ReasonQuotePCRSelection)
		}
	}
	if err := CheckSelection(nil, pcrs.SHA256, nil); ReasonOf(err) != ReasonInvalidArgument {
		t.Errorf("nil facts: %v", err)
	}
}

func TestUnwrapAttest(t *testing.T) {
	attest := readReal(t, "quotes/lenovo-t490-stm/quote.out")
	wrapped := append(binary.BigEndian.AppendUint16(nil, uint16(len(attest))), attest...)
	if !bytes.Equal(UnwrapAttest(wrapped), attest) || !bytes.Equal(UnwrapAttest(attest), attest) {
		t.Fatal("UnwrapAttest")
	}
	junk := []byte{0, 4, 1, 2, 3, 4}
	if !bytes.Equal(UnwrapAttest(junk), junk) {
		t.Fatal("junk changed")
	}
}

func BenchmarkVerifyQuote(b *testing.B) {
	for _, q := range loadRealQuotes(b)[:3] {
		ak := loadAK(b, q)
		quote := Quote{Attest: readReal(b, q.dir+"/"+q.attest), Signature: readReal(b, q.dir+"/"+q.sig)}
		b.Run(q.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := VerifyQuote(ak, quote, q.extraData, q.values); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
