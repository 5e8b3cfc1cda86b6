package verify

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"testing"
)

func TestParseAKPublicReal(t *testing.T) {
	for _, c := range []struct {
		path, name string
		rsaBits    int
	}{
		{"quotes/lenovo-t490-stm/ak.pub", "000b0da1ef58f336465cded4d4b315f766aa8ce44c887f02a5ce2b7a28e4992f249a", 0},
		{"quotes/gce-windows-shielded-vm/ak.tpmt_public.bin", "000b4ce9b151f75089d74c15dabe9d520cffafbcafd5d43be0aad2e2d88d54717e2e", 2048},
		{"quotes/gce-cos-85/nonce9009/ak.tpmt_public.bin", "000bf175bdb57297b2b289973f819863d6c9d09c236725676914f4248c9a2404c2a4", 2048},
	} {
		b := readReal(t, c.path)
		ak, err := ParseAKPublic(b)
		if err != nil {
			t.Fatalf("%s: %v", c.path, err)
		}
		if hex.EncodeToString(ak.Name) != c.name {
			t.Errorf("%s: name %x", c.path, ak.Name)
		}
		if k, ok := ak.Public.(*rsa.PublicKey); ok != (c.rsaBits > 0) || ok && k.N.BitLen() != c.rsaBits {
			t.Errorf("%s: key %T", c.path, ak.Public)
		}
		if err := CheckAKAttributes(ak); err != nil {
			t.Errorf("%s: %v", c.path, err)
		}
		// TPM2B_PUBLIC form.
		b2 := append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)
		if ak2, err := ParseAKPublic(b2); err != nil || !bytes.Equal(ak2.Name, ak.Name) {
			t.Errorf("%s as TPM2B_PUBLIC: %v", c.path, err)
		}
		// PKIX DER and PEM forms.
		der, err := x509.MarshalPKIXPublicKey(ak.Public)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range [][]byte{der, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})} {
			ak3, err := ParseAKPublic(in)
			if err != nil || ak3.Name != nil || ak3.TPMTPublic != nil {
				t.Errorf("%s PKIX: %v", c.path, err)
			}
			if err := CheckAKAttributes(ak3); ReasonOf(err) != ReasonAKAttributes {
				t.Errorf("PKIX attributes: %v", err)
			}
		}
	}
	// The EK of the T490 is a TPM2B_PUBLIC too; it is not an AK.
	ek, err := ParseAKPublic(readReal(t, "quotes/lenovo-t490-stm/ek.pub"))
	if err != nil {
		t.Fatalf("ek.pub: %v", err)
	}
	if err := CheckAKAttributes(ek); ReasonOf(err) != ReasonAKAttributes {
		t.Errorf("EK as AK: %v", err)
	}
}

func TestParseAKPublicRejects(t *testing.T) {
	t490 := readReal(t, "quotes/lenovo-t490-stm/ak.pub")
	rsaAK := readReal(t, "quotes/gce-cos-85/nonce9009/ak.tpmt_public.bin")
	set := func(b []byte, off int, v ...byte) []byte { c := bytes.Clone(b); copy(c[off:], v); return c }
	smallN := new(big.Int).SetBytes(bytes.Repeat([]byte{0xc3}, 64)) // 512 bits
	smallDER, err := x509.MarshalPKIXPublicKey(&rsa.PublicKey{N: smallN, E: 65537})
	if err != nil {
		t.Fatal(err)
	}
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	p224DER, _ := x509.MarshalPKIXPublicKey(&p224.PublicKey)
	for _, c := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"too large", make([]byte, MaxAKPublicSize+1)},
		{"truncated TPMT_PUBLIC", t490[:len(t490)-1]},
		{"trailing byte", append(bytes.Clone(t490), 0)},
		{"keyedhash type", set(t490, 0, 0x00, 0x08)},
		{"unknown nameAlg", set(t490, 2, 0x00, 0x99)},
		{"ECC point off the curve", set(t490, len(t490)-1, t490[len(t490)-1]^1)},
		{"unknown curve", set(t490, 16, 0x00, 0x20)},
		{"RSA keyBits mismatch", set(rsaAK, 16, 0x04, 0x00)},
		{"TPM2B size wrong", append([]byte{0x00, 0x10}, t490...)},
		{"bad PEM", []byte("-----BEGIN PUBLIC KEY-----\nxx\n")},
		{"PEM of a certificate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: smallDER})},
		{"PEM with trailer", append(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: smallDER}), "junk"...)},
		{"bad DER", []byte{0x30, 0x01, 0x00}},
		{"RSA-512", smallDER},
		{"P-224", p224DER},
	} {
		if _, err := ParseAKPublic(c.b); ReasonOf(err) != ReasonAKMalformed {
			t.Errorf("%s: %v, want %s", c.name, err, ReasonAKMalformed)
		}
	}
	// Attributes: clear "restricted" (bit 16) / set "decrypt" (bit 17).
	for _, c := range []struct {
		name string
		mut  func(uint32) uint32
	}{
		{"not restricted", func(a uint32) uint32 { return a &^ attrRestricted }},
		{"not fixedTPM", func(a uint32) uint32 { return a &^ attrFixedTPM }},
		{"not sign", func(a uint32) uint32 { return a &^ attrSign }},
		{"decrypt", func(a uint32) uint32 { return a | attrDecrypt }},
	} {
		b := bytes.Clone(t490)
		binary.BigEndian.PutUint32(b[4:], c.mut(binary.BigEndian.Uint32(b[4:])))
		ak, err := ParseAKPublic(b)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if err := CheckAKAttributes(ak); ReasonOf(err) != ReasonAKAttributes {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}
