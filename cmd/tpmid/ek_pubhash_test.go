//go:build cgo

package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"testing"

	"github.com/google/go-tpm-tools/simulator"

	"github.com/tpmid/tpmid/pkg/server/verify"
)

// spireTPMPluginPubHash is what spire-tpm-plugin's get_tpm_pubhash prints
// for the RSA EK of go-tpm-tools' simulator with the fixed seed 0: the
// expected value of its own test (tools/get_tpm_pubhash), with and without
// an EK certificate in NV. Since May 2020 spire-tpm-plugin hashes the EK
// as tpmid does: SHA-256 of the public key in PKIX (SubjectPublicKeyInfo)
// DER, printed as lowercase hex, and the agent ID is
// spiffe://<td>/spire/agent/tpm/<that hash>.
const spireTPMPluginPubHash = "1b5bbe2e96054f7bc34ebe7ba9a4a9eac5611c6879285ceff6094fa556af485c"

// TestEKCommandPrintsGetTPMPubhash: `tpmid ek` on that simulator prints
// the same hash as get_tpm_pubhash, and so names the agent ID a machine
// migrated from spire-tpm-plugin keeps.
func TestEKCommandPrintsGetTPMPubhash(t *testing.T) {
	sim, err := simulator.GetWithFixedSeedInsecure(0)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	sock := serveTPM(t, sim)

	for _, args := range [][]string{
		{"--tpm", "unix://" + sock, "--json"},                 // the default EK
		{"--tpm", "unix://" + sock, "--json", "--alg", "rsa"}, // spire-tpm-plugin's
	} {
		out, err := runCmd(t, newEKCmd(), args...)
		if err != nil {
			t.Fatalf("tpmid ek %v: %v (%s)", args, err, out)
		}
		var rep ekReportLocal
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("output is not JSON: %v\n%s", err, out)
		}
		if rep.Algorithm != "rsa" || rep.EKHash != spireTPMPluginPubHash || rep.AgentIDPath != "/spire/agent/tpm/"+spireTPMPluginPubHash {
			t.Errorf("tpmid ek %v = %+v, want the RSA EK with get_tpm_pubhash's %s", args, rep, spireTPMPluginPubHash)
		}
	}
}

// TestEKHashFormat pins the format independently of a TPM: lowercase hex
// of the SHA-256 of the PKIX DER (not base64, and not of the PKCS #1
// RSAPublicKey, as spire-tpm-plugin hashed before May 2020).
func TestEKHashFormat(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	got, err := verify.EKHash(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	if want := fmt.Sprintf("%x", sum); got != want {
		t.Errorf("EKHash = %s, want %s (hex SHA-256 of the PKIX DER)", got, want)
	}
	old := sha256.Sum256(x509.MarshalPKCS1PublicKey(&key.PublicKey))
	if got == hex.EncodeToString(old[:]) || got == base64.StdEncoding.EncodeToString(old[:]) {
		t.Error("EKHash is the pre-2020 PKCS #1 hash")
	}
}

// serveTPM serves the raw TPM command stream of a unix socket (as swtpm's
// data channel does) from sim, one connection at a time, until the test
// ends. It returns the socket path.
func serveTPM(t *testing.T, sim io.ReadWriter) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "tpm.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			bridge(c, sim)
			c.Close()
		}
	}()
	return sock
}

// bridge passes commands from c to sim and responses back: a 10-byte
// header whose bytes 2-5 are the whole size, then the rest.
func bridge(c net.Conn, sim io.ReadWriter) {
	for {
		hdr := make([]byte, 10)
		if _, err := io.ReadFull(c, hdr); err != nil {
			return
		}
		n := binary.BigEndian.Uint32(hdr[2:6])
		if n < 10 || n > 1<<16 {
			return
		}
		cmd := append(hdr, make([]byte, n-10)...)
		if _, err := io.ReadFull(c, cmd[10:]); err != nil {
			return
		}
		if _, err := sim.Write(cmd); err != nil {
			return
		}
		resp := make([]byte, 1<<16)
		m, err := sim.Read(resp)
		if err != nil && !errors.Is(err, io.EOF) {
			return
		}
		if _, err := c.Write(resp[:m]); err != nil {
			return
		}
	}
}
