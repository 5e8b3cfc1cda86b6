package tpmname

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"testing"
)

func TestQualify(t *testing.T) {
	parent := []byte{0x40, 0x00, 0x00, 0x0b}
	n256 := append([]byte{0x00, 0x0b}, bytes.Repeat([]byte{1}, 32)...)
	n384 := append([]byte{0x00, 0x0c}, bytes.Repeat([]byte{2}, 48)...)
	d256 := sha256.Sum256(append(bytes.Clone(parent), n256...))
	d384 := sha512.Sum384(append(bytes.Clone(parent), n384...))
	for _, tc := range []struct {
		name string
		in   []byte
		want []byte // nil: refused
	}{
		{"SHA-256 Name", n256, append([]byte{0x00, 0x0b}, d256[:]...)},
		{"SHA-384 Name", n384, append([]byte{0x00, 0x0c}, d384[:]...)},
		{"empty", nil, nil},
		{"no digest", []byte{0x00, 0x0b}, nil},
		{"digest of another size", n256[:20], nil},
		{"unknown algorithm", append([]byte{0x12, 0x34}, bytes.Repeat([]byte{1}, 32)...), nil},
	} {
		got, err := Qualify(parent, tc.in)
		if (err == nil) != (tc.want != nil) || !bytes.Equal(got, tc.want) {
			t.Errorf("%s: Qualify = %x, %v; want %x", tc.name, got, err, tc.want)
		}
	}
	if got, err := EndorsementPrimary(n256); err != nil || !bytes.Equal(got, append([]byte{0x00, 0x0b}, d256[:]...)) {
		t.Errorf("EndorsementPrimary = %x, %v", got, err)
	}
	if !bytes.Equal(n256, append([]byte{0x00, 0x0b}, bytes.Repeat([]byte{1}, 32)...)) {
		t.Error("Qualify wrote into the Name it was given")
	}
}
