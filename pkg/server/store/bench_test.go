package store

import (
	"bytes"
	"fmt"
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
			be := newBackend(b, name)
			s := be.open(b)
			body := bytes.Repeat([]byte("x"), 4096)
			const hosts = 100
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
				for i := range hosts {
					h := &Host{EKHash: ek(fmt.Sprint(i)), Hostname: fmt.Sprintf("host%d", i), State: HostEnrolled,
						Groups: []string{"rack1", "web"}, Retired: []string{"fw-2025"}, EKCert: body[:1200]}
					if err := tx.CreateHost(bg, h); err != nil {
						return err
					}
				}
				return nil
			})
			target := ek("7")
			var clock uint64
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				clock++
				err := s.Update(bg, func(tx Tx) error {
					h, err := tx.HostByEK(bg, target)
					if err != nil {
						return err
					}
					ps, err := tx.ProfilesFor(bg, h)
					if err != nil {
						return err
					}
					if len(ps) != 3 { // bootloader (host), fw-2026 (rack1), kernel (web); fw-2025 retired
						return fmt.Errorf("%d profiles", len(ps))
					}
					now := time.Now()
					h.Counters = &Counters{ResetCount: 3, RestartCount: 0, Clock: clock, Safe: true}
					h.LastAttestation, h.LastOutcome = now, OutcomeAdmitted
					h.LastProfile = fmt.Sprintf("%s@%d", ps[0].Name, ps[0].Version)
					if err := tx.UpdateHost(bg, h); err != nil {
						return err
					}
					return tx.AppendAttempt(bg, &Attempt{Time: now, EKHash: h.EKHash, Hostname: h.Hostname,
						Server: "bench", Outcome: OutcomeAdmitted, Profile: h.LastProfile})
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
