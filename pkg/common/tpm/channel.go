package tpm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tpmid/tpmid/pkg/common/boundedfile"
)

const (
	// maxResponse bounds one TPM response read from a socket. TPM 2.0
	// responses are at most a few KiB (MAX_RESPONSE_SIZE is 4096 on
	// PC-client TPMs); 64 KiB leaves room without trusting the peer.
	maxResponse = 64 << 10
	// commandTimeout bounds one command/response round trip over a
	// socket. RSA key generation on a slow TPM can take tens of seconds.
	commandTimeout = 3 * time.Minute
	// DefaultMaxEventLog bounds the event log read from disk: the largest
	// log the server parses (eventlog.DefaultLimits.MaxLogSize), so an
	// agent refuses a larger one itself instead of sending evidence the
	// server cannot take.
	DefaultMaxEventLog = 2 << 20
)

// channel is the command channel handed to go-attestation and go-tpm: it
// counts commands, frames socket responses and reads the event log.
type channel struct {
	rwc         io.ReadWriteCloser
	commands    atomic.Uint64
	eventLog    string
	maxEventLog int64

	mu     sync.Mutex
	byCode map[uint32]uint64 // commands sent, by TPM_CC

	// ctx is the context of the call holding the TPM's lock (nil: none).
	ctx context.Context
}

// Write sends one TPM command; every call is counted as one command, and
// by its command code (TPM 2.0 Part 1, 18.2: tag, size, then the code).
// A done context stops the command before it is sent.
func (c *channel) Write(b []byte) (int, error) {
	if c.ctx != nil {
		if err := c.ctx.Err(); err != nil {
			return 0, err
		}
	}
	c.commands.Add(1)
	if len(b) >= 10 {
		c.mu.Lock()
		if c.byCode == nil {
			c.byCode = map[uint32]uint64{}
		}
		c.byCode[binary.BigEndian.Uint32(b[6:10])]++
		c.mu.Unlock()
	}
	return c.rwc.Write(b)
}

// counts returns a copy of the per-code counts.
func (c *channel) counts() map[uint32]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[uint32]uint64, len(c.byCode))
	for k, v := range c.byCode {
		out[k] = v
	}
	return out
}

func (c *channel) Read(b []byte) (int, error) { return c.rwc.Read(b) }

func (c *channel) Close() error { return c.rwc.Close() }

// MeasurementLog implements attest.CommandChannelTPM20: it reads the event
// log file, refusing one larger than the bound. A missing file wraps
// ErrNoEventLog.
func (c *channel) MeasurementLog() ([]byte, error) {
	path := c.eventLog
	if path == "" {
		path = DefaultEventLogPath
	}
	limit := c.maxEventLog
	if limit <= 0 {
		limit = DefaultMaxEventLog
	}
	// securityfs reports size 0, so boundedfile reads with a limit.
	b, err := boundedfile.Read(path, limit)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("%w: %s does not exist", ErrNoEventLog, path)
	case errors.Is(err, boundedfile.ErrTooLarge):
		return nil, fmt.Errorf("event log %s: %w (more than %d bytes)", path, ErrTooLarge, limit)
	case err != nil:
		return nil, fmt.Errorf("reading event log %s: %w", path, err)
	}
	return b, nil
}

// framedConn adapts a stream socket carrying raw TPM commands (swtpm's
// data port) to the one-Read-per-response expectation of go-tpm's
// tpmutil: Read returns from one whole buffered response, which it reads
// by the size in the 10-byte response header.
type framedConn struct {
	conn net.Conn
	buf  []byte
}

func (f *framedConn) Write(b []byte) (int, error) {
	f.buf = nil // a new command discards any unread response
	if err := f.conn.SetDeadline(time.Now().Add(commandTimeout)); err != nil {
		return 0, fmt.Errorf("setting TPM socket deadline: %w", err)
	}
	return f.conn.Write(b)
}

func (f *framedConn) Read(b []byte) (int, error) {
	if len(f.buf) == 0 {
		var hdr [10]byte
		if _, err := io.ReadFull(f.conn, hdr[:]); err != nil {
			return 0, fmt.Errorf("reading TPM response header: %w", err)
		}
		size := binary.BigEndian.Uint32(hdr[2:6])
		if size < 10 || size > maxResponse {
			return 0, fmt.Errorf("TPM response size %d: %w or malformed (bound %d)", size, ErrTooLarge, maxResponse)
		}
		resp := make([]byte, size)
		copy(resp, hdr[:])
		if _, err := io.ReadFull(f.conn, resp[10:]); err != nil {
			return 0, fmt.Errorf("reading TPM response body (%d bytes): %w", size, err)
		}
		f.buf = resp
	}
	n := copy(b, f.buf)
	f.buf = f.buf[n:]
	return n, nil
}

func (f *framedConn) Close() error { return f.conn.Close() }

// openTransport opens the raw byte channel for a parsed device.
func openTransport(d device) (io.ReadWriteCloser, error) {
	switch d.kind {
	case kindAuto:
		for _, p := range []string{"/dev/tpmrm0", "/dev/tpm0"} {
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err == nil {
				return f, nil
			}
			if !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("opening %s: %w", p, err)
			}
		}
		return nil, fmt.Errorf("%w: neither /dev/tpmrm0 nor /dev/tpm0 exists (set the device explicitly, e.g. tcp://127.0.0.1:2321 for swtpm)", ErrNoTPM)
	case kindPath:
		f, err := os.OpenFile(d.addr, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("opening TPM device %s: %w", d.addr, err)
		}
		return f, nil
	case kindTCP, kindUnix:
		network := "tcp"
		if d.kind == kindUnix {
			network = "unix"
		}
		conn, err := net.DialTimeout(network, d.addr, 10*time.Second)
		if err != nil {
			return nil, fmt.Errorf("connecting to TPM at %s://%s: %w", network, d.addr, err)
		}
		return &framedConn{conn: conn}, nil
	case kindSimulator:
		return openSimulator()
	}
	return nil, fmt.Errorf("%w: unknown kind %q", ErrBadDevice, d.kind)
}
