package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

func TestDecodeDelivery(t *testing.T) {
	cert := bytes.Repeat([]byte{0x30}, 600)
	enc := func(v any) []byte { b, _ := json.Marshal(v); return b }
	tests := []struct {
		name string
		msg  []byte
		err  error
	}{
		{"chain of two", enc(Delivery{Version: Version, AKCertChain: [][]byte{cert, cert}}), nil},
		{"no chain", enc(Delivery{Version: Version}), ErrMalformed},
		{"too many certificates", enc(Delivery{Version: Version, AKCertChain: make([][]byte, maxIntermediates+1)}), ErrMalformed},
		{"empty certificate", enc(Delivery{Version: Version, AKCertChain: [][]byte{{}}}), ErrMalformed},
		{"oversize certificate", enc(Delivery{Version: Version, AKCertChain: [][]byte{make([]byte, maxCert+1)}}), ErrMalformed},
		{"version 3", enc(Delivery{Version: 3, AKCertChain: [][]byte{cert}}), ErrVersion},
		{"unknown field", []byte(`{"version":1,"ak_cert_chain":["MA=="],"secrets":[]}`), ErrMalformed},
		{"over the size bound", append([]byte(`{"version":1,"ak_cert_chain":["`), bytes.Repeat([]byte("A"), DefaultMaxChallenge+maxIntermediates*maxCert)...), ErrTooLarge},
		{"trailing data", append(enc(Delivery{Version: Version, AKCertChain: [][]byte{cert}}), []byte(" {}")...), ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeDelivery(tc.msg)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
		})
	}
}

func TestDeliveryOrChallenge(t *testing.T) {
	d, _ := Encode(Delivery{Version: Version, AKCertChain: [][]byte{{1}}})
	c, _ := Encode(Challenge{Version: Version, Nonce: make([]byte, NonceSize), Selections: []Selection{{Bank: "sha256", PCRs: []int{0}}}})
	if !IsDelivery(d) || IsDelivery(c) || IsDelivery([]byte("not json")) {
		t.Error("IsDelivery cannot tell a delivery from a challenge")
	}
	if _, err := DecodeChallenge(d); err == nil {
		t.Error("a delivery decoded as a challenge")
	}
}

func TestDecodeAck(t *testing.T) {
	for _, tc := range []struct {
		msg string
		err error
	}{
		{`{"version":1,"stored":true}`, nil},
		{`{"version":1,"stored":false}`, nil},
		{`{"version":3,"stored":true}`, ErrVersion},
		{`{"version":1,"stored":true,"x":1}`, ErrMalformed},
		{`[]`, ErrMalformed},
	} {
		if _, err := DecodeAck([]byte(tc.msg)); !errors.Is(err, tc.err) {
			t.Errorf("%s: %v, want %v", tc.msg, err, tc.err)
		}
	}
}

func FuzzDecodeDelivery(f *testing.F) {
	d, _ := Encode(Delivery{Version: Version, AKCertChain: [][]byte{bytes.Repeat([]byte{0x30}, 64)}})
	f.Add(d)
	f.Add([]byte(`{"version":1,"stored":true}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if d, err := DecodeDelivery(b); err == nil && (len(d.AKCertChain) == 0 || len(d.AKCertChain) > maxIntermediates) {
			t.Fatalf("accepted a chain of %d", len(d.AKCertChain))
		}
		_, _ = DecodeAck(b)
		_ = IsDelivery(b)
	})
}
