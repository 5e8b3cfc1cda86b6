package eventlog

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// sampleLog builds a small agile log: StartupLocality 3, S-CRTM version,
// SecureBoot=1, separators, an EFI application digest and the EBS actions.
func sampleLog(t testing.TB, banks ...pcrs.Alg) (*Builder, pcrs.Values) {
	t.Helper()
	b, err := NewBuilder(banks...)
	if err != nil {
		t.Fatal(err)
	}
	tpm := newSoftPCRs(banks, 3)
	b.StartupLocality(3)
	tpm.extend(0, b.Extend(0, EvSCRTMVersion, utf16z("1.0")))
	tpm.extend(7, b.Extend(7, EvEFIVariableDriverConf, EFIVariableData(EFIGlobalVariable, "SecureBoot", []byte{1})))
	for pcr := uint32(0); pcr <= 7; pcr++ {
		tpm.extend(pcr, b.Extend(pcr, EvSeparator, []byte{0, 0, 0, 0}))
	}
	app := map[pcrs.Alg][]byte{}
	for _, a := range banks {
		h, _ := a.New()
		h.Write([]byte("authenticode of grubx64.efi"))
		app[a] = h.Sum(nil)
	}
	if err := b.ExtendDigest(4, EvEFIBootServicesApp, app, imageLoad(`\EFI\BOOT\BOOTX64.EFI`)); err != nil {
		t.Fatal(err)
	}
	tpm.extend(4, app)
	tpm.extend(5, b.Extend(5, EvEFIAction, []byte(EBSInvocation)))
	tpm.extend(5, b.Extend(5, EvEFIAction, []byte(EBSSuccess)))
	if b.Err() != nil {
		t.Fatal(b.Err())
	}
	return b, tpm.v
}

// softPCRs is an independent PCR model for tests (not the replayer).
type softPCRs struct{ v pcrs.Values }

func newSoftPCRs(banks []pcrs.Alg, locality byte) *softPCRs {
	s := &softPCRs{v: pcrs.Values{}}
	for _, a := range banks {
		z := make([]byte, a.Size())
		z[len(z)-1] = locality
		s.v.Set(a, 0, z)
	}
	return s
}

func (s *softPCRs) extend(pcr uint32, d map[pcrs.Alg][]byte) {
	for a, dig := range d {
		cur, ok := s.v.Get(a, int(pcr))
		if !ok {
			cur = make([]byte, a.Size())
		}
		h, _ := a.New()
		h.Write(cur)
		h.Write(dig)
		s.v.Set(a, int(pcr), h.Sum(nil))
	}
}

func utf16z(s string) []byte {
	var b []byte
	for _, r := range s {
		b = binary.LittleEndian.AppendUint16(b, uint16(r))
	}
	return append(b, 0, 0)
}

func imageLoad(path string) []byte {
	fp := append([]byte{4, 4, 0, 0}, utf16z(path)...)
	binary.LittleEndian.PutUint16(fp[2:], uint16(len(fp)))
	dp := append(fp, 0x7f, 0xff, 4, 0)
	b := make([]byte, 32)
	binary.LittleEndian.PutUint64(b[0:], 0x1000)
	binary.LittleEndian.PutUint64(b[8:], 0x2000)
	binary.LittleEndian.PutUint64(b[24:], uint64(len(dp)))
	return append(b, dp...)
}

func TestBuilderRoundTrip(t *testing.T) {
	for _, banks := range [][]pcrs.Alg{{pcrs.SHA256}, {pcrs.SHA1, pcrs.SHA256, pcrs.SHA384, pcrs.SHA512}, {pcrs.SHA256, pcrs.SM3}} {
		b, want := sampleLog(t, banks...)
		l, err := Parse(b.Bytes())
		if err != nil {
			t.Fatalf("%v: %v", banks, err)
		}
		if l.Format != CryptoAgile || len(l.Events) != 15 || l.StartupLocality == nil || *l.StartupLocality != 3 {
			t.Fatalf("%v: format %v, %d events, locality %v", banks, l.Format, len(l.Events), l.StartupLocality)
		}
		got, err := l.Replay()
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range banks {
			for _, i := range want.Indices(a) {
				g, _ := got.Get(a, i)
				w, _ := want.Get(a, i)
				if !bytes.Equal(g, w) {
					t.Errorf("%v %s PCR%d: replay %x, soft TPM %x", banks, a, i, g, w)
				}
			}
		}
		r, err := VerifyAgainst(l, want)
		if err != nil {
			t.Fatalf("VerifyAgainst: %v", err)
		}
		if slices.Contains(r.Quirks, QuirkEBSMissing) {
			t.Error("EBS quirk on a log that has the EBS events")
		}
		sb, err := SecureBoot(l)
		if err != nil || sb.Mode != SecureBootEnabled {
			t.Errorf("SecureBoot = %+v, %v", sb, err)
		}
		d, err := l.Decode(&l.Events[12])
		if err != nil || d.Image == nil || d.Image.DevicePath != `\EFI\BOOT\BOOTX64.EFI` {
			t.Errorf("decode image: %+v %v", d, err)
		}
	}
}

func TestBuilderMisuse(t *testing.T) {
	if _, err := NewBuilder(); !errors.Is(err, ErrBuilder) {
		t.Errorf("no banks: %v", err)
	}
	if _, err := NewBuilder(pcrs.SHA256, pcrs.SHA256); !errors.Is(err, ErrBuilder) {
		t.Errorf("duplicate bank: %v", err)
	}
	if _, err := NewBuilder(pcrs.Alg(0x99)); !errors.Is(err, ErrBuilder) {
		t.Errorf("unknown bank: %v", err)
	}
	b, _ := NewBuilder(pcrs.SHA256)
	if d := b.Extend(24, EvIPL, nil); d != nil || !errors.Is(b.Err(), ErrBuilder) {
		t.Errorf("PCR 24: %v %v", d, b.Err())
	}
	b, _ = NewBuilder(pcrs.SHA256)
	if err := b.ExtendDigest(4, EvIPL, map[pcrs.Alg][]byte{pcrs.SHA256: {1}}, nil); !errors.Is(err, ErrBuilder) {
		t.Errorf("short digest: %v", err)
	}
	if err := b.ExtendDigest(4, EvIPL, map[pcrs.Alg][]byte{}, nil); !errors.Is(err, ErrBuilder) {
		t.Errorf("missing digest: %v", err)
	}
}

// record encodes one TCG_PCR_EVENT2 by hand, so tests can write what the
// Builder refuses to.
func record(pcr, typ uint32, digests []struct {
	alg pcrs.Alg
	d   []byte
}, data []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, pcr)
	b = binary.LittleEndian.AppendUint32(b, typ)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(digests)))
	for _, d := range digests {
		b = binary.LittleEndian.AppendUint16(b, uint16(d.alg))
		b = append(b, d.d...)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

type dg = struct {
	alg pcrs.Alg
	d   []byte
}

func specOnly(t *testing.T, banks ...pcrs.Alg) []byte {
	b, err := NewBuilder(banks...)
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// specWithAlgs writes a Spec ID header listing arbitrary (alg, size) pairs.
func specWithAlgs(algs [][2]uint16, vendor []byte) []byte {
	var s []byte
	s = append(s, specIDSignature03...)
	s = append(s, 0, 0, 0, 0, 0, 2, 0, 2)
	s = binary.LittleEndian.AppendUint32(s, uint32(len(algs)))
	for _, a := range algs {
		s = binary.LittleEndian.AppendUint16(s, a[0])
		s = binary.LittleEndian.AppendUint16(s, a[1])
	}
	s = append(s, byte(len(vendor)))
	s = append(s, vendor...)
	h := binary.LittleEndian.AppendUint32(nil, 0)
	h = binary.LittleEndian.AppendUint32(h, uint32(EvNoAction))
	h = append(h, make([]byte, 20)...)
	h = binary.LittleEndian.AppendUint32(h, uint32(len(s)))
	return append(h, s...)
}

func TestParseRejects(t *testing.T) {
	good, _ := sampleLog(t, pcrs.SHA256)
	valid := good.Bytes()
	sha := make([]byte, 32)
	spec := specOnly(t, pcrs.SHA1, pcrs.SHA256)
	tests := []struct {
		name string
		data []byte
		opts []Option
		want error
	}{
		{"empty", nil, nil, ErrEmpty},
		{"truncated header", valid[:20], nil, ErrTruncated},
		{"truncated record", valid[:len(valid)-3], nil, ErrTruncated},
		{"truncated spec id data", append(bytes.Clone(valid[:32]), 1, 2), nil, ErrTruncated},
		{"oversized log", valid, []Option{WithLimits(Limits{MaxLogSize: 100})}, ErrLogTooLarge},
		{"too many events", valid, []Option{WithLimits(Limits{MaxEvents: 3})}, ErrTooManyEvents},
		{"event data too large", valid, []Option{WithLimits(Limits{MaxEventDataSize: 20})}, ErrEventDataTooLarge},
		{"huge event size", append(specOnly(t, pcrs.SHA256), record(0, 1, []dg{{pcrs.SHA256, sha}}, nil)[:44]...), nil, ErrTruncated},
		{"digest count above limit", append(bytes.Clone(spec), record(0, 1, []dg{{pcrs.SHA1, make([]byte, 20)}, {pcrs.SHA256, sha}}, nil)...),
			[]Option{WithLimits(Limits{MaxDigests: 1})}, ErrTooManyDigests},
		{"spec id above digest limit", spec, []Option{WithLimits(Limits{MaxDigests: 1})}, ErrTooManyDigests},
		{"zero digests", append(bytes.Clone(spec), record(0, 1, nil, nil)...), nil, ErrDigestCount},
		{"more digests than banks", append(specOnly(t, pcrs.SHA256), record(0, 1, []dg{{pcrs.SHA256, sha}, {pcrs.SHA256, sha}}, nil)...), nil, ErrDigestCount},
		{"duplicate digest", append(bytes.Clone(spec), record(0, 1, []dg{{pcrs.SHA256, sha}, {pcrs.SHA256, sha}}, nil)...), nil, ErrDuplicateAlgorithm},
		{"digest alg not in spec id", append(specOnly(t, pcrs.SHA256), record(0, 1, []dg{{pcrs.SHA384, make([]byte, 48)}}, nil)...), nil, ErrUnknownAlgorithm},
		{"unknown algorithm in spec id", specWithAlgs([][2]uint16{{0x000B, 32}, {0x0099, 32}}, nil), nil, ErrUnknownAlgorithm},
		{"wrong digest size in spec id", specWithAlgs([][2]uint16{{0x000B, 20}}, nil), nil, ErrDigestSize},
		{"duplicate alg in spec id", specWithAlgs([][2]uint16{{0x000B, 32}, {0x000B, 32}}, nil), nil, ErrDuplicateAlgorithm},
		{"no algs in spec id", specWithAlgs(nil, nil), nil, ErrBadSpecID},
		{"vendor info overrun", func() []byte { b := specWithAlgs([][2]uint16{{0x000B, 32}}, []byte{1, 2}); b[len(b)-3] = 9; return b }(), nil, ErrBadSpecID},
		{"spec id not PCR0", func() []byte { b := bytes.Clone(spec); b[0] = 1; return b }(), nil, ErrBadSpecID},
		{"PCR index 24", append(specOnly(t, pcrs.SHA256), record(24, 1, []dg{{pcrs.SHA256, sha}}, nil)...), nil, ErrBadPCRIndex},
		{"legacy PCR index 99", func() []byte { b := make([]byte, 32); b[0] = 99; return b }(), nil, ErrBadPCRIndex},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := Parse(tc.data, tc.opts...)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Parse = %v, %v; want %v", l, err, tc.want)
			}
		})
	}
}

func TestReplayRejects(t *testing.T) {
	sha := make([]byte, 32)
	loc := func(v byte) []byte { return append([]byte(startupLocalitySig), v) }
	spec := func() []byte { return specOnly(t, pcrs.SHA256) }
	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"StartupLocality twice", append(append(spec(), record(0, 3, []dg{{pcrs.SHA256, sha}}, loc(3))...), record(0, 3, []dg{{pcrs.SHA256, sha}}, loc(3))...), ErrStartupLocality},
		{"StartupLocality late", append(append(spec(), record(0, 8, []dg{{pcrs.SHA256, sha}}, nil)...), record(0, 3, []dg{{pcrs.SHA256, sha}}, loc(3))...), ErrStartupLocality},
		{"StartupLocality 2", append(spec(), record(0, 3, []dg{{pcrs.SHA256, sha}}, loc(2))...), ErrStartupLocality},
		{"H-CRTM after S-CRTM", append(append(spec(), record(0, 8, []dg{{pcrs.SHA256, sha}}, nil)...), record(0, uint32(EvEFIHCRTMEvent), []dg{{pcrs.SHA256, sha}}, []byte("HCRTM"))...), ErrHCRTM},
		{"H-CRTM with locality 3", append(append(spec(), record(0, 3, []dg{{pcrs.SHA256, sha}}, loc(3))...), record(0, uint32(EvEFIHCRTMEvent), []dg{{pcrs.SHA256, sha}}, []byte("HCRTM"))...), ErrHCRTM},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := Parse(tc.data)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := l.Replay(); !errors.Is(err, tc.want) {
				t.Fatalf("Replay = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestReplaySemantics pins each deliberate rule against an independent
// computation: H-CRTM start, EV_NO_ACTION with digests, trailer records,
// incomplete banks.
func TestReplaySemantics(t *testing.T) {
	spec := specOnly(t, pcrs.SHA1, pcrs.SHA256)
	d1 := sha1.Sum([]byte("x"))
	d2 := sha256.Sum256([]byte("x"))
	both := []dg{{pcrs.SHA1, d1[:]}, {pcrs.SHA256, d2[:]}}
	ext := func(init byte, d []byte) []byte {
		z := make([]byte, 32)
		z[31] = init
		h := sha256.Sum256(append(z, d...))
		return h[:]
	}
	data := bytes.Clone(spec)
	data = append(data, record(0, uint32(EvEFIHCRTMEvent), both, []byte("HCRTM"))...)
	data = append(data, record(0, 3, both, []byte("SP800-155 Event3 ..."))...) // digests, but never extended
	data = append(data, record(TrailerPCR, 4, both, nil)...)
	data = append(data, record(1, 1, []dg{{pcrs.SHA256, d2[:]}}, nil)...) // no sha1 digest
	l, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []Quirk{QuirkHCRTM, QuirkNoActionDigests, QuirkSP800155, QuirkTrailerRecord, QuirkIncompleteBank} {
		if !slices.Contains(l.Quirks, q) {
			t.Errorf("missing quirk %s in %v", q, l.Quirks)
		}
	}
	if !slices.Equal(l.IncompleteBanks, []pcrs.Alg{pcrs.SHA1}) {
		t.Errorf("IncompleteBanks = %v", l.IncompleteBanks)
	}
	v, err := l.Replay()
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := v.Get(pcrs.SHA256, 0); !bytes.Equal(got, ext(4, d2[:])) {
		t.Errorf("H-CRTM PCR0 = %x, want %x", got, ext(4, d2[:]))
	}
	if got, _ := v.Get(pcrs.SHA256, 1); !bytes.Equal(got, ext(0, d2[:])) {
		t.Errorf("PCR1 = %x", got)
	}
	if len(v[pcrs.SHA1]) != 0 || len(v.Indices(pcrs.SHA256)) != 2 {
		t.Errorf("replayed %v", v.ToJSON())
	}
	// A quote in the incomplete bank only verifies nothing.
	q := pcrs.Values{}
	q.Set(pcrs.SHA1, 0, make([]byte, 20))
	if r, err := VerifyAgainst(l, q); !errors.Is(err, ErrNothingVerified) || !slices.Equal(r.UncheckedBanks, []pcrs.Alg{pcrs.SHA1}) {
		t.Errorf("VerifyAgainst sha1-only = %v, %+v", err, r)
	}
}

func TestVerifyAgainstMismatch(t *testing.T) {
	b, want := sampleLog(t, pcrs.SHA1, pcrs.SHA256)
	l, err := Parse(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		bank  pcrs.Alg
		pcrs  []int
		quirk bool
	}{
		{"PCR0 sha256", pcrs.SHA256, []int{0}, false},
		{"PCR4 and PCR7 sha1", pcrs.SHA1, []int{4, 7}, false},
		{"PCR5 not fixable by EBS (log has EBS events)", pcrs.SHA256, []int{5}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := pcrs.Values{}
			for _, a := range want.Banks() {
				for _, i := range want.Indices(a) {
					v, _ := want.Get(a, i)
					q.Set(a, i, bytes.Clone(v))
				}
			}
			for _, i := range tc.pcrs {
				v, _ := q.Get(tc.bank, i)
				v[0] ^= 0x80
			}
			_, err := VerifyAgainst(l, q)
			var me *MismatchError
			if !errors.As(err, &me) {
				t.Fatalf("err = %v, want *MismatchError", err)
			}
			var got []int
			for _, m := range me.Mismatches {
				if m.Bank != tc.bank {
					t.Errorf("mismatch in bank %s", m.Bank)
				}
				got = append(got, m.PCR)
			}
			if !slices.Equal(got, tc.pcrs) {
				t.Errorf("mismatched PCRs %v, want %v (%v)", got, tc.pcrs, err)
			}
		})
	}
}

// TestEBSWorkaroundSynthetic: a log without the EBS events verifies against
// a TPM that saw them, with the quirk; a log that has one of them does not.
func TestEBSWorkaroundSynthetic(t *testing.T) {
	b, _ := NewBuilder(pcrs.SHA256)
	tpm := newSoftPCRs([]pcrs.Alg{pcrs.SHA256}, 0)
	tpm.extend(5, b.Extend(5, EvEFIAction, []byte("Calling EFI Application from Boot Option")))
	l, _ := Parse(b.Bytes())
	tpm.extend(5, b.Extend(5, EvEFIAction, []byte(EBSInvocation)))
	tpm.extend(5, b.Extend(5, EvEFIAction, []byte(EBSSuccess)))
	r, err := VerifyAgainst(l, tpm.v)
	if err != nil || !slices.Contains(r.Quirks, QuirkEBSMissing) {
		t.Fatalf("err %v quirks %v", err, r.Quirks)
	}
	// Only one of the two missing: no workaround.
	b2, _ := NewBuilder(pcrs.SHA256)
	b2.Extend(5, EvEFIAction, []byte("Calling EFI Application from Boot Option"))
	b2.Extend(5, EvEFIAction, []byte(EBSInvocation))
	l2, _ := Parse(b2.Bytes())
	var me *MismatchError
	if _, err := VerifyAgainst(l2, tpm.v); !errors.As(err, &me) {
		t.Fatalf("partial EBS: %v", err)
	}
}

// TestVerifiedSecureBoot: the state counts only when PCR7 replayed to a
// quoted value.
func TestVerifiedSecureBoot(t *testing.T) {
	b, _ := NewBuilder(pcrs.SHA256)
	b.Extend(0, EvSeparator, []byte{0, 0, 0, 0})
	b.Extend(7, EvEFIVariableDriverConf, EFIVariableData(EFIGlobalVariable, "SecureBoot", []byte{1}))
	b.Extend(7, EvSeparator, []byte{0, 0, 0, 0})
	l, err := Parse(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	replay, err := l.Replay()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		quoted []int
		want   SecureBootMode
	}{
		{"PCR7 quoted", []int{0, 7}, SecureBootEnabled},
		{"PCR7 not quoted", []int{0}, SecureBootUnknown},
	} {
		quoted := pcrs.Values{}
		for _, i := range tc.quoted {
			v, _ := replay.Get(pcrs.SHA256, i)
			quoted.Set(pcrs.SHA256, i, v)
		}
		r, err := VerifyAgainst(l, quoted)
		if err != nil {
			t.Fatal(err)
		}
		st, err := VerifiedSecureBoot(l, r)
		if err != nil || st.Mode != tc.want {
			t.Errorf("%s: mode %v, err %v; want %v", tc.name, st.Mode, err, tc.want)
		}
	}
}

func TestDecodeEventData(t *testing.T) {
	tests := []struct {
		name    string
		typ     EventType
		data    []byte
		summary string
		err     error
	}{
		{"variable", EvEFIVariableBoot, EFIVariableData(EFIGlobalVariable, "BootOrder", []byte{1, 0}), "8be4df61-93ca-11d2-aa0d-00e098032b8c BootOrder (2 bytes)", nil},
		{"variable short", EvEFIVariableBoot, make([]byte, 31), "", ErrBadEventData},
		{"variable name overrun", EvEFIVariableBoot, func() []byte { b := EFIVariableData(EFIGlobalVariable, "A", nil); b[16] = 200; return b }(), "", ErrBadEventData},
		{"variable data length", EvEFIVariableBoot, append(EFIVariableData(EFIGlobalVariable, "A", nil), 1), "", ErrBadEventData},
		{"separator", EvSeparator, []byte{0, 0, 0, 0}, "separator", nil},
		{"separator error", EvSeparator, []byte{1, 0, 0, 0}, "separator 0x00000001 (error)", nil},
		{"separator short", EvSeparator, []byte{0}, "", ErrBadEventData},
		{"action", EvEFIAction, []byte("Calling EFI Application from Boot Option"), `"Calling EFI Application from Boot Option"`, nil},
		{"action escapes control bytes", EvAction, []byte("a\x1b[2Jb"), `"a\x1b[2Jb"`, nil},
		{"ipl ascii", EvIPL, []byte("grub_cmd: linux /vmlinuz\x00"), `"grub_cmd: linux /vmlinuz"`, nil},
		{"ipl utf16", EvIPL, utf16z(" initrd=x "), `" initrd=x "`, nil},
		{"s-crtm utf16", EvSCRTMVersion, utf16z("GCE Virtual Firmware v1"), `"GCE Virtual Firmware v1"`, nil},
		{"s-crtm guid", EvSCRTMVersion, []byte{0x54, 0x6b, 0xfb, 0x1e, 0x1d, 0x0c, 0x40, 0x55, 0xa4, 0xad, 0x4e, 0xf4, 0xbf, 0x17, 0xb8, 0x3a}, "1efb6b54-0c1d-5540-a4ad-4ef4bf17b83a", nil},
		{"image", EvEFIBootServicesApp, imageLoad(`\EFI\x.efi`), `\EFI\x.efi`, nil},
		{"image short", EvEFIBootServicesApp, make([]byte, 31), "", ErrBadEventData},
		{"image path overrun", EvEFIBootServicesApp, func() []byte { b := imageLoad("a"); b[24] = 0xff; return b }(), "", ErrBadEventData},
		{"image node length 0", EvEFIBootServicesApp, func() []byte { b := imageLoad("a"); b[34] = 0; return b }(), "", ErrBadEventData},
		{"blob", EvEFIPlatformFWBlob, make([]byte, 16), "blob base 0x0 length 0x0", nil},
		{"blob short", EvEFIPlatformFWBlob, make([]byte, 15), "", ErrBadEventData},
		{"no action", EvNoAction, append([]byte(startupLocalitySig), 3), `"StartupLocality"`, nil},
		{"undecoded", EvEFIGPTEvent, []byte{1}, "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := DecodeEventData(tc.typ, tc.data)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if got := d.Summary(); err == nil && got != tc.summary {
				t.Errorf("summary %q, want %q", got, tc.summary)
			}
		})
	}
}

func TestDevicePathNodeLimit(t *testing.T) {
	var dp []byte
	for i := 0; i <= maxDevicePathNodes; i++ {
		dp = append(dp, 1, 1, 6, 0, 0, 0)
	}
	if _, err := DevicePathString(dp); !errors.Is(err, ErrBadEventData) {
		t.Fatalf("err = %v", err)
	}
	if s, err := DevicePathString(dp[:6*3]); err != nil || s != "Pci(0x0,0x0)/Pci(0x0,0x0)/Pci(0x0,0x0)" {
		t.Fatalf("%q %v", s, err)
	}
}

func TestEventTypeString(t *testing.T) {
	for typ, want := range map[EventType]string{EvSeparator: "EV_SEPARATOR", EvEFIHCRTMEvent: "EV_EFI_HCRTM_EVENT",
		EvEFIVariableAuthority: "EV_EFI_VARIABLE_AUTHORITY", 0x1234: "EV_UNKNOWN_0x00001234"} {
		if got := typ.String(); got != want {
			t.Errorf("%#x: %s, want %s", uint32(typ), got, want)
		}
	}
}

// TestParseAliasing: the Log aliases Parse's input (the server parses
// the log inside the evidence message it owns and never changes), with
// each slice capped so that appending to it cannot write into the input;
// CopyInput gives a Log independent of the buffer.
func TestParseAliasing(t *testing.T) {
	b, _ := sampleLog(t, pcrs.SHA256)
	data := b.Bytes()
	l, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	e := &l.Events[2]
	end := l.Events[3].Offset // the record's data ends where the next record starts
	if len(e.Data) == 0 || &e.Data[0] != &data[end-len(e.Data)] {
		t.Fatal("Event.Data is not a sub-slice of the input")
	}
	if cap(e.Data) != len(e.Data) || cap(e.Digests[pcrs.SHA256]) != len(e.Digests[pcrs.SHA256]) {
		t.Fatalf("capacity beyond the slice: data %d/%d", len(e.Data), cap(e.Data))
	}
	after := bytes.Clone(data[end:])
	_ = append(e.Data, 0xAA, 0xBB)
	_ = append(e.Digests[pcrs.SHA256], 0xAA)
	if !bytes.Equal(after, data[end:]) {
		t.Fatal("appending to a Log slice wrote into the input")
	}

	own := bytes.Clone(data)
	c, err := Parse(own, CopyInput())
	if err != nil {
		t.Fatal(err)
	}
	before := bytes.Clone(c.Events[2].Data)
	for i := range own {
		own[i] = 0
	}
	if !bytes.Equal(before, c.Events[2].Data) {
		t.Fatal("with CopyInput, the Log aliases the caller's buffer")
	}
}
