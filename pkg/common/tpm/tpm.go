// Package tpm is the one place in tpmid that talks to a TPM 2.0: it opens
// the device (kernel device, swtpm socket or the in-process simulator),
// reads endorsement keys and their certificates, creates and loads
// attestation keys, activates credentials, quotes and reads PCRs.
// Extending PCRs and provisioning EK certificates, for tests and demos
// only, live in internal/tpmtest, which shipped binaries do not link.
//
// It speaks TPM 2.0 through github.com/google/go-tpm (the tpm2 API for
// EKs, AKs, activation and quotes; the legacy API for PCR reads and
// capability queries). AK blobs keep go-attestation's serialisation, so
// blobs written by earlier versions still load.
//
// A *TPM is safe for concurrent use: calls are serialised by a mutex. Every
// transient object this package loads is flushed before the call returns,
// except an AK, which stays loaded until (*AK).Close.
//
// Cancellation: WithContext returns a view of the TPM whose calls check
// the context before every TPM command and return ctx.Err() once it is
// done, so a cancelled attestation stops between two commands (a command
// already sent runs to its end: TPMs cannot abort one).
package tpm

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"

	legacy "github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpmutil"

	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// TPM is an open TPM, or a view of one bound to a context (WithContext).
type TPM struct {
	s   *shared
	ctx context.Context // nil: never cancelled
}

// shared is the state every view of one opened TPM shares.
type shared struct {
	mu     sync.Mutex
	ch     *channel
	closed bool
}

// WithContext returns a view of t whose calls stop with ctx.Err() before
// the next TPM command once ctx is done. The view shares t's TPM, lock and
// counters; closing either closes both.
func (t *TPM) WithContext(ctx context.Context) *TPM {
	return &TPM{s: t.s, ctx: ctx}
}

// Open opens the TPM named by cfg.Device (see Config). Close it when done.
func Open(cfg Config) (*TPM, error) {
	d, err := parseDevice(cfg.Device)
	if err != nil {
		return nil, err
	}
	rwc, err := openTransport(d)
	if err != nil {
		return nil, err
	}
	ch := &channel{rwc: rwc, eventLog: cfg.EventLogPath}
	return &TPM{s: &shared{ch: ch}}, nil
}

// Close closes the command channel. AKs still loaded are not flushed: close
// them first.
func (t *TPM) Close() error {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	if t.s.closed {
		return nil
	}
	t.s.closed = true
	if err := t.s.ch.Close(); err != nil {
		return fmt.Errorf("closing TPM: %w", err)
	}
	return nil
}

// Commands returns how many TPM commands were sent through this TPM so
// far, counted at the command channel (one per command written, including
// retries the TPM asked for).
func (t *TPM) Commands() uint64 { return t.s.ch.commands.Load() }

// CommandCounts returns how many commands of each code (TPM_CC, e.g.
// 0x00000131 TPM2_CreatePrimary) were sent through this TPM so far.
func (t *TPM) CommandCounts() map[uint32]uint64 { return t.s.ch.counts() }

// lock takes the mutex, fails when the TPM is closed or the view's
// context is done, and binds the context to the channel so every command
// checks it.
func (t *TPM) lock() error {
	if t.ctx != nil {
		if err := t.ctx.Err(); err != nil {
			return err
		}
	}
	t.s.mu.Lock()
	if t.s.closed {
		t.s.mu.Unlock()
		return ErrClosed
	}
	t.s.ch.ctx = t.ctx
	return nil
}

// lockCleanup takes the mutex for a cleanup (flushing an AK) that must
// run even when the view's context is done.
func (t *TPM) lockCleanup() error {
	t.s.mu.Lock()
	if t.s.closed {
		t.s.mu.Unlock()
		return ErrClosed
	}
	t.s.ch.ctx = nil
	return nil
}

func (t *TPM) unlock() {
	t.s.ch.ctx = nil
	t.s.mu.Unlock()
}

// tp is the go-tpm tpm2 transport over the channel; call it with the lock
// held.
func (t *TPM) tp() transport.TPM { return transport.FromReadWriter(t.s.ch) }

// flush sends TPM2_FlushContext for a transient object or session. It
// ignores the context: cleaning up after a cancelled call must still
// happen, or the object stays loaded for every user of the TPM.
func (t *TPM) flush(h uint32) error {
	saved := t.s.ch.ctx
	t.s.ch.ctx = nil
	defer func() { t.s.ch.ctx = saved }()
	if _, err := (tpm2.FlushContext{FlushHandle: tpm2.TPMHandle(h)}).Execute(t.tp()); err != nil {
		return fmt.Errorf("TPM2_FlushContext 0x%08x: %w", h, err)
	}
	return nil
}

// EventLog returns the TCG binary event log from Config.EventLogPath,
// bounded to DefaultMaxEventLog bytes. It sends no TPM command. A missing
// log wraps ErrNoEventLog.
//
// Security: the log is unauthenticated input; only a quote makes it
// meaningful, after a verifier replays it against quoted PCRs.
func (t *TPM) EventLog() ([]byte, error) {
	return t.s.ch.MeasurementLog()
}

// Banks returns the active PCR banks (TPM2_GetCapability TPM_CAP_PCRS,
// banks with at least one PCR allocated), sorted by algorithm ID.
func (t *TPM) Banks() ([]pcrs.Alg, error) {
	if err := t.lock(); err != nil {
		return nil, err
	}
	defer t.unlock()
	vals, _, err := legacy.GetCapability(t.s.ch, legacy.CapabilityPCRs, 1024, 0)
	if err != nil {
		return nil, fmt.Errorf("TPM2_GetCapability(PCRS): %w", err)
	}
	var out []pcrs.Alg
	for _, v := range vals {
		sel, ok := v.(legacy.PCRSelection)
		if ok && len(sel.PCRs) > 0 {
			out = append(out, pcrs.Alg(sel.Hash))
		}
	}
	slices.Sort(out)
	return out, nil
}

// checkSelection validates a PCR list and returns it sorted without
// duplicates.
func checkSelection(bank pcrs.Alg, list []int) ([]int, error) {
	if !bank.Known() {
		return nil, fmt.Errorf("%w: PCR bank %s", ErrBadAlgorithm, bank)
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("%w: no PCRs selected", ErrBadPCR)
	}
	out := slices.Clone(list)
	slices.Sort(out)
	out = slices.Compact(out)
	if out[0] < 0 || out[len(out)-1] > pcrs.MaxIndex {
		return nil, fmt.Errorf("%w: PCR indices must be in 0..%d, got %v", ErrBadPCR, pcrs.MaxIndex, list)
	}
	return out, nil
}

// ReadPCRs reads the given PCRs of one bank with TPM2_PCR_Read, repeating
// the command while the TPM returns only part of the selection (most TPMs
// return at most 8 digests per call).
//
// Security: values read here are not signed; bind them with Quote.
func (t *TPM) ReadPCRs(bank pcrs.Alg, pcrList []int) (map[int][]byte, error) {
	list, err := checkSelection(bank, pcrList)
	if err != nil {
		return nil, err
	}
	if err := t.lock(); err != nil {
		return nil, err
	}
	defer t.unlock()
	out := make(map[int][]byte, len(list))
	for range len(list) {
		var want []int
		for _, i := range list {
			if _, ok := out[i]; !ok {
				want = append(want, i)
			}
		}
		if len(want) == 0 {
			break
		}
		got, err := legacy.ReadPCRs(t.s.ch, legacy.PCRSelection{Hash: legacy.Algorithm(bank), PCRs: want})
		if err != nil {
			return nil, fmt.Errorf("TPM2_PCR_Read bank %s PCRs %v: %w", bank, want, err)
		}
		progress := false
		for i, v := range got {
			if !slices.Contains(want, i) {
				return nil, fmt.Errorf("TPM2_PCR_Read bank %s: TPM returned unrequested PCR %d", bank, i)
			}
			if len(v) != bank.Size() {
				return nil, fmt.Errorf("TPM2_PCR_Read bank %s PCR %d: %d-byte digest, want %d", bank, i, len(v), bank.Size())
			}
			out[i] = v
			progress = true
		}
		if !progress {
			break
		}
	}
	if len(out) != len(list) {
		return nil, fmt.Errorf("TPM2_PCR_Read bank %s: TPM returned %d of %d PCRs (is the bank active?)", bank, len(out), len(list))
	}
	return out, nil
}

// WithChannel runs f with the TPM's raw command channel while holding the
// TPM's lock, so no other call interleaves; commands f sends are counted
// like any other. It is the hook for test-support code (internal/tpmtest:
// EK certificate provisioning, PCR extend), which is kept out of the
// shipped binaries; tpmid itself never calls it.
func (t *TPM) WithChannel(f func(rw io.ReadWriter) error) error {
	if err := t.lock(); err != nil {
		return err
	}
	defer t.unlock()
	return f(t.s.ch)
}

// LoadedHandles lists the transient objects and sessions loaded in the TPM
// (TPM2_GetCapability TPM_CAP_HANDLES from 0x80000000, 0x02000000 and
// 0x03000000, at most 64 each). Without a resource manager (/dev/tpm0,
// swtpm) they are shared by all users of the TPM, so a non-empty list after
// a clean run means something leaked; tests and `tpmid doctor` use it.
func (t *TPM) LoadedHandles() ([]uint32, error) {
	if err := t.lock(); err != nil {
		return nil, err
	}
	defer t.unlock()
	var out []uint32
	for _, first := range []uint32{0x80000000, 0x02000000, 0x03000000} {
		vals, _, err := legacy.GetCapability(t.s.ch, legacy.CapabilityHandles, 64, first)
		if err != nil {
			return nil, fmt.Errorf("TPM2_GetCapability(HANDLES from 0x%08x): %w", first, err)
		}
		for _, v := range vals {
			h, ok := v.(tpmutil.Handle)
			if !ok {
				return nil, fmt.Errorf("TPM2_GetCapability(HANDLES): unexpected %T", v)
			}
			// The capability lists handles >= first of any type; keep
			// those of the requested type.
			if uint32(h)>>24 == first>>24 {
				out = append(out, uint32(h))
			}
		}
	}
	return out, nil
}

// Check sends one TPM2_GetCapability (the PCR banks) and fails when the TPM
// does not answer or has no PCR bank active, so a configuration that names
// the wrong device fails at once instead of at the first attestation.
func (t *TPM) Check() error {
	banks, err := t.Banks()
	if err != nil {
		return err
	}
	if len(banks) == 0 {
		return fmt.Errorf("TPM2_GetCapability(PCRS): no PCR bank is active")
	}
	return nil
}
