package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func openSQLiteStore(t *testing.T) *sqlStore {
	t.Helper()
	s := newBackend(t, "sqlite").open(t)
	ss, ok := s.(*sqlStore)
	if !ok || ss.group == nil {
		t.Fatalf("SQLite store %T has no group commit", s)
	}
	return ss
}

// queued waits until n Updates are queued behind the running batch.
func queued(t *testing.T, s *sqlStore, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.group.mu.Lock()
		got := len(s.group.queue)
		s.group.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d Updates queued, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// hostExists reads a host by name outside any batch.
func hostExists(t *testing.T, s Store, name string) bool {
	t.Helper()
	var found bool
	view(t, s, func(tx Tx) error {
		_, err := tx.HostByName(bg, name)
		switch {
		case err == nil:
			found = true
		case !errors.Is(err, ErrNotFound):
			return err
		}
		return nil
	})
	return found
}

// blockBatch starts an Update that holds the writer until release is
// closed, so that the Updates started next share one batch.
func blockBatch(t *testing.T, s *sqlStore) (release func(), done <-chan error) {
	t.Helper()
	started, hold := make(chan struct{}), make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- s.Update(bg, func(tx Tx) error {
			close(started)
			<-hold
			return tx.CreateHost(bg, sampleHost("blocker.example"))
		})
	}()
	<-started
	return func() { close(hold) }, errc
}

// TestGroupCommitIsolation: Updates that share one SQLite transaction
// behave as if each had its own. A failing, conflicting, panicking or
// cancelled member leaves no write behind; the others commit, and each
// caller gets its own outcome.
func TestGroupCommitIsolation(t *testing.T) {
	s := openSQLiteStore(t)
	release, blocker := blockBatch(t, s)

	type member struct {
		name string
		fn   func(ctx context.Context, tx Tx) error
		// cancel: the caller's context is cancelled while it is queued.
		cancel bool
		want   error // nil: committed
		panics bool
		exists bool // the member's host after the batch
	}
	members := []member{
		{name: "ok-1", fn: func(ctx context.Context, tx Tx) error { return tx.CreateHost(ctx, sampleHost("ok-1")) }, exists: true},
		{name: "fails-after-write", fn: func(ctx context.Context, tx Tx) error {
			if err := tx.CreateHost(ctx, sampleHost("fails-after-write")); err != nil {
				return err
			}
			return errTest
		}, want: errTest},
		{name: "ok-2", fn: func(ctx context.Context, tx Tx) error {
			// Sees ok-1's write, as if ok-1 had committed first.
			if _, err := tx.HostByName(ctx, "ok-1"); err != nil {
				return fmt.Errorf("ok-2 cannot see ok-1: %w", err)
			}
			return tx.CreateHost(ctx, sampleHost("ok-2"))
		}, exists: true},
		{name: "conflict", fn: func(ctx context.Context, tx Tx) error {
			h := sampleHost("conflict")
			h.Hostname = "ok-1" // taken by ok-1 earlier in the batch
			return tx.CreateHost(ctx, h)
		}, want: ErrConflict},
		{name: "panics", fn: func(ctx context.Context, tx Tx) error {
			if err := tx.CreateHost(ctx, sampleHost("panics")); err != nil {
				return err
			}
			panic("member panic")
		}, panics: true},
		{name: "cancelled", cancel: true, fn: func(ctx context.Context, tx Tx) error { return tx.CreateHost(ctx, sampleHost("cancelled")) }, want: context.Canceled},
		{name: "ok-3", fn: func(ctx context.Context, tx Tx) error { return tx.CreateHost(ctx, sampleHost("ok-3")) }, exists: true},
	}
	type outcome struct {
		err error
		pan any
	}
	results := make([]outcome, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		ctx, cancel := context.WithCancel(bg)
		defer cancel()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { results[i].pan = recover() }()
			results[i].err = s.Update(ctx, func(tx Tx) error { return m.fn(ctx, tx) })
		}()
		queued(t, s, i+1) // keep the batch order the table's order
		if m.cancel {
			cancel()
		}
	}
	release()
	wg.Wait()
	if err := <-blocker; err != nil {
		t.Fatalf("blocking Update: %v", err)
	}
	for i, m := range members {
		r := results[i]
		switch {
		case m.panics:
			if r.pan == nil {
				t.Errorf("%s: no panic in the caller", m.name)
			}
		case r.pan != nil:
			t.Errorf("%s: unexpected panic %v", m.name, r.pan)
		case m.want == nil && r.err != nil:
			t.Errorf("%s: %v, want committed", m.name, r.err)
		case m.want != nil && !errors.Is(r.err, m.want):
			t.Errorf("%s: %v, want %v", m.name, r.err, m.want)
		}
		if got := hostExists(t, s, m.name); got != m.exists {
			t.Errorf("%s: host exists = %v after the batch, want %v", m.name, got, m.exists)
		}
	}
}

// TestGroupCommitCancelledMidFunction: a member whose context ends while
// its function runs is rolled back, even if the function ignores the
// error, and the batch's other members still commit.
func TestGroupCommitCancelledMidFunction(t *testing.T) {
	s := openSQLiteStore(t)
	release, blocker := blockBatch(t, s)
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	var wg sync.WaitGroup
	var errCancelled, errOK error
	wg.Add(2)
	go func() {
		defer wg.Done()
		errCancelled = s.Update(ctx, func(tx Tx) error {
			if err := tx.CreateHost(ctx, sampleHost("cancelled")); err != nil {
				return err
			}
			cancel()
			return nil
		})
	}()
	queued(t, s, 1)
	go func() {
		defer wg.Done()
		errOK = s.Update(bg, func(tx Tx) error { return tx.CreateHost(bg, sampleHost("ok")) })
	}()
	queued(t, s, 2)
	release()
	wg.Wait()
	if err := <-blocker; err != nil {
		t.Fatal(err)
	}
	if !errors.Is(errCancelled, context.Canceled) {
		t.Errorf("cancelled member: %v, want context.Canceled", errCancelled)
	}
	if errOK != nil {
		t.Errorf("other member: %v", errOK)
	}
	if hostExists(t, s, "cancelled") {
		t.Error("the cancelled member's write was committed")
	}
	if !hostExists(t, s, "ok") || !hostExists(t, s, "blocker.example") {
		t.Error("a committed member's write is missing")
	}
}

// TestGroupCommitCommitFailure: when the batch's COMMIT fails, every member
// that had succeeded gets the error, and none of its writes is there.
func TestGroupCommitCommitFailure(t *testing.T) {
	s := openSQLiteStore(t)
	release, blocker := blockBatch(t, s)
	// Deferred foreign keys make the violation surface at COMMIT, the only
	// way to make a commit fail from inside the batch.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		errs[0] = s.Update(bg, func(tx Tx) error { return tx.CreateHost(bg, sampleHost("innocent")) })
	}()
	queued(t, s, 1)
	go func() {
		defer wg.Done()
		errs[1] = s.Update(bg, func(tx Tx) error {
			st := tx.(*sqlTx)
			if _, err := st.exec(bg, "defer", "PRAGMA defer_foreign_keys = ON"); err != nil {
				return err
			}
			_, err := st.exec(bg, "orphan", "INSERT INTO host_groups (ek_hash, grp) VALUES (?, ?)", ek("nobody"), "g")
			return err
		})
	}()
	queued(t, s, 2)
	release()
	wg.Wait()
	if err := <-blocker; err != nil { // its own, earlier batch
		t.Errorf("blocking member: %v", err)
	}
	for i, err := range errs {
		if err == nil {
			t.Errorf("member %d: committed, want the commit's error", i)
		}
	}
	if hostExists(t, s, "innocent") {
		t.Error("a write of a failed batch is visible")
	}
	// The store still works after a failed batch.
	update(t, s, func(tx Tx) error { return tx.CreateHost(bg, sampleHost("after")) })
	if !hostExists(t, s, "after") {
		t.Error("Update after a failed batch did not commit")
	}
}

// TestGroupCommitConcurrent: many concurrent Updates, every other one
// failing, under the race detector: exactly the successful ones are there.
func TestGroupCommitConcurrent(t *testing.T) {
	s := openSQLiteStore(t)
	const n = 200
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Update(bg, func(tx Tx) error {
				if err := tx.CreateHost(bg, sampleHost(fmt.Sprintf("h%d", i))); err != nil {
					return err
				}
				if i%2 == 1 {
					return errTest
				}
				return tx.AppendAttempt(bg, &Attempt{EKHash: ek(fmt.Sprintf("h%d", i)), Outcome: OutcomeAdmitted})
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if want := i%2 == 1; errors.Is(err, errTest) != want || (!want && err != nil) {
			t.Errorf("Update %d: %v", i, err)
		}
	}
	var hosts []Host
	var attempts []Attempt
	view(t, s, func(tx Tx) (err error) {
		if hosts, err = tx.ListHosts(bg); err != nil {
			return err
		}
		attempts, err = tx.Attempts(bg, AttemptFilter{})
		return err
	})
	if len(hosts) != n/2 || len(attempts) != n/2 {
		t.Errorf("%d hosts and %d attempts, want %d each", len(hosts), len(attempts), n/2)
	}
	for _, h := range hosts {
		var i int
		fmt.Sscanf(h.Hostname, "h%d", &i)
		if i%2 == 1 {
			t.Errorf("host %s of a failed Update was committed", h.Hostname)
		}
	}
}

// TestNoLostUpdate: concurrent read-modify-write Updates of one host's
// counters, as attestations of one TPM racing on two servers do, never
// lose a write: every Update that reported success is counted. SQLite
// serialises them (group commit runs them one after another); PostgreSQL
// (REPEATABLE READ) fails the later writer of the row with a serialisation
// failure, and Update reruns it on the new row.
func TestNoLostUpdate(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend, s Store) {
		update(t, s, func(tx Tx) error {
			h := sampleHost("counted")
			h.Counters = &Counters{ResetCount: 1}
			return tx.CreateHost(bg, h)
		})
		const n = 16
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = s.Update(bg, func(tx Tx) error {
					h, err := tx.HostByEK(bg, ek("counted"))
					if err != nil {
						return err
					}
					h.Counters.Clock++
					return tx.UpdateHost(bg, h)
				})
			}()
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, ErrConflict):
				t.Errorf("Update: %v", err)
			}
		}
		var clock uint64
		view(t, s, func(tx Tx) error {
			h, err := tx.HostByEK(bg, ek("counted"))
			if err == nil {
				clock = h.Counters.Clock
			}
			return err
		})
		if ok == 0 || clock != uint64(ok) {
			t.Errorf("clock %d after %d successful increments: a write was lost", clock, ok)
		}
	})
}
