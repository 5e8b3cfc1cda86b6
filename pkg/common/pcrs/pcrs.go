// Package pcrs names the PCR banks tpmid understands and holds PCR values
// keyed by bank and index. It is shared by the event log replayer, the quote
// verifier and the wire protocol so that all three agree on bank names.
package pcrs

import (
	"crypto"
	"encoding/hex"
	"fmt"
	"hash"
	"sort"
	"strconv"
	"strings"

	// Registered for crypto.Hash.New.
	_ "crypto/sha1"
	_ "crypto/sha256"
	_ "crypto/sha512"
)

// Alg is a TPM_ALG_ID naming a PCR bank's hash algorithm.
type Alg uint16

// The banks tpmid knows. SM3 is parsed and named; replaying it needs an SM3
// implementation registered with RegisterSM3.
const (
	SHA1   Alg = 0x0004
	SHA256 Alg = 0x000B
	SHA384 Alg = 0x000C
	SHA512 Alg = 0x000D
	SM3    Alg = 0x0012
)

// MaxIndex is the highest PCR index of a PC Client TPM (24 PCRs).
const MaxIndex = 23

var names = map[Alg]string{SHA1: "sha1", SHA256: "sha256", SHA384: "sha384", SHA512: "sha512", SM3: "sm3_256"}

var sizes = map[Alg]int{SHA1: 20, SHA256: 32, SHA384: 48, SHA512: 64, SM3: 32}

var cryptoHashes = map[Alg]crypto.Hash{SHA1: crypto.SHA1, SHA256: crypto.SHA256, SHA384: crypto.SHA384, SHA512: crypto.SHA512}

var sm3New func() hash.Hash

// RegisterSM3 installs an SM3 implementation; Go's standard library has none.
func RegisterSM3(f func() hash.Hash) { sm3New = f }

// String returns the bank's name as used in configs and JSON ("sha256").
func (a Alg) String() string {
	if n, ok := names[a]; ok {
		return n
	}
	return fmt.Sprintf("alg_0x%04x", uint16(a))
}

// Known reports whether a is one of the banks above.
func (a Alg) Known() bool { _, ok := names[a]; return ok }

// Size is the digest size in bytes, or 0 for an unknown algorithm.
func (a Alg) Size() int { return sizes[a] }

// CryptoHash maps the bank to a crypto.Hash; ok is false for SM3 and unknown
// algorithms.
func (a Alg) CryptoHash() (crypto.Hash, bool) {
	h, ok := cryptoHashes[a]
	return h, ok
}

// New returns a hash for the bank, or an error when none is available.
func (a Alg) New() (hash.Hash, error) {
	if h, ok := cryptoHashes[a]; ok {
		return h.New(), nil
	}
	if a == SM3 && sm3New != nil {
		return sm3New(), nil
	}
	return nil, fmt.Errorf("no hash implementation for bank %s", a)
}

// Weak reports whether the bank's hash is no longer collision resistant.
func (a Alg) Weak() bool { return a == SHA1 }

// ResetValue is PCR index's value in bank a after TPM2_Startup(CLEAR) at
// locality 0 (PC Client PTP): PCR17-22 all ones (the DRTM PCRs), the
// others zero.
func (a Alg) ResetValue(index int) []byte {
	v := make([]byte, a.Size())
	if index >= 17 && index <= 22 {
		for i := range v {
			v[i] = 0xff
		}
	}
	return v
}

// ParseAlg parses a bank name ("sha1", "sha256", "sha384", "sha512", "sm3_256"/"sm3").
func ParseAlg(s string) (Alg, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "sm3" {
		return SM3, nil
	}
	for a, n := range names {
		if n == s {
			return a, nil
		}
	}
	return 0, fmt.Errorf("unknown PCR bank %q (want one of sha1, sha256, sha384, sha512, sm3_256)", s)
}

// FromCryptoHash maps a crypto.Hash to its bank.
func FromCryptoHash(h crypto.Hash) (Alg, bool) {
	for a, c := range cryptoHashes {
		if c == h {
			return a, true
		}
	}
	return 0, false
}

// Values holds PCR values per bank and index.
type Values map[Alg]map[int][]byte

// Set stores a value, creating the bank's map as needed.
func (v Values) Set(a Alg, index int, value []byte) {
	if v[a] == nil {
		v[a] = map[int][]byte{}
	}
	v[a][index] = value
}

// Get returns the value and whether it is present.
func (v Values) Get(a Alg, index int) ([]byte, bool) {
	b, ok := v[a][index]
	return b, ok
}

// Indices returns the sorted PCR indices present for a bank.
func (v Values) Indices(a Alg) []int {
	out := make([]int, 0, len(v[a]))
	for i := range v[a] {
		out = append(out, i)
	}
	sort.Ints(out)
	return out
}

// Banks returns the banks present, sorted by algorithm ID.
func (v Values) Banks() []Alg {
	out := make([]Alg, 0, len(v))
	for a := range v {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// JSON is the on-disk and CLI form: {"sha256": {"0": "<hex>", ...}}.
type JSON map[string]map[string]string

// ToJSON renders values in the JSON form with lowercase hex.
func (v Values) ToJSON() JSON {
	out := JSON{}
	for a, bank := range v {
		m := map[string]string{}
		for i, val := range bank {
			m[strconv.Itoa(i)] = fmt.Sprintf("%x", val)
		}
		out[a.String()] = m
	}
	return out
}

// FromJSON parses the JSON form, checking bank names, indices and digest sizes.
func FromJSON(j JSON) (Values, error) {
	out := Values{}
	for name, bank := range j {
		a, err := ParseAlg(name)
		if err != nil {
			return nil, err
		}
		for k, hexval := range bank {
			i, err := strconv.Atoi(k)
			if err != nil || i < 0 || i > MaxIndex {
				return nil, fmt.Errorf("bank %s: PCR index %q is not in 0..%d", name, k, MaxIndex)
			}
			b, err := decodeHex(hexval)
			if err != nil {
				return nil, fmt.Errorf("bank %s PCR %d: %w", name, i, err)
			}
			if len(b) != a.Size() {
				return nil, fmt.Errorf("bank %s PCR %d: %d bytes, want %d", name, i, len(b), a.Size())
			}
			out.Set(a, i, b)
		}
	}
	return out, nil
}

func decodeHex(s string) ([]byte, error) {
	s = strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(s), "0x"), "0X")
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("bad hex %q: %w", s, err)
	}
	return b, nil
}
