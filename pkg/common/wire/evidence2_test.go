package wire

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
)

// realEvidence is version 2 evidence carrying the real GCE Windows quote,
// signature and event log where the real folder is present.
func realEvidence(tb testing.TB) Evidence {
	tb.Helper()
	e := validEvidence()
	e.Version = Version2
	e.PCRs["sha1"] = map[int][]byte{0: make([]byte, 20), 7: bytes.Repeat([]byte{7}, 20)}
	e.PCRs["sha256"][23] = bytes.Repeat([]byte{0xff}, 32)
	q := filepath.Join(realDir, "quotes/gce-windows-shielded-vm")
	if att, err := os.ReadFile(filepath.Join(q, "quote.tpms_attest.bin")); err == nil {
		sig, _ := os.ReadFile(filepath.Join(q, "quote.tpmt_signature.bin"))
		log, _ := os.ReadFile(filepath.Join(q, "eventlog.bin"))
		e.Quotes = []Quote{{Bank: "sha1", Attest: att, Signature: sig}, {Bank: "sha256", Attest: att, Signature: sig}}
		e.EventLog = log
	}
	return e
}

func mustEncodeEvidence(tb testing.TB, e Evidence) []byte {
	tb.Helper()
	b, err := EncodeEvidence(&e)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestEvidenceBinaryRoundTrip(t *testing.T) {
	for _, e := range []Evidence{validEvidence(), realEvidence(t)} {
		e.Version = Version2
		raw := mustEncodeEvidence(t, e)
		got, err := DecodeEvidence(raw, DefaultMaxEvidence)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(*got, e) {
			t.Fatalf("round trip changed the evidence:\n got %+v\nwant %+v", *got, e)
		}
		// The envelope is canonical: what decodes re-encodes to the same bytes.
		if again := mustEncodeEvidence(t, *got); !bytes.Equal(again, raw) {
			t.Fatal("re-encoding gives other bytes")
		}
		// Much smaller than JSON with base64.
		if j := mustEncode(t, e); len(e.EventLog) > 0 && len(raw) >= len(j) {
			t.Errorf("envelope %d bytes, JSON %d", len(raw), len(j))
		}
	}
}

// TestEvidenceBinaryTruncated: no prefix of valid evidence decodes, nor the
// evidence with anything after it.
func TestEvidenceBinaryTruncated(t *testing.T) {
	raw := mustEncodeEvidence(t, realEvidence(t))
	for n := 0; n < len(raw); n++ {
		if _, err := DecodeEvidence(raw[:n], DefaultMaxEvidence); err == nil {
			t.Fatalf("prefix of %d of %d bytes decoded", n, len(raw))
		}
	}
	for _, tail := range [][]byte{{0}, {' '}, []byte("{}")} {
		_, err := DecodeEvidence(append(bytes.Clone(raw), tail...), DefaultMaxEvidence)
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "trailing data") {
			t.Fatalf("trailing %q: err = %v", tail, err)
		}
	}
}

// TestDecodeEvidenceBinary plays hostile envelopes, each edited from a valid
// one at a known offset.
func TestDecodeEvidenceBinary(t *testing.T) {
	e := validEvidence() // one sha256 quote (attest 1 byte, signature 1 byte), sha256 PCR0, proof
	e.Version = Version2
	e.EventLog = []byte("LOG")
	good := mustEncodeEvidence(t, e)
	// Offsets in good: magic 0..3, version 4, header length 5..8, header
	// from 9: quote count 9, quote alg 10..11, attest length 12..13,
	// attest 14, signature length 15..16, signature 17, bank count 18,
	// bank alg 19..20, mask 21..24, value 25..56, proof length 57,
	// proof 58..89, log length 90..93, log 94..96.
	const hdr, qcount, qalg, bcount, balg, mask, plen, llen = 9, 9, 10, 18, 19, 21, 57, 90
	if len(good) != 97 || binary.BigEndian.Uint32(good[5:]) != llen-hdr {
		t.Fatalf("layout changed: %d bytes, header %d", len(good), binary.BigEndian.Uint32(good[5:]))
	}
	set := func(off int, v ...byte) func([]byte) []byte {
		return func(b []byte) []byte { copy(b[off:], v); return b }
	}
	u32 := func(off int, v uint32) func([]byte) []byte {
		return func(b []byte) []byte { binary.BigEndian.PutUint32(b[off:], v); return b }
	}
	tests := []struct {
		name    string
		edit    func([]byte) []byte
		wantErr error
		reason  string
	}{
		{"valid", func(b []byte) []byte { return b }, nil, ""},
		{"version 1 envelope", set(4, 1), ErrVersion, "binary evidence has unsupported protocol version 1"},
		{"version 3 envelope", set(4, 3), ErrVersion, "version 3"},
		{"header beyond the input", u32(5, 1000), ErrMalformed, "header: 1000 bytes needed"},
		{"header over its bound", u32(5, maxEvidenceHeader+1), ErrMalformed, "limit"},
		{"header longer than its fields", func(b []byte) []byte {
			b = append(b[:llen:llen], append([]byte{0}, b[llen:]...)...)
			binary.BigEndian.PutUint32(b[5:], llen-hdr+1)
			return b
		}, ErrMalformed, "1 bytes after the evidence header's fields"},
		{"no quote", set(qcount, 0), ErrMalformed, "0 quotes"},
		{"nine quotes", set(qcount, 9), ErrMalformed, "9 quotes"},
		{"quote of unknown bank", set(qalg, 0x00, 0x05), ErrMalformed, "unknown PCR bank 0x0005"},
		{"attest length beyond header", set(12, 0xff, 0xff), ErrMalformed, "attest"},
		{"too many banks", set(bcount, maxBanks+1), ErrMalformed, "PCR banks"},
		{"unknown PCR bank", set(balg, 0x00, 0x05), ErrMalformed, "unknown PCR bank"},
		{"mask selects nothing", u32(mask, 0), ErrMalformed, "selects no PCR"},
		{"mask beyond PCR 23", u32(mask, 1<<24|1), ErrMalformed, "beyond 23"},
		{"mask claims more values", u32(mask, 7), ErrMalformed, "PCR values: 96 bytes needed"},
		{"proof of 5 bytes", func(b []byte) []byte {
			b = append(b[:plen:plen], append([]byte{5, 1, 2, 3, 4, 5}, b[llen:]...)...)
			binary.BigEndian.PutUint32(b[5:], uint32(plen+6-hdr))
			return b
		}, ErrMalformed, "activation proof is 5 bytes"},
		{"log length beyond input", u32(llen, 4), ErrMalformed, "event log: 4 bytes needed"},
		{"log length short", u32(llen, 2), ErrMalformed, "trailing data: 1 bytes"},
		{"log length huge", u32(llen, 0xffffffff), ErrMalformed, "event log"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeEvidence(tt.edit(bytes.Clone(good)), DefaultMaxEvidence)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("err = %v, want %v naming %q", err, tt.wantErr, tt.reason)
			}
		})
	}

	t.Run("banks out of order", func(t *testing.T) {
		e := validEvidence()
		e.Version = Version2
		e.PCRs["sha1"] = map[int][]byte{0: make([]byte, 20)}
		b := mustEncodeEvidence(t, e) // sha1 (0x0004) then sha256 (0x000b)
		i := bytes.Index(b, []byte{0x00, 0x04, 0, 0, 0, 1})
		j := bytes.Index(b, []byte{0x00, 0x0b, 0, 0, 0, 1})
		if i < 0 || j < 0 || i > j {
			t.Fatalf("banks not found in order (%d, %d)", i, j)
		}
		copy(b[j:], []byte{0x00, 0x04}) // sha1 named twice
		_, err := DecodeEvidence(b, DefaultMaxEvidence)
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "out of order or repeated") {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("version 2 as JSON", func(t *testing.T) {
		_, err := DecodeEvidence(mustEncode(t, e), DefaultMaxEvidence)
		if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "only version 1 evidence is JSON") {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("size bound before parsing", func(t *testing.T) {
		_, err := DecodeEvidence(good, len(good)-1)
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestCheckSessionVersion(t *testing.T) {
	if err := CheckSessionVersion("evidence", Version2, Version2); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][2]int{{Version1, Version2}, {Version2, Version1}} {
		err := CheckSessionVersion("evidence", c[0], c[1])
		if !errors.Is(err, ErrVersion) {
			t.Fatalf("version %d in a version %d session: %v", c[0], c[1], err)
		}
	}
}

// FuzzDecodeEvidenceBinary: whatever the envelope decoder accepts has sane
// values and re-encodes to exactly its input (the encoding is canonical).
func FuzzDecodeEvidenceBinary(f *testing.F) {
	f.Add(mustEncodeEvidence(f, realEvidence(f)))
	e := validEvidence()
	e.Version = Version2
	f.Add(mustEncodeEvidence(f, e))
	f.Fuzz(func(t *testing.T, b []byte) {
		if !IsBinaryEvidence(b) {
			b = append(evidenceMagic[:len(evidenceMagic):len(evidenceMagic)], b...)
		}
		ev, err := DecodeEvidence(b, DefaultMaxEvidence)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrVersion) {
				t.Fatalf("error names no sentinel: %v", err)
			}
			return
		}
		if _, err := ev.Values(); err != nil {
			t.Fatalf("decoded evidence has bad values: %v", err)
		}
		again, err := EncodeEvidence(ev)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatal("decoded evidence re-encodes to other bytes")
		}
	})
}

// BenchmarkDecodeEvidence: the server's decode of evidence carrying the real
// 45 KB Ubuntu 24.04 event log, as version 1 JSON and as the version 2
// envelope (docs/performance.md).
func BenchmarkDecodeEvidence(b *testing.B) {
	log, err := os.ReadFile(filepath.Join(realDir, "eventlogs/go-tpm-tools/ubuntu-2404-amd-sevsnp.bin"))
	if err != nil {
		b.Skipf("real event log: %v", err)
	}
	e := realEvidence(b)
	e.EventLog = log
	for _, version := range []int{Version1, Version2} {
		e.Version = version
		raw := mustEncodeEvidence(b, e)
		b.Run(fmt.Sprintf("v%d", version), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				if _, err := DecodeEvidence(raw, DefaultMaxEvidence); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
