package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Group commit (SQLite). SQLite has one writer and, with synchronous=FULL,
// an fsync per commit: serialised, one transaction per attestation caps a
// server at about one attestation per fsync. Updates that arrive while a
// commit is in progress therefore queue, and the next writer runs them
// together in one transaction, each inside its own SAVEPOINT:
//
//   - an Update whose function fails is rolled back to its savepoint, so its
//     writes vanish and the others' stay: nothing is half-written, exactly
//     as with a transaction of its own;
//   - each function sees the writes of those before it in the batch, as it
//     would if they had committed first: the order is still serial;
//   - no caller is answered before the batch's COMMIT (and its fsync)
//     returned, so an admitted attestation is as durable as before;
//   - if COMMIT fails, every member of the batch gets the error.
//
// A member's context ending mid-statement would interrupt SQLite's
// connection, which rolls back the whole transaction, the other members'
// work included: a member's statements check its context before they
// start and then run under the batch's deadline (sqlTx.stmtCtx). A member
// whose context ended before its turn is skipped with ctx.Err(); one whose
// context ends during its function fails at its next statement and is
// rolled back to its savepoint.
// Decision of 2026-11-25, docs/store.md.

// maxBatch bounds one group transaction, so a slow member cannot hold many
// others behind one commit.
const maxBatch = 64

// batchTimeout bounds the statements of one member while it runs in a
// batch (its own context does not reach them, see above).
const batchTimeout = 10 * time.Second

type groupCommit struct {
	mu      sync.Mutex
	queue   []*pending
	leading bool
}

type pending struct {
	ctx  context.Context
	fn   func(Tx) error
	err  error
	pan  any // a panic in fn, re-raised in the caller's goroutine
	done chan struct{}
}

// updateGrouped runs fn in the next group transaction and waits for its
// commit. The first caller to find no batch running leads (see lead);
// the others wait for their batch.
func (s *sqlStore) updateGrouped(ctx context.Context, fn func(Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	p := &pending{ctx: ctx, fn: fn, done: make(chan struct{})}
	g := s.group
	g.mu.Lock()
	g.queue = append(g.queue, p)
	lead := !g.leading
	if lead {
		g.leading = true
	}
	g.mu.Unlock()
	if lead {
		s.lead(p)
	}
	// The leader ran its own member in one of its batches; others wait.
	// Waiting ignores ctx on purpose: once queued, the member's outcome is
	// decided by the batch, and answering "cancelled" for a write that then
	// commits would lie.
	<-p.done
	if p.pan != nil {
		panic(p.pan)
	}
	return p.err
}

// lead runs batches while the queue has members. A caller leads only
// until its own member is done, then hands the queue to a goroutine, so
// no caller waits for others' work under sustained load.
func (s *sqlStore) lead(own *pending) {
	g := s.group
	for {
		g.mu.Lock()
		if len(g.queue) == 0 {
			g.leading = false
			g.mu.Unlock()
			return
		}
		if own != nil && isDone(own) {
			g.mu.Unlock()
			go s.lead(nil)
			return
		}
		n := min(len(g.queue), maxBatch)
		batch := g.queue[:n:n]
		g.queue = g.queue[n:]
		g.mu.Unlock()
		s.runBatch(batch)
		if s.wStmts != nil {
			s.wStmts.prepare(context.Background()) // between transactions
		}
	}
}

func isDone(p *pending) bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// runBatch runs the members in one transaction, each in a savepoint, and
// commits once. It always closes every member's done channel.
func (s *sqlStore) runBatch(batch []*pending) {
	var ok []*pending
	defer func() {
		for _, p := range batch {
			close(p.done)
		}
	}()
	bctx, cancel := context.WithTimeout(context.Background(), time.Duration(len(batch))*batchTimeout)
	defer cancel()
	stx, err := s.w.BeginTx(bctx, s.wOpts)
	if err != nil {
		err = s.d.wrap(bctx, "begin", err)
		for _, p := range batch {
			p.err = err
		}
		return
	}
	for i, p := range batch {
		if err := p.ctx.Err(); err != nil {
			p.err = fmt.Errorf("store: %w", err)
			continue
		}
		mctx, mcancel := context.WithTimeout(context.WithoutCancel(p.ctx), batchTimeout)
		p.err, p.pan = s.runMember(p.ctx, mctx, stx, p.fn)
		mcancel()
		if p.err == nil && p.pan == nil {
			ok = append(ok, p)
			continue
		}
		if errors.Is(p.err, errBatchLost) {
			// The savepoint could not be rolled back: the transaction is
			// in an unknown state, so nobody in it may commit.
			_ = stx.Rollback()
			for _, q := range batch[:i] {
				if q.err == nil && q.pan == nil {
					q.err = p.err
				}
			}
			for _, q := range batch[i+1:] {
				q.err = p.err
			}
			return
		}
	}
	if len(ok) == 0 {
		_ = stx.Rollback()
		return
	}
	if err := stx.Commit(); err != nil {
		err = s.d.wrap(bctx, "commit", err)
		for _, p := range ok {
			p.err = err
		}
	}
}

// errBatchLost: rolling a member back to its savepoint failed.
var errBatchLost = errors.New("store: group transaction lost")

// runMember runs one function inside SAVEPOINT member: released when fn
// succeeds, rolled back to when it fails, panics, or its caller's context
// (caller) ended meanwhile, as a transaction of its own would be. ctx runs
// the member's statements.
func (s *sqlStore) runMember(caller, ctx context.Context, stx *sql.Tx, fn func(Tx) error) (err error, pan any) {
	if _, err := stx.ExecContext(ctx, "SAVEPOINT member"); err != nil {
		return fmt.Errorf("%w: savepoint: %w", errBatchLost, s.d.wrap(ctx, "savepoint", err)), nil
	}
	t := &sqlTx{s: s, d: s.d, tx: stx, isolate: ctx, stmts: s.wStmts}
	func() {
		defer func() {
			if r := recover(); r != nil {
				pan = r
			}
		}()
		err = fn(t)
	}()
	t.dead = true
	if err == nil && pan == nil && t.retry != nil {
		err = t.retry
	}
	if err == nil && pan == nil && caller.Err() != nil {
		err = fmt.Errorf("store: commit: %w", caller.Err())
	}
	if err == nil && pan == nil {
		if _, rerr := stx.ExecContext(ctx, "RELEASE member"); rerr != nil {
			return fmt.Errorf("%w: release: %w", errBatchLost, s.d.wrap(ctx, "release", rerr)), nil
		}
		return nil, nil
	}
	if _, rerr := stx.ExecContext(ctx, "ROLLBACK TO member"); rerr != nil {
		return fmt.Errorf("%w: rollback to savepoint: %w (after: %v)", errBatchLost, s.d.wrap(ctx, "rollback", rerr), err), nil
	}
	if _, rerr := stx.ExecContext(ctx, "RELEASE member"); rerr != nil {
		return fmt.Errorf("%w: release: %w (after: %v)", errBatchLost, s.d.wrap(ctx, "release", rerr), err), nil
	}
	return err, pan
}
