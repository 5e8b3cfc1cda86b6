package verify

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/tpmid/tpmid/internal/realdata"
)

// Kinds of structure the agreement checks compare.
const (
	kindAttest byte = iota
	kindSignature
	kindPublic
	kindCreationData
	numKinds
)

// realStructures returns every quote TPMS_ATTEST, TPMT_SIGNATURE and
// TPMT_PUBLIC under the real evidence folder's quotes/, by kind (TPM2B
// wrappers removed), or nil without the folder.
func realStructures(tb testing.TB) map[byte]map[string][]byte {
	tb.Helper()
	dir, err := realdata.Find()
	if err != nil {
		return nil
	}
	out := map[byte]map[string][]byte{kindAttest: {}, kindSignature: {}, kindPublic: {}, kindCreationData: {}}
	err = filepath.WalkDir(filepath.Join(dir, "quotes"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		base := d.Name()
		kind := numKinds
		switch {
		case strings.Contains(base, "certify_creation.tpms_attest"):
			// TPM2_CertifyCreation's attestation: tpmid decodes none
			// since 2026-11-26 (its signature is a TPMT_SIGNATURE like a
			// quote's, and stays).
			return nil
		case strings.Contains(base, "tpms_attest") || base == "quote.out":
			kind = kindAttest
		case strings.Contains(base, "tpmt_signature") || base == "quote.sig":
			kind = kindSignature
		case strings.Contains(base, "tpmt_public") || base == "ak.pub" || base == "ek.pub":
			kind = kindPublic
		case strings.Contains(base, "creation_data"):
			kind = kindCreationData
		default:
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		switch kind {
		case kindAttest:
			b = UnwrapAttest(b)
		case kindPublic:
			if len(b) >= 2 && int(binary.BigEndian.Uint16(b)) == len(b)-2 {
				b = b[2:]
			}
		}
		rel, _ := filepath.Rel(dir, p)
		out[kind][rel] = b
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// agree compares the fast decoder of kind with go-tpm's canonical decoding
// on b. It reports whether the fast decoder covered b (false: errSlowPath,
// or an attestation that is no quote, which VerifyQuote refuses first).
func agree(t *testing.T, kind byte, b []byte) (covered bool) {
	t.Helper()
	switch kind {
	case kindAttest:
		if len(b) < 6 || binary.BigEndian.Uint32(b) != tpmGeneratedValue {
			return false
		}
		typ := binary.BigEndian.Uint16(b[4:])
		if typ != tpmSTAttestQuote {
			return false
		}
		slow, serr := unmarshalCanonical[tpm2.TPMSAttest](b)
		fast, ferr := parseQuoteAttest(b)
		var want any
		var info *tpm2.TPMSQuoteInfo
		if serr == nil {
			info, serr = slow.Attested.Quote()
		}
		if serr == nil {
			want = &quoteAttest{attestHeader: headerOf(slow), PCRSelect: info.PCRSelect, PCRDigest: info.PCRDigest.Buffer}
		}
		if (ferr == nil) != (serr == nil) {
			t.Fatalf("TPMS_ATTEST %x: fast decoder err %v, go-tpm err %v", b, ferr, serr)
		}
		if ferr == nil && !equalish(fast, want) {
			t.Fatalf("TPMS_ATTEST %x:\nfast   %+v\ngo-tpm %+v", b, fast, want)
		}
	case kindCreationData:
		fast, ferr := parseCreationData(b)
		slow, serr := unmarshalCanonical[tpm2.TPMSCreationData](b)
		if (ferr == nil) != (serr == nil) {
			t.Fatalf("TPMS_CREATION_DATA %x: fast decoder err %v, go-tpm err %v", b, ferr, serr)
		}
		if ferr != nil {
			return true
		}
		want := &creationData{
			PCRSelect: slow.PCRSelect, PCRDigest: slow.PCRDigest.Buffer,
			Locality:      tpm2.Marshal(slow.Locality)[0],
			ParentNameAlg: slow.ParentNameAlg, ParentName: slow.ParentName.Buffer,
			ParentQualifiedName: slow.ParentQualifiedName.Buffer, OutsideInfo: slow.OutsideInfo.Buffer,
		}
		if !equalish(fast, want) {
			t.Fatalf("TPMS_CREATION_DATA %x:\nfast   %+v\ngo-tpm %+v", b, fast, want)
		}
	case kindSignature:
		fast, ferr := parseSignature(b)
		if errors.Is(ferr, errSlowPath) {
			return false
		}
		slow, serr := unmarshalCanonical[tpm2.TPMTSignature](b)
		if (ferr == nil) != (serr == nil) {
			t.Fatalf("TPMT_SIGNATURE %x: fast decoder err %v, go-tpm err %v", b, ferr, serr)
		}
		if ferr != nil {
			return true
		}
		want := tpmSignature{Alg: slow.SigAlg}
		if slow.SigAlg == tpm2.TPMAlgECDSA {
			s, _ := slow.Signature.ECDSA()
			want.Hash, want.R, want.S = s.Hash, s.SignatureR.Buffer, s.SignatureS.Buffer
		} else {
			s, _ := slow.Signature.RSASSA()
			if slow.SigAlg == tpm2.TPMAlgRSAPSS {
				s, _ = slow.Signature.RSAPSS()
			}
			want.Hash, want.RSA = s.Hash, s.Sig.Buffer
		}
		if !equalish(*fast, want) {
			t.Fatalf("TPMT_SIGNATURE %x:\nfast   %+v\ngo-tpm %+v", b, *fast, want)
		}
	case kindPublic:
		fast, ferr := parsePublic(b)
		if errors.Is(ferr, errSlowPath) {
			return false
		}
		slow, serr := unmarshalCanonical[tpm2.TPMTPublic](b)
		if (ferr == nil) != (serr == nil) {
			t.Fatalf("TPMT_PUBLIC %x: fast decoder err %v, go-tpm err %v", b, ferr, serr)
		}
		if ferr != nil {
			return true
		}
		if fast.Type != slow.Type || fast.NameAlg != slow.NameAlg || !bytes.Equal(fast.AuthPolicy, slow.AuthPolicy.Buffer) ||
			binary.BigEndian.Uint32(tpm2.Marshal(slow.ObjectAttributes)) != fast.Attributes {
			t.Fatalf("TPMT_PUBLIC %x: header differs: fast %+v, go-tpm %+v", b, *fast, *slow)
		}
		key, kerr := tpm2.Pub(*slow)
		if kerr != nil {
			t.Fatalf("TPMT_PUBLIC %x: the fast decoder makes a key, go-tpm none: %v", b, kerr)
		}
		if got := fast.key(); !reflect.DeepEqual(got, key) {
			t.Fatalf("TPMT_PUBLIC %x: key %+v, go-tpm %+v", b, got, key)
		}
		name, nerr := tpm2.ObjectName(slow)
		if nerr != nil || !bytes.Equal(fast.name(b), name.Buffer) {
			t.Fatalf("TPMT_PUBLIC %x: name %x, go-tpm %x (%v)", b, fast.name(b), name.Buffer, nerr)
		}
		if slow.Type == tpm2.TPMAlgRSA {
			parms, _ := slow.Parameters.RSADetail()
			if uint16(parms.KeyBits) != fast.KeyBits || parms.Exponent != fast.Exponent || tpm2.TPMAlgID(parms.Scheme.Scheme) != fast.Scheme {
				t.Fatalf("TPMT_PUBLIC %x: RSA parameters differ", b)
			}
		} else {
			parms, _ := slow.Parameters.ECCDetail()
			if parms.CurveID != fast.CurveID || tpm2.TPMAlgID(parms.Scheme.Scheme) != fast.Scheme {
				t.Fatalf("TPMT_PUBLIC %x: ECC parameters differ", b)
			}
		}
	}
	return true
}

func headerOf(a *tpm2.TPMSAttest) attestHeader {
	return attestHeader{
		QualifiedSigner: a.QualifiedSigner.Buffer, ExtraData: a.ExtraData.Buffer,
		Clock: a.ClockInfo.Clock, ResetCount: a.ClockInfo.ResetCount, RestartCount: a.ClockInfo.RestartCount,
		Safe: a.ClockInfo.Safe, FirmwareVersion: a.FirmwareVersion,
	}
}

// equalish is reflect.DeepEqual with nil and empty byte slices equal
// (go-tpm makes empty slices, the fast decoder aliases zero-length ones).
func equalish(a, b any) bool {
	return reflect.DeepEqual(normalize(reflect.ValueOf(a)), normalize(reflect.ValueOf(b)))
}

func normalize(v reflect.Value) any {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		return normalize(v.Elem())
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return string(v.Bytes())
		}
		out := make([]any, v.Len())
		for i := range out {
			out[i] = normalize(v.Index(i))
		}
		return out
	case reflect.Struct:
		out := map[string]any{}
		for i := 0; i < v.NumField(); i++ {
			if f := v.Type().Field(i); f.IsExported() || f.Anonymous {
				out[f.Name] = normalize(v.Field(i))
			}
		}
		return out
	case reflect.Bool:
		return v.Bool()
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return v.Uint()
	default:
		return fmt.Sprint(v)
	}
}

// TestFastParseAgreesWithGoTPM: on every real quote, signature and public
// area, the fast decoders cover the structure and give go-tpm's fields,
// key and name; so do they on every truncation and on single-byte edits.
func TestFastParseAgreesWithGoTPM(t *testing.T) {
	real := realStructures(t)
	if real == nil {
		t.Skip("real TPM evidence not found")
	}
	for kind, files := range real {
		if len(files) == 0 {
			t.Fatalf("no real structures of kind %d", kind)
		}
		for name, b := range files {
			// An EK is a restricted decryption key with an AES
			// symmetric definition: go-tpm decodes it (and no AK has one).
			if !agree(t, kind, b) && !strings.HasSuffix(name, "/ek.pub") {
				t.Errorf("%s: the fast decoder does not cover this real structure", name)
			}
			for n := 0; n < len(b); n++ {
				agree(t, kind, b[:n])
			}
			agree(t, kind, append(bytes.Clone(b), 0))
			for i := range b {
				for _, x := range []byte{0x01, 0x80, 0xff} {
					c := bytes.Clone(b)
					c[i] ^= x
					agree(t, kind, c)
				}
			}
		}
	}
}

// TestFastParseShapes: hand-made structures at the edges of what the fast
// decoders cover.
func TestFastParseShapes(t *testing.T) {
	attest := func(safe byte, sel ...byte) []byte {
		b := []byte{0xff, 'T', 'C', 'G', 0x80, 0x18, 0, 0, 0, 2, 'x', 'y'}
		b = append(b, make([]byte, 16)...) // clock, resetCount, restartCount
		b = append(b, safe)
		b = append(b, make([]byte, 8)...) // firmwareVersion
		b = append(b, sel...)
		return append(b, 0, 1, 0xaa) // pcrDigest
	}
	oneBank := []byte{0, 0, 0, 1, 0, 0x0b, 3, 0xff, 0, 0}
	for name, tc := range map[string]struct {
		kind byte
		b    []byte
		ok   bool
	}{
		"quote":                 {kindAttest, attest(1, oneBank...), true},
		"quote safe 2":          {kindAttest, attest(2, oneBank...), false},
		"quote no bank":         {kindAttest, attest(0, 0, 0, 0, 0), true},
		"quote huge count":      {kindAttest, attest(0, 0xff, 0xff, 0xff, 0xff), false},
		"quote empty select":    {kindAttest, attest(0, 0, 0, 0, 1, 0, 0x0b, 0), true},
		"ecdsa signature":       {kindSignature, []byte{0, 0x18, 0, 0x0b, 0, 1, 1, 0, 1, 2}, true},
		"rsassa signature":      {kindSignature, []byte{0, 0x14, 0, 0x0b, 0, 2, 1, 2}, true},
		"signature trailing":    {kindSignature, []byte{0, 0x14, 0, 0x0b, 0, 1, 1, 9}, false},
		"signature short":       {kindSignature, []byte{0, 0x18, 0, 0x0b, 0, 1, 1, 0}, false},
		"ecc public":            {kindPublic, []byte{0, 0x23, 0, 0x0b, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0x18, 0, 0x0b, 0, 3, 0, 0x10, 0, 1, 1, 0, 1, 2}, true},
		"ecc public null sch":   {kindPublic, []byte{0, 0x23, 0, 0x0b, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0x10, 0, 3, 0, 0x10, 0, 1, 1, 0, 1, 2}, true},
		"ecc public short":      {kindPublic, []byte{0, 0x23, 0, 0x0b, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0x10, 0, 3, 0, 0x10, 0, 1, 1, 0, 2, 2}, false},
		"rsa public exponent 0": {kindPublic, []byte{0, 0x01, 0, 0x0b, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0x14, 0, 0x0b, 0x08, 0, 0, 0, 0, 0, 0, 1, 0x80}, true},
	} {
		t.Run(name, func(t *testing.T) {
			if !agree(t, tc.kind, tc.b) {
				t.Fatal("not covered by the fast decoder")
			}
			var err error
			switch tc.kind {
			case kindAttest:
				_, err = parseQuoteAttest(tc.b)
			case kindSignature:
				_, err = parseSignature(tc.b)
			default:
				_, err = parsePublic(tc.b)
			}
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok %v", err, tc.ok)
			}
		})
	}
	// The comparison itself tells fields apart.
	if equalish(&quoteAttest{PCRDigest: []byte{1}}, &quoteAttest{PCRDigest: []byte{2}}) ||
		equalish(&quoteAttest{attestHeader: attestHeader{Clock: 1}}, &quoteAttest{}) ||
		!equalish(&quoteAttest{PCRDigest: []byte{}}, &quoteAttest{}) {
		t.Fatal("equalish does not compare the decoded fields")
	}
	// Shapes left to go-tpm.
	for name, b := range map[string][]byte{
		"hmac signature":   {0, 0x05, 0, 0x0b},
		"null signature":   {0, 0x10},
		"aes symmetric":    {0, 0x01, 0, 0x0b, 0, 0, 0, 0, 0, 0, 0, 0x06, 0, 0x80, 0, 0x43},
		"keyedhash public": {0, 0x08, 0, 0x0b, 0, 0, 0, 0, 0, 0},
		"sm3 nameAlg":      {0, 0x01, 0, 0x12, 0, 0, 0, 0, 0, 0},
		"bn curve":         {0, 0x23, 0, 0x0b, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0x10, 0, 0x10, 0, 0x10},
	} {
		var err error
		if strings.Contains(name, "signature") {
			_, err = parseSignature(b)
		} else {
			_, err = parsePublic(b)
		}
		if !errors.Is(err, errSlowPath) {
			t.Errorf("%s: err = %v, want errSlowPath", name, err)
		}
	}
}

// FuzzFastParseAgreesWithGoTPM: on any input, the fast decoders accept
// what go-tpm decodes canonically, refuse what it refuses, and give the
// same fields. Seeded with the real structures.
func FuzzFastParseAgreesWithGoTPM(f *testing.F) {
	for kind, files := range realStructures(f) {
		for _, b := range files {
			f.Add(kind, b)
		}
	}
	f.Add(kindSignature, []byte{0, 0x18, 0, 0x0b, 0, 1, 1, 0, 1, 2})
	f.Fuzz(func(t *testing.T, kind byte, b []byte) {
		agree(t, kind%numKinds, b)
	})
}

// BenchmarkTPMDecode: the fast decoders against go-tpm's canonical decoding
// (unmarshal and re-encode) on the real GCE Windows quote, its signature and
// the AK's public area (with the Name).
func BenchmarkTPMDecode(b *testing.B) {
	dir := realdata.Path(b, "quotes/gce-windows-shielded-vm")
	read := func(name string) []byte {
		v, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			b.Skip(err)
		}
		return v
	}
	att, sig, pub := read("quote.tpms_attest.bin"), read("quote.tpmt_signature.bin"), read("ak.tpmt_public.bin")
	for _, c := range []struct {
		name string
		f    func() error
	}{
		{"attest/fast", func() error { _, err := parseQuoteAttest(att); return err }},
		{"attest/go-tpm", func() error { _, err := unmarshalCanonical[tpm2.TPMSAttest](att); return err }},
		{"signature/fast", func() error { _, err := parseSignature(sig); return err }},
		{"signature/go-tpm", func() error { _, err := unmarshalCanonical[tpm2.TPMTSignature](sig); return err }},
		{"public+name/fast", func() error {
			p, err := parsePublic(pub)
			if err == nil {
				p.name(pub)
			}
			return err
		}},
		{"public+name/go-tpm", func() error {
			p, err := unmarshalCanonical[tpm2.TPMTPublic](pub)
			if err == nil {
				_, err = tpm2.ObjectName(p)
			}
			return err
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := c.f(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
