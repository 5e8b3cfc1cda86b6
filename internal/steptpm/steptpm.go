// Package steptpm opens a test machine's swtpm the way go.step.sm/crypto's
// TPM package opens a TPM (tpm.New with a command channel), for tests that
// drive step's attestation client against tpmid: a real peer, not a mock.
package steptpm

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"go.step.sm/crypto/tpm"
	"go.step.sm/crypto/tpm/storage"

	"github.com/tpmid/tpmid/internal/testmachine"
	tpmidtpm "github.com/tpmid/tpmid/pkg/common/tpm"
)

// channel is the command channel step's TPM talks through to swtpm's data
// port: raw TPM commands on a TCP connection, each response buffered whole
// (read by the size in its header) because go-tpm's legacy tpmutil reads a
// response with a single Read, as pkg/common/tpm frames it. Close is a
// no-op: step's TPM closes the channel after every operation and opens it
// again for the next, while swtpm serves one connection at a time; the
// connection is closed with the test.
type channel struct {
	conn net.Conn
	buf  []byte
	log  string
}

func (c *channel) Write(b []byte) (int, error) {
	c.buf = nil
	if err := c.conn.SetDeadline(time.Now().Add(time.Minute)); err != nil {
		return 0, err
	}
	return c.conn.Write(b)
}

func (c *channel) Read(b []byte) (int, error) {
	if len(c.buf) == 0 {
		var hdr [10]byte
		if _, err := io.ReadFull(c.conn, hdr[:]); err != nil {
			return 0, err
		}
		size := binary.BigEndian.Uint32(hdr[2:6])
		if size < 10 || size > 64<<10 {
			return 0, fmt.Errorf("TPM response size %d", size)
		}
		resp := make([]byte, size)
		copy(resp, hdr[:])
		if _, err := io.ReadFull(c.conn, resp[10:]); err != nil {
			return 0, err
		}
		c.buf = resp
	}
	n := copy(b, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

func (c *channel) Close() error { return nil }

// MeasurementLog implements go-attestation's CommandChannelTPM20.
func (c *channel) MeasurementLog() ([]byte, error) { return os.ReadFile(c.log) }

// Open connects to m's swtpm (a testmachine.NewSwtpm machine) and opens it
// with go.step.sm/crypto/tpm: AKs are kept in a directory of the test, EK
// certificates are never downloaded. It returns the TPM and its RSA EK,
// whose certificate step read from NV and which is checked to be the one
// swtpm_setup made. The connection is closed with the test; nothing else
// may hold the swtpm meanwhile.
func Open(t testing.TB, m *testmachine.Machine) (*tpm.TPM, *tpm.EK) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(m.Device, "tcp://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	tp, err := tpm.New(
		tpm.WithCommandChannel(&channel{conn: conn, log: m.LogPath}),
		tpm.WithStore(storage.NewDirstore(t.TempDir())),
		tpm.WithDisableDownload(),
	)
	if err != nil {
		t.Fatal(err)
	}
	eks, err := tp.GetEKs(context.Background())
	if err != nil {
		t.Fatalf("step GetEKs: %v", err)
	}
	want, err := tpmidtpm.TrimDER(m.EKCertDER)
	if err != nil {
		t.Fatal(err)
	}
	for _, ek := range eks {
		if _, ok := ek.Public().(*rsa.PublicKey); ok && ek.Certificate() != nil {
			if !bytes.Equal(ek.Certificate().Raw, want) {
				t.Fatal("step's EK certificate is not the one swtpm_setup made")
			}
			return tp, ek
		}
	}
	t.Fatalf("step found no RSA EK with a certificate among %d EKs", len(eks))
	return nil, nil
}
