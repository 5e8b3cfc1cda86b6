package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// A transaction that keeps losing to a concurrent writer is run
// s.attempts times, then Update answers ErrConflict; one that loses once
// succeeds on its second run. (SQLite has one writer: no such race.)
func TestPostgresRetry(t *testing.T) {
	for _, tc := range []struct {
		name     string
		interfer int // runs in which a concurrent transaction changes the row
		wantRuns int
		wantErr  error
	}{
		{"loses once", 1, 2, nil},
		{"always loses", 1000, 5, ErrConflict},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackend(t, "postgres")
			s := b.open(t)
			update(t, s, func(tx Tx) error { return tx.CreateHost(bg, sampleHost("a.example")) })
			runs := 0
			err := s.Update(bg, func(tx Tx) error {
				runs++
				h, err := tx.HostByEK(bg, ek("a.example"))
				if err != nil {
					return err
				}
				if runs <= tc.interfer {
					// Another server updates the same host and commits
					// between our read and our write.
					if err := s.Update(bg, func(tx2 Tx) error {
						h2, err := tx2.HostByEK(bg, ek("a.example"))
						if err != nil {
							return err
						}
						h2.LastOutcome = fmt.Sprint("other ", runs)
						return tx2.UpdateHost(bg, h2)
					}); err != nil {
						return fmt.Errorf("interfering update: %v", err)
					}
				}
				h.LastOutcome = "mine"
				return tx.UpdateHost(bg, h) // serialisation failure while interfered with
			})
			if runs != tc.wantRuns || !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("%d runs, %v; want %d runs, %v", runs, err, tc.wantRuns, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "40001") {
				t.Errorf("error does not carry the serialisation failure: %v", err)
			}
			view(t, s, func(tx Tx) error {
				h, err := tx.HostByEK(bg, ek("a.example"))
				want := "mine"
				if tc.wantErr != nil {
					want = fmt.Sprint("other ", tc.wantRuns)
				}
				if err != nil || h.LastOutcome != want {
					t.Errorf("last outcome %q, %v; want %q", h.LastOutcome, err, want)
				}
				return nil
			})
		})
	}
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// Runs without a PostgreSQL server.
func TestPostgresUnavailable(t *testing.T) {
	addr := closedPort(t)
	for _, dsn := range []string{
		"postgres://postgres@" + addr + "/tpmid?sslmode=disable&connect_timeout=2",
		"postgresql://postgres@" + addr + "/tpmid?sslmode=disable",
	} {
		start := time.Now()
		s, err := Open(bg, dsn)
		if err == nil {
			s.Close()
			t.Fatalf("Open(%s) succeeded", dsn)
		}
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("Open(%s): %v, want ErrUnavailable", dsn, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Open of a closed port took %v", d)
		}
	}
	// A malformed DSN is a configuration error, not an outage.
	if _, err := Open(bg, "postgres://%zz"); !errors.Is(err, ErrInvalid) {
		t.Errorf("malformed DSN: %v, want ErrInvalid", err)
	}
}

// proxy forwards TCP connections to target until cut.
type proxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	cut    bool
}

func newProxy(t *testing.T, target string) *proxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, target: target}
	go p.serve()
	t.Cleanup(p.Cut)
	return p
}

func (p *proxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			u.Close()
			return
		}
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		go func() { io.Copy(u, c); u.Close() }()
		go func() { io.Copy(c, u); c.Close() }()
	}
}

// Drop closes every forwarded connection but keeps accepting new ones:
// the database restarted.
func (p *proxy) Drop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// Cut closes the listener and every forwarded connection: the database
// is gone.
func (p *proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	p.l.Close()
	for _, c := range p.conns {
		c.Close()
	}
}

// The database goes away under an open store: Update and View answer
// ErrUnavailable (the plugin's gRPC Unavailable), not a conflict.
func TestPostgresConnectionLost(t *testing.T) {
	dsn := newPostgresDB(t)
	p := newProxy(t, "127.0.0.1:5432")
	dsn = strings.Replace(dsn, "127.0.0.1:5432", p.l.Addr().String(), 1)
	if !strings.Contains(dsn, p.l.Addr().String()) {
		t.Skipf("TPMID_TEST_POSTGRES is not at 127.0.0.1:5432; proxy test skipped")
	}
	s, err := Open(bg, dsn+"&connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	update(t, s, func(tx Tx) error { return tx.CreateHost(bg, sampleHost("a.example")) })
	p.Cut()
	ctx, cancel := context.WithTimeout(bg, 20*time.Second)
	defer cancel()
	err = s.Update(ctx, func(tx Tx) error {
		return tx.AppendAttempt(ctx, &Attempt{EKHash: ek("a.example"), Outcome: OutcomeAdmitted})
	})
	if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrConflict) {
		t.Errorf("Update after the database went away: %v, want ErrUnavailable", err)
	}
	err = s.View(ctx, func(tx Tx) error { _, err := tx.ListHosts(ctx); return err })
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("View after the database went away: %v, want ErrUnavailable", err)
	}
}

// After the database restarts, pooled connections are dead: the next
// Update (after the pool's 1 s idle ping threshold) reconnects instead of
// failing.
func TestPostgresReconnect(t *testing.T) {
	dsn := newPostgresDB(t)
	p := newProxy(t, "127.0.0.1:5432")
	dsn = strings.Replace(dsn, "127.0.0.1:5432", p.l.Addr().String(), 1)
	if !strings.Contains(dsn, p.l.Addr().String()) {
		t.Skipf("TPMID_TEST_POSTGRES is not at 127.0.0.1:5432; proxy test skipped")
	}
	s, err := Open(bg, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Several pooled connections.
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			if err := s.Update(bg, func(tx Tx) error {
				return tx.AppendAttempt(bg, &Attempt{Outcome: OutcomeAdmitted, Server: fmt.Sprint(i)})
			}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	p.Drop()
	time.Sleep(1100 * time.Millisecond)
	for i := range 6 {
		if err := s.Update(bg, func(tx Tx) error {
			return tx.AppendAttempt(bg, &Attempt{Outcome: OutcomeAdmitted})
		}); err != nil {
			t.Fatalf("update %d after the restart: %v", i, err)
		}
	}
}
