package stepca

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sort"
	"testing"
)

// cborMap is a CBOR map with text keys, encoded in the canonical order of
// RFC 8949 4.2.3 (shorter keys first, then bytewise), as WebAuthn asks.
type cborMap map[string]any

// cborEncode writes the small CBOR subset an ACME device-attest-01
// attestation object needs: maps with text keys, arrays, byte strings,
// text strings and integers. It avoids a new module dependency for a
// test-only encoder; step-ca's decoder (fxamacker/cbor) is the judge.
func cborEncode(v any) ([]byte, error) {
	var b bytes.Buffer
	if err := cborWrite(&b, v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func cborHead(b *bytes.Buffer, major byte, n uint64) {
	m := major << 5
	switch {
	case n < 24:
		b.WriteByte(m | byte(n))
	case n <= 0xff:
		b.WriteByte(m | 24)
		b.WriteByte(byte(n))
	case n <= 0xffff:
		b.WriteByte(m | 25)
		b.Write(binary.BigEndian.AppendUint16(nil, uint16(n)))
	case n <= 0xffffffff:
		b.WriteByte(m | 26)
		b.Write(binary.BigEndian.AppendUint32(nil, uint32(n)))
	default:
		b.WriteByte(m | 27)
		b.Write(binary.BigEndian.AppendUint64(nil, n))
	}
}

func cborWrite(b *bytes.Buffer, v any) error {
	switch x := v.(type) {
	case int:
		return cborWrite(b, int64(x))
	case int64:
		if x >= 0 {
			cborHead(b, 0, uint64(x))
		} else {
			cborHead(b, 1, uint64(-(x + 1)))
		}
	case []byte:
		cborHead(b, 2, uint64(len(x)))
		b.Write(x)
	case string:
		cborHead(b, 3, uint64(len(x)))
		b.WriteString(x)
	case []any:
		cborHead(b, 4, uint64(len(x)))
		for _, e := range x {
			if err := cborWrite(b, e); err != nil {
				return err
			}
		}
	case cborMap:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			if len(keys[i]) != len(keys[j]) {
				return len(keys[i]) < len(keys[j])
			}
			return keys[i] < keys[j]
		})
		cborHead(b, 5, uint64(len(x)))
		for _, k := range keys {
			cborWrite(b, k)
			if err := cborWrite(b, x[k]); err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
		}
	default:
		return fmt.Errorf("cbor: unsupported type %T", v)
	}
	return nil
}

// TestCBOREncode checks the encoder against RFC 8949 Appendix A vectors.
func TestCBOREncode(t *testing.T) {
	for _, tc := range []struct {
		v    any
		want string
	}{
		{0, "00"},
		{23, "17"},
		{24, "1818"},
		{1000, "1903e8"},
		{1000000, "1a000f4240"},
		{-1, "20"},
		{-7, "26"},
		{-257, "390100"},
		{-65535, "39fffe"},
		{[]byte{1, 2, 3, 4}, "4401020304"},
		{"IETF", "6449455446"},
		{[]any{1, []any{2, 3}}, "8201820203"},
		{cborMap{"a": 1, "b": []any{2, 3}}, "a26161016162820203"},
		{cborMap{"fmt": "tpm", "attStmt": cborMap{}}, "a263666d746374706d6761747453746d74a0"},
	} {
		got, err := cborEncode(tc.v)
		if err != nil {
			t.Fatalf("%v: %v", tc.v, err)
		}
		if hex.EncodeToString(got) != tc.want {
			t.Errorf("cbor(%#v) = %x, want %s", tc.v, got, tc.want)
		}
	}
	if _, err := cborEncode(cborMap{"x": 1.5}); err == nil {
		t.Error("a float was encoded")
	}
	long := make([]byte, 300)
	got, _ := cborEncode(long)
	if !bytes.Equal(got[:3], []byte{0x59, 0x01, 0x2c}) || len(got) != 303 {
		t.Errorf("300-byte string head %x, length %d", got[:3], len(got))
	}
}
