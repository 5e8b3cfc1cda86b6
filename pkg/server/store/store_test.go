package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

var bg = context.Background()

func sampleHost(name string) *Host {
	return &Host{
		EKHash:   ek(name),
		Hostname: name,
		EKPublic: []byte("pkix " + name),
		EKCert:   []byte("cert " + name),
		Groups:   []string{"web", "eu"},
		State:    HostEnrolled,
		Profiles: []string{"base"},
	}
}

func TestHostCreateGet(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend, s Store) {
		local := time.FixedZone("X", 5*3600)
		h := sampleHost("web1.example.com")
		h.Retired = []string{"old"}
		h.Proposed = []byte(`{"pcrs":{}}`)
		h.ProposedAt = time.Date(2026, 11, 25, 15, 4, 5, 123456789, local)
		h.Counters = &Counters{ResetCount: 7, RestartCount: 1 << 31, Clock: 1<<63 + 5, Safe: true}
		h.LastAttestation = time.Date(2026, 11, 25, 16, 0, 0, 999, local)
		h.LastOutcome, h.LastProfile = OutcomeAdmitted, "base@2"
		before := time.Now().UTC().Add(-time.Second)
		update(t, s, func(tx Tx) error { return tx.CreateHost(bg, h) })
		if h.CreatedAt.IsZero() || h.CreatedAt.Before(before) || h.CreatedAt.Location() != time.UTC || !h.UpdatedAt.Equal(h.CreatedAt) {
			t.Fatalf("CreatedAt %v UpdatedAt %v: want now, UTC, equal", h.CreatedAt, h.UpdatedAt)
		}
		if !reflect.DeepEqual(h.Groups, []string{"eu", "web"}) {
			t.Errorf("groups not normalised: %v", h.Groups)
		}
		want := *h
		want.ProposedAt = time.Date(2026, 11, 25, 10, 4, 5, 123456000, time.UTC)
		want.LastAttestation = time.Date(2026, 11, 25, 11, 0, 0, 0, time.UTC)
		for _, tc := range []struct {
			name string
			get  func(Tx) (*Host, error)
		}{
			{"by EK", func(tx Tx) (*Host, error) { return tx.HostByEK(bg, h.EKHash) }},
			{"by name", func(tx Tx) (*Host, error) { return tx.HostByName(bg, h.Hostname) }},
			{"list", func(tx Tx) (*Host, error) {
				hs, err := tx.ListHosts(bg)
				if err != nil || len(hs) != 1 {
					return nil, fmt.Errorf("list: %d hosts, %v", len(hs), err)
				}
				return &hs[0], nil
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var got *Host
				view(t, s, func(tx Tx) (err error) { got, err = tc.get(tx); return err })
				if !reflect.DeepEqual(*got, want) {
					t.Errorf("got  %+v\nwant %+v", *got, want)
				}
			})
		}
		view(t, s, func(tx Tx) error {
			if _, err := tx.HostByEK(bg, ek("nope")); !errors.Is(err, ErrNotFound) {
				t.Errorf("absent EK: %v, want ErrNotFound", err)
			}
			if _, err := tx.HostByName(bg, "nope"); !errors.Is(err, ErrNotFound) {
				t.Errorf("absent hostname: %v, want ErrNotFound", err)
			}
			return nil
		})
	})
}

func TestCreateHostConflict(t *testing.T) {
	for _, tc := range []struct {
		name   string
		second *Host
		reason string
	}{
		{"duplicate EK", &Host{EKHash: ek("a.example"), Hostname: "b.example", State: HostEnrolled}, "already bound to"},
		{"duplicate hostname", &Host{EKHash: ek("b.example"), Hostname: "a.example", State: HostEnrolled}, "already bound to another EK"},
		{"same host twice", &Host{EKHash: ek("a.example"), Hostname: "a.example", State: HostEnrolled}, "already bound to"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, b backend, s Store) {
				update(t, s, func(tx Tx) error { return tx.CreateHost(bg, sampleHost("a.example")) })
				// The conflict leaves the transaction usable: the refusal is
				// recorded in the same transaction and commits.
				update(t, s, func(tx Tx) error {
					err := tx.CreateHost(bg, tc.second)
					if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), tc.reason) {
						t.Errorf("second CreateHost: %v, want ErrConflict %q", err, tc.reason)
					}
					return tx.AppendAttempt(bg, &Attempt{EKHash: tc.second.EKHash, Outcome: OutcomeRefused, Reasons: []string{"conflict"}})
				})
				view(t, s, func(tx Tx) error {
					hs, err := tx.ListHosts(bg)
					if err != nil || len(hs) != 1 || hs[0].Hostname != "a.example" || hs[0].EKHash != ek("a.example") {
						t.Errorf("hosts after conflict: %+v, %v", hs, err)
					}
					as, err := tx.Attempts(bg, AttemptFilter{})
					if err != nil || len(as) != 1 {
						t.Errorf("attempts after conflict: %+v, %v", as, err)
					}
					return nil
				})
			})
		})
	}
}

func TestUpdateHost(t *testing.T) {
	for _, tc := range []struct {
		name    string
		change  func(h *Host)
		wantErr error
	}{
		{"counters and sets", func(h *Host) {
			h.Counters = &Counters{ResetCount: 3, RestartCount: 4, Clock: 5}
			h.Groups = []string{"db", "eu"}
			h.Profiles = nil
			h.Retired = []string{"base"}
			h.State = HostRevoked
			h.Proposed, h.ProposedAt = []byte("{}"), time.Now()
		}, nil},
		{"clear counters and proposal", func(h *Host) { h.Counters, h.Proposed, h.ProposedAt = nil, nil, time.Time{} }, nil},
		{"rename to a free name", func(h *Host) { h.Hostname = "c.example" }, nil},
		{"rename into a conflict", func(h *Host) { h.Hostname = "b.example"; h.Groups = nil }, ErrConflict},
		{"absent EK", func(h *Host) { h.EKHash = ek("zzz") }, ErrNotFound},
		{"invalid state", func(h *Host) { h.State = "pending" }, ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, b backend, s Store) {
				a, other := sampleHost("a.example"), sampleHost("b.example")
				a.Counters = &Counters{ResetCount: 1, RestartCount: 2, Clock: 3, Safe: true}
				a.Proposed, a.ProposedAt = []byte("{}"), time.Now()
				update(t, s, func(tx Tx) error {
					if err := tx.CreateHost(bg, a); err != nil {
						return err
					}
					return tx.CreateHost(bg, other)
				})
				created := a.CreatedAt
				var orig, changed *Host
				err := s.Update(bg, func(tx Tx) error {
					h, err := tx.HostByEK(bg, a.EKHash)
					if err != nil {
						return err
					}
					c := *h
					orig = &c
					tc.change(h)
					changed = h
					return tx.UpdateHost(bg, h)
				})
				if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
					t.Fatalf("UpdateHost: %v, want %v", err, tc.wantErr)
				}
				want := changed
				if err != nil {
					want = orig // nothing changed
				} else if !changed.CreatedAt.Equal(created) || !changed.UpdatedAt.After(created) {
					t.Errorf("CreatedAt %v UpdatedAt %v: want %v and later", changed.CreatedAt, changed.UpdatedAt, created)
				}
				view(t, s, func(tx Tx) error {
					got, err := tx.HostByEK(bg, a.EKHash)
					if err != nil {
						return err
					}
					if !reflect.DeepEqual(got, want) {
						t.Errorf("stored %+v\nwant   %+v", got, want)
					}
					if want.Hostname != "a.example" {
						if _, err := tx.HostByName(bg, "a.example"); !errors.Is(err, ErrNotFound) {
							t.Errorf("old name after rename: %v, want ErrNotFound", err)
						}
					}
					o, err := tx.HostByName(bg, "b.example")
					if err != nil || o.EKHash != other.EKHash {
						t.Errorf("other host: %+v, %v", o, err)
					}
					return nil
				})
			})
		})
	}
}

// A host written twice in one transaction, and sets written without a
// prior read (nothing cached), end as the last write says.
func TestUpdateHostSetsWithoutRead(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend, s Store) {
		h := sampleHost("a.example")
		update(t, s, func(tx Tx) error { return tx.CreateHost(bg, h) })
		h2 := sampleHost("a.example")
		h2.Groups = []string{"x", "y", "y"}
		h2.Retired = []string{"r"}
		update(t, s, func(tx Tx) error {
			if err := tx.UpdateHost(bg, h2); err != nil {
				return err
			}
			h2.Groups = []string{"y", "z"}
			return tx.UpdateHost(bg, h2)
		})
		view(t, s, func(tx Tx) error {
			got, err := tx.HostByEK(bg, h.EKHash)
			if err != nil {
				return err
			}
			if !reflect.DeepEqual(got.Groups, []string{"y", "z"}) || !reflect.DeepEqual(got.Retired, []string{"r"}) ||
				!reflect.DeepEqual(got.Profiles, []string{"base"}) {
				t.Errorf("sets: groups %v retired %v profiles %v", got.Groups, got.Retired, got.Profiles)
			}
			return nil
		})
	})
}

var errTest = errors.New("test: fn failed")

func TestRollback(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(s Store, fn func(Tx) error) error
		last func(Tx) error // runs after the writes
	}{
		{"error", func(s Store, fn func(Tx) error) error { return s.Update(bg, fn) }, func(Tx) error { return errTest }},
		{"wrapped error", func(s Store, fn func(Tx) error) error { return s.Update(bg, fn) },
			func(Tx) error { return fmt.Errorf("wrapped: %w", errTest) }},
		{"panic", func(s Store, fn func(Tx) error) (err error) {
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("%v: %w", r, errTest)
				}
			}()
			return s.Update(bg, fn)
		}, func(Tx) error { panic("boom") }},
		{"oversize write after good ones", func(s Store, fn func(Tx) error) error { return s.Update(bg, fn) },
			func(tx Tx) error {
				_, err := tx.PutProfile(bg, Profile{Name: "big", Body: make([]byte, MaxProfileBody+1)})
				if !errors.Is(err, ErrInvalid) {
					return fmt.Errorf("oversize body: %v", err)
				}
				return fmt.Errorf("%w: %w", errTest, err)
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, b backend, s Store) {
				err := tc.run(s, func(tx Tx) error {
					if err := tx.CreateHost(bg, sampleHost("a.example")); err != nil {
						return err
					}
					if _, err := tx.PutProfile(bg, Profile{Name: "base", Body: []byte("{}")}); err != nil {
						return err
					}
					if err := tx.Assign(bg, Assignment{Profile: "base", Group: "web"}); err != nil {
						return err
					}
					if err := tx.AppendAttempt(bg, &Attempt{EKHash: ek("a.example"), Outcome: OutcomeAdmitted}); err != nil {
						return err
					}
					return tc.last(tx)
				})
				if !errors.Is(err, errTest) {
					t.Fatalf("Update: %v, want fn's error", err)
				}
				view(t, s, func(tx Tx) error {
					if _, err := tx.HostByEK(bg, ek("a.example")); !errors.Is(err, ErrNotFound) {
						t.Errorf("host after rollback: %v, want ErrNotFound", err)
					}
					ps, _ := tx.ListProfiles(bg)
					as, _ := tx.Assignments(bg)
					at, _ := tx.Attempts(bg, AttemptFilter{})
					if len(ps)+len(as)+len(at) != 0 {
						t.Errorf("after rollback: %d profiles, %d assignments, %d attempts", len(ps), len(as), len(at))
					}
					return nil
				})
			})
		})
	}
}

func TestInvalidInput(t *testing.T) {
	big := make([]byte, MaxProfileBody+1)
	for _, tc := range []struct {
		name string
		fn   func(Tx) error
	}{
		{"EK hash not hex", func(tx Tx) error {
			return tx.CreateHost(bg, &Host{EKHash: strings.Repeat("G", 64), Hostname: "x", State: HostEnrolled})
		}},
		{"EK hash short", func(tx Tx) error { _, err := tx.HostByEK(bg, "abc"); return err }},
		{"hostname uppercase", func(tx Tx) error {
			return tx.CreateHost(bg, &Host{EKHash: ek("x"), Hostname: "Web1", State: HostEnrolled})
		}},
		{"hostname empty", func(tx Tx) error { return tx.CreateHost(bg, &Host{EKHash: ek("x"), State: HostEnrolled}) }},
		{"hostname with space", func(tx Tx) error { _, err := tx.HostByName(bg, "a b"); return err }},
		{"state unknown", func(tx Tx) error { return tx.CreateHost(bg, &Host{EKHash: ek("x"), Hostname: "x", State: "bogus"}) }},
		{"proposed oversize", func(tx Tx) error {
			h := sampleHost("x")
			h.Proposed = big
			return tx.CreateHost(bg, h)
		}},
		{"empty group", func(tx Tx) error {
			h := sampleHost("x")
			h.Groups = []string{""}
			return tx.CreateHost(bg, h)
		}},
		{"profile body oversize", func(tx Tx) error { _, err := tx.PutProfile(bg, Profile{Name: "p", Body: big}); return err }},
		{"profile body empty", func(tx Tx) error { _, err := tx.PutProfile(bg, Profile{Name: "p"}); return err }},
		{"profile name empty", func(tx Tx) error { _, err := tx.PutProfile(bg, Profile{Body: []byte("{}")}); return err }},
		{"assignment to both", func(tx Tx) error { return tx.Assign(bg, Assignment{Profile: "p", Host: "h", Group: "g"}) }},
		{"assignment to neither", func(tx Tx) error { return tx.Assign(bg, Assignment{Profile: "p"}) }},
		{"attempt without outcome", func(tx Tx) error { return tx.AppendAttempt(bg, &Attempt{EKHash: ek("x")}) }},
		{"attempts negative limit", func(tx Tx) error { _, err := tx.Attempts(bg, AttemptFilter{Limit: -1}); return err }},
		{"profiles for nil host", func(tx Tx) error { _, err := tx.ProfilesFor(bg, nil); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, b backend, s Store) {
				err := s.Update(bg, tc.fn)
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("got %v, want ErrInvalid", err)
				}
				view(t, s, func(tx Tx) error {
					hs, _ := tx.ListHosts(bg)
					ps, _ := tx.ListProfiles(bg)
					if len(hs)+len(ps) != 0 {
						t.Errorf("refused input changed the store: %d hosts, %d profiles", len(hs), len(ps))
					}
					return nil
				})
			})
		})
	}
}

// The bound is inclusive: a body of exactly MaxProfileBody is stored whole.
func TestProfileBodyAtBound(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend, s Store) {
		body := bytes.Repeat([]byte("x"), MaxProfileBody)
		update(t, s, func(tx Tx) error { _, err := tx.PutProfile(bg, Profile{Name: "max", Body: body}); return err })
		view(t, s, func(tx Tx) error {
			p, err := tx.Profile(bg, "max")
			if err != nil {
				return err
			}
			if !bytes.Equal(p.Body, body) {
				t.Errorf("body of %d bytes came back as %d bytes", len(body), len(p.Body))
			}
			return nil
		})
	})
}

func TestProfileVersions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend, s Store) {
		for i, body := range []string{`{"v":1}`, `{"v":2}`, `{"v":3}`} {
			var p *Profile
			update(t, s, func(tx Tx) (err error) {
				p, err = tx.PutProfile(bg, Profile{Name: "base", Version: 99, Body: []byte(body)})
				return err
			})
			if p.Version != i+1 || string(p.Body) != body || p.CreatedAt.IsZero() || p.CreatedAt.Location() != time.UTC {
				t.Fatalf("put %d: %+v", i, p)
			}
		}
		update(t, s, func(tx Tx) error { _, err := tx.PutProfile(bg, Profile{Name: "other", Body: []byte("{}")}); return err })
		view(t, s, func(tx Tx) error {
			p, err := tx.Profile(bg, "base")
			if err != nil || p.Version != 3 || string(p.Body) != `{"v":3}` {
				t.Errorf("Profile(base): %+v, %v; want version 3", p, err)
			}
			if _, err := tx.Profile(bg, "absent"); !errors.Is(err, ErrNotFound) {
				t.Errorf("Profile(absent): %v, want ErrNotFound", err)
			}
			ps, err := tx.ListProfiles(bg)
			if err != nil {
				return err
			}
			var got []string
			for _, p := range ps {
				got = append(got, fmt.Sprintf("%s@%d", p.Name, p.Version))
			}
			if want := []string{"base@3", "other@1"}; !reflect.DeepEqual(got, want) {
				t.Errorf("ListProfiles: %v, want %v", got, want)
			}
			return nil
		})
	})
}

func TestAssignments(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend, s Store) {
		update(t, s, func(tx Tx) error { _, err := tx.PutProfile(bg, Profile{Name: "base", Body: []byte("{}")}); return err })
		update(t, s, func(tx Tx) error {
			for _, a := range []Assignment{
				{Profile: "base", Group: "web"},
				{Profile: "base", Host: "not-yet-enrolled.example"},
				{Profile: "base", Group: "web"}, // again: no-op
			} {
				if err := tx.Assign(bg, a); err != nil {
					return err
				}
			}
			return nil
		})
		err := s.Update(bg, func(tx Tx) error { return tx.Assign(bg, Assignment{Profile: "absent", Group: "web"}) })
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("assign absent profile: %v, want ErrNotFound", err)
		}
		err = s.Update(bg, func(tx Tx) error { return tx.Unassign(bg, Assignment{Profile: "base", Group: "db"}) })
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("unassign absent assignment: %v, want ErrNotFound", err)
		}
		update(t, s, func(tx Tx) error { return tx.Unassign(bg, Assignment{Profile: "base", Group: "web"}) })
		view(t, s, func(tx Tx) error {
			as, err := tx.Assignments(bg)
			if want := []Assignment{{Profile: "base", Host: "not-yet-enrolled.example"}}; err != nil || !reflect.DeepEqual(as, want) {
				t.Errorf("Assignments: %+v, %v; want %+v", as, err, want)
			}
			return nil
		})
	})
}

func TestProfilesFor(t *testing.T) {
	// Profiles: a (2 versions), b, c, d, e, f. Host web1 in groups web and
	// eu, with d assigned on the host record and c retired.
	setup := func(t *testing.T, s Store) *Host {
		h := &Host{EKHash: ek("web1"), Hostname: "web1", State: HostEnrolled,
			Groups: []string{"web", "eu"}, Profiles: []string{"d"}, Retired: []string{"c"}}
		update(t, s, func(tx Tx) error {
			for _, name := range []string{"a", "a", "b", "c", "d", "e", "f", "g"} {
				if _, err := tx.PutProfile(bg, Profile{Name: name, Body: []byte(`{"name":"` + name + `"}`)}); err != nil {
					return err
				}
			}
			for _, a := range []Assignment{
				{Profile: "a", Host: "web1"},
				{Profile: "b", Group: "web"},
				{Profile: "a", Group: "eu"},  // a again, by group
				{Profile: "c", Group: "web"}, // retired
				{Profile: "e", Group: "db"},  // a group web1 is not in
				{Profile: "f", Host: "web2"}, // another host
				{Profile: "g", Group: "eu"},
			} {
				if err := tx.Assign(bg, a); err != nil {
					return err
				}
			}
			return tx.CreateHost(bg, h)
		})
		return h
	}
	for _, tc := range []struct {
		name   string
		change func(h *Host)
		want   []string
	}{
		{"stored host", func(*Host) {}, []string{"a@2", "b@1", "d@1", "g@1"}},
		{"joins a group (not yet written)", func(h *Host) { h.Groups = append(h.Groups, "db") }, []string{"a@2", "b@1", "d@1", "e@1", "g@1"}},
		{"retires a", func(h *Host) { h.Retired = append(h.Retired, "a") }, []string{"b@1", "d@1", "g@1"}},
		{"no groups", func(h *Host) { h.Groups = nil }, []string{"a@2", "d@1"}},
		{"nothing but its name", func(h *Host) { h.Groups, h.Profiles, h.Retired = nil, nil, nil }, []string{"a@2"}},
		{"profile never stored", func(h *Host) { h.Profiles = []string{"zzz"} }, []string{"a@2", "b@1", "g@1"}},
		{"other name", func(h *Host) { h.Hostname = "web2"; h.Groups = nil; h.Profiles = nil }, []string{"f@1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, b backend, s Store) {
				setup(t, s)
				view(t, s, func(tx Tx) error {
					h, err := tx.HostByEK(bg, ek("web1"))
					if err != nil {
						return err
					}
					tc.change(h)
					ps, err := tx.ProfilesFor(bg, h)
					if err != nil {
						return err
					}
					var got []string
					for _, p := range ps {
						got = append(got, fmt.Sprintf("%s@%d", p.Name, p.Version))
						if string(p.Body) != `{"name":"`+p.Name+`"}` {
							t.Errorf("body of %s: %q", p.Name, p.Body)
						}
					}
					if !reflect.DeepEqual(got, tc.want) {
						t.Errorf("ProfilesFor: %v, want %v", got, tc.want)
					}
					return nil
				})
			})
		})
	}
}

func TestAttempts(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	seed := []Attempt{
		{Time: t0, EKHash: ek("a"), Hostname: "a", Server: "s1", Outcome: OutcomeAdmitted, Profile: "base@1"},
		{Time: t0.Add(time.Minute), EKHash: ek("b"), Hostname: "b", Outcome: OutcomeRefused, Reasons: []string{"pcr7", "ek_cert_profile"}},
		{Time: t0.Add(2 * time.Minute), EKHash: ek("a"), Hostname: "a", Server: "s2", Outcome: OutcomeRefused, Reasons: []string{"replay"}},
		{Time: t0.Add(2 * time.Minute), EKHash: ek("a"), Hostname: "a", Outcome: OutcomeAdmitted}, // same time: ID orders
		{Time: t0.Add(3 * time.Minute).In(time.FixedZone("Y", -3600)), EKHash: "", Hostname: "Claimed.Example", Outcome: OutcomeRefused},
	}
	for _, tc := range []struct {
		name string
		f    AttemptFilter
		want []int // indexes into seed, in the expected order
	}{
		{"all newest first", AttemptFilter{}, []int{4, 3, 2, 1, 0}},
		{"by EK", AttemptFilter{EKHash: ek("a")}, []int{3, 2, 0}},
		{"by hostname", AttemptFilter{Hostname: "b"}, []int{1}},
		{"claimed hostname kept as given", AttemptFilter{Hostname: "Claimed.Example"}, []int{4}},
		{"since (inclusive)", AttemptFilter{Since: t0.Add(2 * time.Minute)}, []int{4, 3, 2}},
		{"since in another zone", AttemptFilter{Since: t0.Add(2*time.Minute + time.Second).In(time.FixedZone("Z", 7200))}, []int{4}},
		{"limit keeps the newest", AttemptFilter{Limit: 2}, []int{4, 3}},
		{"EK and limit", AttemptFilter{EKHash: ek("a"), Limit: 2}, []int{3, 2}},
		{"EK, since and limit", AttemptFilter{EKHash: ek("a"), Since: t0.Add(time.Second), Limit: 5}, []int{3, 2}},
		{"no match", AttemptFilter{EKHash: ek("zzz")}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, b backend, s Store) {
				stored := make([]Attempt, len(seed))
				var lastID int64
				for i := range seed {
					a := seed[i]
					a.Reasons = append([]string(nil), seed[i].Reasons...)
					if len(a.Reasons) == 0 {
						a.Reasons = nil
					}
					update(t, s, func(tx Tx) error { return tx.AppendAttempt(bg, &a) })
					if a.ID <= lastID {
						t.Fatalf("attempt %d: ID %d not after %d", i, a.ID, lastID)
					}
					lastID = a.ID
					if a.Time.Location() != time.UTC || !a.Time.Equal(seed[i].Time) {
						t.Fatalf("attempt %d: time %v, want %v in UTC", i, a.Time, seed[i].Time)
					}
					stored[i] = a
				}
				var got []Attempt
				view(t, s, func(tx Tx) (err error) { got, err = tx.Attempts(bg, tc.f); return err })
				var want []Attempt
				for _, i := range tc.want {
					want = append(want, stored[i])
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("got  %+v\nwant %+v", got, want)
				}
			})
		})
	}
	t.Run("zero time is now", func(t *testing.T) {
		forEachBackend(t, func(t *testing.T, b backend, s Store) {
			before := time.Now().Add(-time.Second)
			a := &Attempt{EKHash: ek("a"), Outcome: OutcomeAdmitted}
			update(t, s, func(tx Tx) error { return tx.AppendAttempt(bg, a) })
			if a.Time.Before(before) || a.Time.Location() != time.UTC || a.ID == 0 {
				t.Errorf("attempt %+v: want ID and time now in UTC", a)
			}
		})
	})
}

// An attempt records hostile input: it is stored, made storable, never
// refused for what the agent claimed.
func TestAttemptSanitised(t *testing.T) {
	long := strings.Repeat("é", 300) // 600 bytes
	for _, tc := range []struct {
		name     string
		in, want Attempt
	}{
		{"NUL", Attempt{Hostname: "a\x00b"}, Attempt{Hostname: "a\uFFFDb"}},
		{"invalid UTF-8", Attempt{Hostname: "a\xff\xfeb", Reasons: []string{"\xc3"}}, Attempt{Hostname: "a\uFFFDb", Reasons: []string{"\uFFFD"}}},
		{"lowercased invalid UTF-8 (759 bytes)", Attempt{Hostname: strings.Repeat("\uFFFD", 253)},
			Attempt{Hostname: strings.Repeat("\uFFFD", 83) + "…"}},
		{"long hostname cut at a rune", Attempt{Hostname: long}, Attempt{Hostname: long[:250] + "…"}},
		{"too many reasons", Attempt{Reasons: make([]string, MaxList+5)}, Attempt{Reasons: make([]string, MaxList)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, b backend, s Store) {
				in := tc.in
				in.Reasons = slicesClone(tc.in.Reasons)
				in.Outcome, in.Time = OutcomeRefused, time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
				update(t, s, func(tx Tx) error { return tx.AppendAttempt(bg, &in) })
				want := tc.want
				want.ID, want.Outcome, want.Time = in.ID, in.Outcome, in.Time
				if !reflect.DeepEqual(in, want) {
					t.Errorf("attempt after append: %#v\nwant %#v", in, want)
				}
				if len(in.Hostname) > MaxHostname {
					t.Errorf("hostname %d bytes", len(in.Hostname))
				}
				var got []Attempt
				view(t, s, func(tx Tx) (err error) { got, err = tx.Attempts(bg, AttemptFilter{}); return err })
				if len(got) != 1 || !reflect.DeepEqual(got[0], want) {
					t.Errorf("stored %#v\nwant   %#v", got, want)
				}
			})
		})
	}
}

func slicesClone(s []string) []string {
	if s == nil {
		return nil
	}
	return append([]string{}, s...)
}

// Open migrates; opening again (also several at once) finds the schema
// current and the data intact.
func TestMigrationsIdempotent(t *testing.T) {
	for _, name := range backendNames {
		t.Run(name, func(t *testing.T) {
			b := newBackend(t, name)
			var wg sync.WaitGroup
			errs := make(chan error, 3)
			for range 3 {
				wg.Go(func() {
					s, err := Open(bg, b.dsn)
					if err == nil {
						err = s.Close()
					}
					errs <- err
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatalf("concurrent first open: %v", err)
				}
			}
			s := b.open(t)
			update(t, s, func(tx Tx) error { return tx.CreateHost(bg, sampleHost("a.example")) })
			s.Close()
			s = b.open(t)
			view(t, s, func(tx Tx) error { _, err := tx.HostByName(bg, "a.example"); return err })
			ss := s.(*sqlStore)
			var n, v int
			if err := ss.w.QueryRowContext(bg, `SELECT count(*), max(version) FROM schema_version`).Scan(&n, &v); err != nil {
				t.Fatal(err)
			}
			if n != SchemaVersion() || v != SchemaVersion() {
				t.Errorf("schema_version: %d rows, max %d; want %d", n, v, SchemaVersion())
			}
			// A database from a newer binary is refused.
			if _, err := ss.w.ExecContext(bg, ss.d.rebind(`INSERT INTO schema_version (version, name, applied_at) VALUES (?, 'future', 'x')`), v+1); err != nil {
				t.Fatal(err)
			}
			if s2, err := Open(bg, b.dsn); err == nil || !strings.Contains(err.Error(), "newer") {
				if s2 != nil {
					s2.Close()
				}
				t.Errorf("open of a newer schema: %v, want refusal", err)
			}
		})
	}
}

// Two servers (goroutines) race to bind one EK to two hostnames, or two
// EKs to one hostname: exactly one wins, the other gets ErrConflict.
func TestConcurrentBind(t *testing.T) {
	// bind is what an enrolment does: look the EK up, create it if absent,
	// refuse it if bound to another name.
	bind := func(ekHash, hostname string) func(Tx) error {
		return func(tx Tx) error {
			h, err := tx.HostByEK(bg, ekHash)
			switch {
			case err == nil && h.Hostname == hostname:
				return nil
			case err == nil:
				return fmt.Errorf("%w: EK bound to %s", ErrConflict, h.Hostname)
			case !errors.Is(err, ErrNotFound):
				return err
			}
			if _, err := tx.HostByName(bg, hostname); err == nil {
				return fmt.Errorf("%w: hostname %s taken", ErrConflict, hostname)
			} else if !errors.Is(err, ErrNotFound) {
				return err
			}
			return tx.CreateHost(bg, &Host{EKHash: ekHash, Hostname: hostname, State: HostEnrolled})
		}
	}
	blind := func(ekHash, hostname string) func(Tx) error {
		return func(tx Tx) error {
			return tx.CreateHost(bg, &Host{EKHash: ekHash, Hostname: hostname, State: HostEnrolled})
		}
	}
	rename := func(ekHash, hostname string) func(Tx) error {
		return func(tx Tx) error {
			h, err := tx.HostByEK(bg, ekHash)
			if err != nil {
				return err
			}
			h.Hostname = hostname
			return tx.UpdateHost(bg, h)
		}
	}
	const rounds = 15
	for _, tc := range []struct {
		name  string
		setup func(i int) []*Host
		fns   func(i int) [2]func(Tx) error
	}{
		{"one EK two hostnames", nil, func(i int) [2]func(Tx) error {
			e := ek(fmt.Sprint(i))
			return [2]func(Tx) error{bind(e, fmt.Sprintf("a%d", i)), bind(e, fmt.Sprintf("b%d", i))}
		}},
		{"two EKs one hostname", nil, func(i int) [2]func(Tx) error {
			n := fmt.Sprintf("h%d", i)
			return [2]func(Tx) error{bind(ek("a"+n), n), bind(ek("b"+n), n)}
		}},
		{"blind create, one EK", nil, func(i int) [2]func(Tx) error {
			e := ek(fmt.Sprint(i))
			return [2]func(Tx) error{blind(e, fmt.Sprintf("a%d", i)), blind(e, fmt.Sprintf("b%d", i))}
		}},
		{"rename two hosts to one hostname", func(i int) []*Host {
			return []*Host{sampleHost(fmt.Sprintf("a%d", i)), sampleHost(fmt.Sprintf("b%d", i))}
		}, func(i int) [2]func(Tx) error {
			n := fmt.Sprintf("h%d", i)
			return [2]func(Tx) error{rename(ek(fmt.Sprintf("a%d", i)), n), rename(ek(fmt.Sprintf("b%d", i)), n)}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, b backend, s Store) {
				hosts := 0
				for i := range rounds {
					if tc.setup != nil {
						for _, h := range tc.setup(i) {
							update(t, s, func(tx Tx) error { return tx.CreateHost(bg, h) })
							hosts++
						}
					} else {
						hosts++
					}
					fns := tc.fns(i)
					var errs [2]error
					var wg sync.WaitGroup
					start := make(chan struct{})
					for j := range 2 {
						wg.Go(func() {
							<-start
							errs[j] = s.Update(bg, fns[j])
						})
					}
					close(start)
					wg.Wait()
					won := 0
					for _, err := range errs {
						switch {
						case err == nil:
							won++
						case !errors.Is(err, ErrConflict):
							t.Fatalf("round %d: loser got %v, want ErrConflict", i, err)
						}
					}
					if won != 1 {
						t.Fatalf("round %d: %d winners (%v)", i, won, errs)
					}
				}
				t.Logf("%s: %d serialisation failures retried", b.name, s.(*sqlStore).retries.Load())
				view(t, s, func(tx Tx) error {
					hs, err := tx.ListHosts(bg)
					if err != nil || len(hs) != hosts {
						t.Errorf("%d hosts after %d races, want %d, %v", len(hs), rounds, hosts, err)
					}
					names := map[string]bool{}
					for _, h := range hs {
						if names[h.Hostname] {
							t.Errorf("hostname %s bound twice", h.Hostname)
						}
						names[h.Hostname] = true
					}
					return nil
				})
			})
		})
	}
}

func TestContextCancelled(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(s Store) error
		want error
	}{
		{"update with cancelled ctx", func(s Store) error {
			ctx, cancel := context.WithCancel(bg)
			cancel()
			return s.Update(ctx, func(tx Tx) error { return tx.CreateHost(ctx, sampleHost("a.example")) })
		}, context.Canceled},
		{"view with expired deadline", func(s Store) error {
			ctx, cancel := context.WithDeadline(bg, time.Now().Add(-time.Second))
			defer cancel()
			return s.View(ctx, func(tx Tx) error { _, err := tx.ListHosts(ctx); return err })
		}, context.DeadlineExceeded},
		{"cancelled inside fn", func(s Store) error {
			ctx, cancel := context.WithCancel(bg)
			defer cancel()
			return s.Update(ctx, func(tx Tx) error {
				if err := tx.CreateHost(ctx, sampleHost("a.example")); err != nil {
					return err
				}
				cancel()
				return tx.AppendAttempt(ctx, &Attempt{Outcome: OutcomeAdmitted})
			})
		}, context.Canceled},
		{"cancelled inside fn that ignores errors", func(s Store) error {
			ctx, cancel := context.WithCancel(bg)
			defer cancel()
			return s.Update(ctx, func(tx Tx) error {
				if err := tx.CreateHost(ctx, sampleHost("a.example")); err != nil {
					return err
				}
				cancel()
				return nil
			})
		}, nil}, // some error; which one is the driver's
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, b backend, s Store) {
				err := tc.run(s)
				if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
					t.Fatalf("got %v, want %v", err, tc.want)
				}
				if errors.Is(err, ErrUnavailable) {
					t.Errorf("cancellation reported as ErrUnavailable: %v", err)
				}
				view(t, s, func(tx Tx) error {
					if _, err := tx.HostByName(bg, "a.example"); !errors.Is(err, ErrNotFound) {
						t.Errorf("host after cancelled update: %v, want ErrNotFound", err)
					}
					return nil
				})
			})
		})
	}
}

func TestViewIsReadOnly(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend, s Store) {
		var kept Tx
		err := s.View(bg, func(tx Tx) error {
			kept = tx
			return tx.CreateHost(bg, sampleHost("a.example"))
		})
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("write in View: %v, want ErrInvalid", err)
		}
		if _, err := kept.ListHosts(bg); err == nil {
			t.Errorf("Tx used after its function returned: no error")
		}
		if err := s.Update(bg, nil); !errors.Is(err, ErrInvalid) {
			t.Errorf("Update(nil): %v", err)
		}
	})
}
