package store

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkAttestationTx is the transaction of one admitted attestation:
// HostByEK, ProfilesFor, UpdateHost with new counters, AppendAttempt, on a
// store holding a few hosts, profiles (4 KiB bodies, several versions) and
// group assignments. SQLite commits with synchronous=FULL (an fsync per
// commit); PostgreSQL runs SERIALIZABLE over loopback.
//
//	go test -run '^$' -bench AttestationTx -benchtime 2000x ./pkg/server/store/
func BenchmarkAttestationTx(b *testing.B) {
	for _, name := range backendNames {
		b.Run(name, func(b *testing.B) {
			s := benchStore(b, name)
			target := ek("7")
			var clock uint64
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				clock++
				if err := attestationTx(s, target, clock); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAttestationTxParallel is the same transaction from 32
// concurrent attestations, each on its own host, as a loaded server runs
// them: SQLite's group commit shares one commit among the Updates that
// queue behind a running one; PostgreSQL runs them in parallel.
//
//	go test -run '^$' -bench AttestationTxParallel -benchtime 4000x ./pkg/server/store/
func BenchmarkAttestationTxParallel(b *testing.B) {
	for _, name := range backendNames {
		b.Run(name, func(b *testing.B) {
			s := benchStore(b, name)
			var next atomic.Int64
			b.SetParallelism(16) // 16 x GOMAXPROCS goroutines
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				target := ek(fmt.Sprint(next.Add(1) % benchHosts))
				var clock uint64
				for pb.Next() {
					clock++
					if err := attestationTx(s, target, clock); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

const benchHosts = 100

// benchStore is a store holding a few hosts, profiles and assignments.
func benchStore(b *testing.B, name string) Store {
	be := newBackend(b, name)
	s := be.open(b)
	body := bytes.Repeat([]byte("x"), 4096)
	update(b, s, func(tx Tx) error {
		for _, p := range []string{"fw-2025", "fw-2026", "kernel", "bootloader", "other"} {
			for range 3 {
				if _, err := tx.PutProfile(bg, Profile{Name: p, Body: body}); err != nil {
					return err
				}
			}
		}
		for _, a := range []Assignment{
			{Profile: "fw-2025", Group: "rack1"}, {Profile: "fw-2026", Group: "rack1"},
			{Profile: "kernel", Group: "web"}, {Profile: "bootloader", Host: "host7"},
			{Profile: "other", Group: "db"},
		} {
			if err := tx.Assign(bg, a); err != nil {
				return err
			}
		}
		for i := range benchHosts {
			h := &Host{EKHash: ek(fmt.Sprint(i)), Hostname: fmt.Sprintf("host%d", i), State: HostEnrolled,
				Groups: []string{"rack1", "web"}, Retired: []string{"fw-2025"}, EKCert: body[:1200]}
			if err := tx.CreateHost(bg, h); err != nil {
				return err
			}
		}
		return nil
	})
	return s
}

// attestationTx is one admitted attestation's transaction.
func attestationTx(s Store, target string, clock uint64) error {
	return s.Update(bg, func(tx Tx) error {
		h, err := tx.HostByEK(bg, target)
		if err != nil {
			return err
		}
		ps, err := tx.ProfilesFor(bg, h)
		if err != nil {
			return err
		}
		if len(ps) != 3 && h.Hostname == "host7" { // bootloader (host), fw-2026 (rack1), kernel (web); fw-2025 retired
			return fmt.Errorf("%d profiles", len(ps))
		}
		now := time.Now()
		h.Counters = &Counters{ResetCount: 3, RestartCount: 0, Clock: clock, Safe: true}
		h.LastAttestation, h.LastOutcome = now, OutcomeAdmitted
		if len(ps) > 0 {
			h.LastProfile = fmt.Sprintf("%s@%d", ps[0].Name, ps[0].Version)
		}
		if err := tx.UpdateHost(bg, h); err != nil {
			return err
		}
		return tx.AppendAttempt(bg, &Attempt{Time: now, EKHash: h.EKHash, Hostname: h.Hostname,
			Server: "bench", Outcome: OutcomeAdmitted, Profile: h.LastProfile})
	})
}
