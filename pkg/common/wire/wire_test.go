package wire

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tpmid/tpmid/internal/realdata"
)

// realDir is the shared folder of real TPM evidence ("" when absent: the
// tests then use synthetic structures only).
var realDir, _ = realdata.Find()

func validHello(t testing.TB) Hello {
	t.Helper()
	h := Hello{
		Version:  Version,
		EK:       EK{Public: []byte{0x30, 0x01}},
		AK:       AK{Public: []byte{1}, CreateData: []byte{2}, CreateAttestation: []byte{3}, CreateSignature: []byte{4}},
		Nonce:    bytes.Repeat([]byte{7}, NonceSize),
		Hostname: "node-1",
	}
	// Use the real GCE Windows AK where the folder is there, so fuzz seeds
	// carry real TPM structures.
	q := filepath.Join(realDir, "quotes/gce-windows-shielded-vm")
	if pub, err := os.ReadFile(filepath.Join(q, "ak.tpmt_public.bin")); err == nil {
		cd, _ := os.ReadFile(filepath.Join(q, "ak.creation_data.bin"))
		ca, _ := os.ReadFile(filepath.Join(q, "ak.certify_creation.tpms_attest.bin"))
		cs, _ := os.ReadFile(filepath.Join(q, "ak.certify_creation.tpmt_signature.bin"))
		h.AK = AK{Public: pub, CreateData: cd, CreateAttestation: ca, CreateSignature: cs}
	}
	if ek, err := os.ReadFile(filepath.Join(realDir, "quotes/lenovo-t490-stm/ek.crt")); err == nil {
		h.EK.Certificate = ek
	}
	return h
}

func mustEncode(t testing.TB, v any) []byte {
	t.Helper()
	b, err := Encode(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeHello(t *testing.T) {
	good := validHello(t)
	tests := []struct {
		name    string
		mutate  func(h *Hello)
		raw     []byte
		max     int
		wantErr error
		reason  string
	}{
		{name: "valid", mutate: func(*Hello) {}},
		{name: "version 1", mutate: func(h *Hello) { h.Version = Version1 }},
		// Agents since 2026-11-26 run no TPM2_CertifyCreation; older
		// ones send its outputs, which are bounded and ignored.
		{name: "no creation attestation or signature", mutate: func(h *Hello) { h.AK.CreateAttestation, h.AK.CreateSignature = nil, nil }},
		{name: "oversized creation attestation", mutate: func(h *Hello) { h.AK.CreateAttestation = make([]byte, maxAKField+1) }, wantErr: ErrMalformed, reason: "AK creation attestation"},
		{name: "oversized creation signature", mutate: func(h *Hello) { h.AK.CreateSignature = make([]byte, maxAKField+1) }, wantErr: ErrMalformed, reason: "AK creation signature"},
		{name: "no creation data", mutate: func(h *Hello) { h.AK.CreateData = nil }, wantErr: ErrMalformed, reason: "AK creation data"},
		{name: "unknown version", mutate: func(h *Hello) { h.Version = 3 }, wantErr: ErrVersion},
		{name: "version zero", mutate: func(h *Hello) { h.Version = 0 }, wantErr: ErrVersion},
		{name: "short nonce", mutate: func(h *Hello) { h.Nonce = h.Nonce[:16] }, wantErr: ErrMalformed, reason: "agent nonce is 16 bytes"},
		{name: "no EK public", mutate: func(h *Hello) { h.EK.Public = nil }, wantErr: ErrMalformed, reason: "EK public key"},
		{name: "no AK public", mutate: func(h *Hello) { h.AK.Public = nil }, wantErr: ErrMalformed, reason: "AK public"},
		{name: "oversized EK cert", mutate: func(h *Hello) { h.EK.Certificate = make([]byte, maxCert+1) }, wantErr: ErrMalformed, reason: "EK certificate"},
		{name: "long hostname", mutate: func(h *Hello) { h.Hostname = strings.Repeat("a", 254) }, wantErr: ErrMalformed, reason: "hostname"},
		{name: "too many intermediates", mutate: func(h *Hello) { h.EK.Intermediates = make([][]byte, maxIntermediates+1) }, wantErr: ErrMalformed, reason: "EK intermediates"},
		{name: "oversized message", mutate: func(*Hello) {}, max: 100, wantErr: ErrTooLarge},
		{name: "not JSON", raw: []byte("\x00\x01garbage"), wantErr: ErrMalformed},
		{name: "unknown field", raw: []byte(`{"version":1,"surprise":true}`), wantErr: ErrMalformed, reason: "surprise"},
		{name: "trailing data", raw: append(mustEncode(t, good), []byte(`{}`)...), wantErr: ErrMalformed, reason: "trailing"},
		{name: "bad base64", raw: []byte(`{"version":1,"nonce":"!!!"}`), wantErr: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := tt.raw
			if raw == nil {
				h := good
				h.Nonce = append([]byte(nil), good.Nonce...)
				h.EK.Intermediates = nil
				tt.mutate(&h)
				raw = mustEncode(t, h)
			}
			max := tt.max
			if max == 0 {
				max = DefaultMaxHello
			}
			got, err := DecodeHello(raw, max)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("DecodeHello: %v", err)
				}
				if got.Hostname != good.Hostname || !bytes.Equal(got.AK.Public, good.AK.Public) {
					t.Fatalf("round trip lost data: %+v", got)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.reason != "" && !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("err = %q, want it to name %q", err, tt.reason)
			}
		})
	}
}

func validChallenge() Challenge {
	return Challenge{
		Version:    Version,
		Nonce:      bytes.Repeat([]byte{9}, NonceSize),
		Selections: []Selection{{Bank: "sha256", PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7}}},
		Credential: &Credential{Blob: []byte{1, 2}, Secret: []byte{3, 4}},
	}
}

func TestDecodeChallenge(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *Challenge)
		reason string
	}{
		{name: "valid", mutate: func(*Challenge) {}},
		{name: "no selection", mutate: func(c *Challenge) { c.Selections = nil }, reason: "PCR selections"},
		{name: "unknown bank", mutate: func(c *Challenge) { c.Selections[0].Bank = "md5" }, reason: "unknown PCR bank"},
		{name: "PCR out of range", mutate: func(c *Challenge) { c.Selections[0].PCRs = []int{24} }, reason: "out of range"},
		{name: "repeated PCR", mutate: func(c *Challenge) { c.Selections[0].PCRs = []int{1, 1} }, reason: "repeated"},
		{name: "empty credential", mutate: func(c *Challenge) { c.Credential.Blob = nil }, reason: "credential blob"},
		{name: "short nonce", mutate: func(c *Challenge) { c.Nonce = []byte{1} }, reason: "server nonce"},
		{name: "version", mutate: func(c *Challenge) { c.Version = 9 }, reason: "unsupported protocol version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validChallenge()
			tt.mutate(&c)
			_, err := DecodeChallenge(mustEncode(t, c))
			if tt.reason == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("err = %v, want it to name %q", err, tt.reason)
			}
		})
	}
}

func validEvidence() Evidence {
	return Evidence{
		Version:         Version,
		Quotes:          []Quote{{Bank: "sha256", Attest: []byte{1}, Signature: []byte{2}}},
		PCRs:            map[string]map[int][]byte{"sha256": {0: make([]byte, 32)}},
		ActivationProof: make([]byte, 32),
	}
}

// TestDecodeEvidence runs every case in both encodings: version 1 JSON and
// the version 2 envelope. Shapes the envelope cannot carry (unknown banks,
// PCR indices out of range, values of the wrong size) are refused by its
// encoder already; TestDecodeEvidenceBinary plays them on raw bytes.
func TestDecodeEvidence(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(e *Evidence)
		max     int
		wantErr error
		reason  string
	}{
		{name: "valid", mutate: func(*Evidence) {}},
		{name: "no quotes", mutate: func(e *Evidence) { e.Quotes = nil }, wantErr: ErrMalformed, reason: "0 quotes"},
		{name: "wrong PCR size", mutate: func(e *Evidence) { e.PCRs["sha256"][0] = make([]byte, 20) }, wantErr: ErrMalformed, reason: "20 bytes, want 32"},
		{name: "PCR index out of range", mutate: func(e *Evidence) { e.PCRs["sha256"][30] = make([]byte, 32) }, wantErr: ErrMalformed, reason: "index 30"},
		{name: "unknown bank", mutate: func(e *Evidence) { e.PCRs["md5"] = map[int][]byte{} }, wantErr: ErrMalformed, reason: "unknown PCR bank"},
		{name: "short proof", mutate: func(e *Evidence) { e.ActivationProof = []byte{1} }, wantErr: ErrMalformed, reason: "activation proof"},
		{name: "oversized quote", mutate: func(e *Evidence) { e.Quotes[0].Attest = make([]byte, maxQuoteAttest+1) }, wantErr: ErrMalformed, reason: "quote 0 attest"},
		{name: "empty signature", mutate: func(e *Evidence) { e.Quotes[0].Signature = nil }, wantErr: ErrMalformed, reason: "quote 0 signature"},
		{name: "nine quotes", mutate: func(e *Evidence) {
			for range 8 {
				e.Quotes = append(e.Quotes, e.Quotes[0])
			}
		}, wantErr: ErrMalformed, reason: "9 quotes"},
		{name: "oversized evidence", mutate: func(e *Evidence) { e.EventLog = make([]byte, 4096) }, max: 1024, wantErr: ErrTooLarge},
		{name: "version", mutate: func(e *Evidence) { e.Version = 3 }, wantErr: ErrVersion},
	}
	for _, version := range []int{Version1, Version2} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("v%d/%s", version, tt.name), func(t *testing.T) {
				e := validEvidence()
				e.Version = version
				tt.mutate(&e)
				max := tt.max
				if max == 0 {
					max = DefaultMaxEvidence
				}
				raw, err := EncodeEvidence(&e)
				if err != nil {
					if version == Version2 && tt.wantErr == ErrMalformed {
						return // the envelope's encoder refuses this shape itself
					}
					t.Fatalf("encode: %v", err)
				}
				if e.Version >= Version2 && !IsBinaryEvidence(raw) {
					t.Fatalf("version %d evidence is not an envelope", e.Version)
				}
				got, err := DecodeEvidence(raw, max)
				if tt.wantErr == nil {
					if err != nil {
						t.Fatal(err)
					}
					if got.Version != version {
						t.Fatalf("decoded version %d, want %d", got.Version, version)
					}
					return
				}
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.reason) {
					t.Fatalf("err = %v, want %v naming %q", err, tt.wantErr, tt.reason)
				}
			})
		}
	}
}

func TestBindings(t *testing.T) {
	hello := mustEncode(t, validHello(t))
	chal := mustEncode(t, validChallenge())
	sn, an := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	base := QuoteExtraData(sn, an, hello)
	if len(base) != sha256.Size {
		t.Fatalf("extraData is %d bytes", len(base))
	}
	// Each input must change the binding.
	for name, got := range map[string][]byte{
		"server nonce": QuoteExtraData(an, an, hello),
		"agent nonce":  QuoteExtraData(sn, sn, hello),
		"hello":        QuoteExtraData(sn, an, append(hello, ' ')),
	} {
		if bytes.Equal(got, base) {
			t.Errorf("extraData does not depend on the %s", name)
		}
	}
	secret := []byte("0123456789abcdef")
	proof := ActivationProof(secret, hello, chal)
	if !CheckActivationProof(proof, secret, hello, chal) {
		t.Fatal("valid proof refused")
	}
	for name, ok := range map[string]bool{
		"other secret":    CheckActivationProof(proof, []byte("fedcba9876543210"), hello, chal),
		"other hello":     CheckActivationProof(proof, secret, append(hello, ' '), chal),
		"other challenge": CheckActivationProof(proof, secret, hello, append(chal, ' ')),
		// Moving a byte from one message to the other keeps the
		// concatenation; the length prefixes must still tell them apart.
		"shifted boundary": CheckActivationProof(proof, secret, hello[:len(hello)-1], append([]byte{hello[len(hello)-1]}, chal...)),
	} {
		if ok {
			t.Errorf("proof accepted with %s", name)
		}
	}
}

func FuzzDecodeHello(f *testing.F) {
	f.Add(mustEncode(f, validHello(f)))
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := DecodeHello(b, DefaultMaxHello)
		if err != nil {
			return
		}
		// Whatever decodes must re-encode and decode to the same thing.
		again, err := DecodeHello(mustEncode(t, h), DefaultMaxHello)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		a, _ := json.Marshal(h)
		c, _ := json.Marshal(again)
		if !bytes.Equal(a, c) {
			t.Fatal("round trip changed the hello")
		}
	})
}

func FuzzDecodeEvidence(f *testing.F) {
	e := validEvidence()
	if att, err := os.ReadFile(filepath.Join(realDir, "quotes/gce-windows-shielded-vm/quote.tpms_attest.bin")); err == nil {
		sig, _ := os.ReadFile(filepath.Join(realDir, "quotes/gce-windows-shielded-vm/quote.tpmt_signature.bin"))
		log, _ := os.ReadFile(filepath.Join(realDir, "quotes/gce-windows-shielded-vm/eventlog.bin"))
		e.Quotes = []Quote{{Bank: "sha1", Attest: att, Signature: sig}}
		e.EventLog = log
	}
	e.Version = Version1
	f.Add(mustEncode(f, e))
	// The version 2 envelope of the same real quote and log.
	f.Add(mustEncodeEvidence(f, realEvidence(f)))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := DecodeEvidence(b, DefaultMaxEvidence)
		if err != nil {
			return
		}
		if _, err := ev.Values(); err != nil {
			t.Fatalf("decoded evidence has bad values: %v", err)
		}
	})
}

func FuzzDecodeChallenge(f *testing.F) {
	f.Add(mustEncode(f, validChallenge()))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeChallenge(b)
		if err != nil {
			return
		}
		for _, s := range c.Selections {
			if _, _, err := SelectionBank(s); err != nil {
				t.Fatalf("decoded challenge has a bad selection: %v", err)
			}
		}
	})
}
