package swtpm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// lockFile is the file swtpm holds an fcntl write lock on while it runs
// on a state directory (swtpm_nvstore_dir.c); it is never copied.
const lockFile = ".lock"

// ErrRunning: a swtpm is running on the state directory, so its files may
// change while they are copied.
var ErrRunning = errors.New("a swtpm is running on this state directory")

// Snapshot copies the TPM state in stateDir (a stopped swtpm's: its NV,
// seeds, counters and clock) into dst, which must not exist or be empty.
// Restore puts it back: the TPM then is what it was, as a cloned or
// restored disk image would make it.
func Snapshot(stateDir, dst string) error {
	if err := checkStopped(stateDir); err != nil {
		return err
	}
	if ents, err := os.ReadDir(dst); err == nil && len(ents) > 0 {
		return fmt.Errorf("swtpm snapshot: %s is not empty", dst)
	}
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return fmt.Errorf("swtpm snapshot: %w", err)
	}
	n, err := copyState(dst, stateDir)
	if err != nil {
		return fmt.Errorf("swtpm snapshot: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("swtpm snapshot: no TPM state in %s (run Setup first)", stateDir)
	}
	return nil
}

// Restore replaces the TPM state in stateDir (created if missing) with the
// snapshot in src. No swtpm may be running on stateDir.
func Restore(src, stateDir string) error {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("swtpm restore: %w", err)
	}
	if err := checkStopped(stateDir); err != nil {
		return err
	}
	ents, err := os.ReadDir(stateDir)
	if err != nil {
		return fmt.Errorf("swtpm restore: %w", err)
	}
	for _, e := range ents {
		if e.Name() == lockFile || !e.Type().IsRegular() {
			continue
		}
		if err := os.Remove(filepath.Join(stateDir, e.Name())); err != nil {
			return fmt.Errorf("swtpm restore: %w", err)
		}
	}
	n, err := copyState(stateDir, src)
	if err != nil {
		return fmt.Errorf("swtpm restore: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("swtpm restore: no TPM state in %s", src)
	}
	return nil
}

// checkStopped refuses a state directory whose lock a swtpm holds.
func checkStopped(stateDir string) error {
	f, err := os.OpenFile(filepath.Join(stateDir, lockFile), os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("swtpm state %s: %w", stateDir, err)
	}
	defer f.Close()
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: io.SeekStart}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_GETLK, &lk); err != nil {
		return fmt.Errorf("swtpm state %s: checking its lock: %w", stateDir, err)
	}
	if lk.Type != syscall.F_UNLCK {
		return fmt.Errorf("swtpm state %s: %w (pid %d): stop it first", stateDir, ErrRunning, lk.Pid)
	}
	return nil
}

// copyState copies the regular files of src but the lock into dst and
// returns how many it copied.
func copyState(dst, src string) (int, error) {
	ents, err := os.ReadDir(src)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		if e.Name() == lockFile || !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return n, err
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// StateDir is the state directory the instance runs on.
func (i *Instance) StateDir() string { return i.stateDir }

// ClockInfo is TPMS_CLOCK_INFO (TPM 2.0 Part 2, 10.11.1): what a quote
// reports of the TPM's clock and reboot counters.
type ClockInfo struct {
	Clock        uint64 // milliseconds the TPM has been powered, kept across restarts
	ResetCount   uint32 // TPM Resets (Startup(CLEAR) without a Shutdown(STATE)) since TPM2_Clear
	RestartCount uint32 // TPM Restarts and Resumes since the last TPM Reset
	Safe         bool   // Clock was not reported with a higher value before
}

// ClockInfo runs TPM2_ReadClock on the running swtpm. swtpm serves one
// connection at a time: nothing else may hold the TPM open.
func (i *Instance) ClockInfo(ctx context.Context) (ClockInfo, error) {
	var ci ClockInfo
	network, addr, ok := strings.Cut(i.addr, "://")
	if !ok {
		return ci, fmt.Errorf("swtpm: address %q", i.addr)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return ci, fmt.Errorf("swtpm: %w", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	} else {
		conn.SetDeadline(time.Now().Add(10 * time.Second))
	}
	// TPM2_ReadClock: TPM_ST_NO_SESSIONS, size 10, TPM_CC_ReadClock.
	cmd := []byte{0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x81}
	if _, err := conn.Write(cmd); err != nil {
		return ci, fmt.Errorf("swtpm: TPM2_ReadClock: %w", err)
	}
	var hdr [10]byte
	if _, err := io.ReadFull(conn, hdr[:]); err != nil {
		return ci, fmt.Errorf("swtpm: TPM2_ReadClock response: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if rc := binary.BigEndian.Uint32(hdr[6:10]); rc != 0 {
		return ci, fmt.Errorf("swtpm: TPM2_ReadClock: response code 0x%x", rc)
	}
	// TPMS_TIME_INFO: time (8), then TPMS_CLOCK_INFO (8+4+4+1).
	const body = 8 + 8 + 4 + 4 + 1
	if size != 10+body {
		return ci, fmt.Errorf("swtpm: TPM2_ReadClock: response of %d bytes, want %d", size, 10+body)
	}
	var b [body]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		return ci, fmt.Errorf("swtpm: TPM2_ReadClock response: %w", err)
	}
	ci.Clock = binary.BigEndian.Uint64(b[8:16])
	ci.ResetCount = binary.BigEndian.Uint32(b[16:20])
	ci.RestartCount = binary.BigEndian.Uint32(b[20:24])
	ci.Safe = b[24] != 0
	return ci, nil
}
