package nodes

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/tpmid/tpmid/pkg/common/eventlog"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/server/profile"
	"github.com/tpmid/tpmid/pkg/server/session"
	"github.com/tpmid/tpmid/pkg/server/store"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

func newNodes(t *testing.T, mode Enrollment) (*Nodes, *[]string) {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "tpmid.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var events []string
	return &Nodes{Store: st, Enrollment: mode, Server: "test-server",
		Security: func(msg string, kv ...any) { events = append(events, fmt.Sprint(msg, kv)) }}, &events
}

// boot is a synthetic measured boot: its log and the quoted values that
// replay it, as session.Facts carry them after verification.
func boot(t *testing.T, kernel string) (*eventlog.Log, *eventlog.Replayed, pcrs.Values) {
	t.Helper()
	b, _ := eventlog.NewBuilder(pcrs.SHA256)
	b.Extend(7, eventlog.EvEFIVariableDriverConf, eventlog.EFIVariableData(eventlog.EFIGlobalVariable, "SecureBoot", []byte{1}))
	for pcr := uint32(0); pcr < 8; pcr++ {
		b.Extend(pcr, eventlog.EvSeparator, []byte{0, 0, 0, 0})
	}
	b.Extend(4, eventlog.EvEFIAction, []byte("kernel "+kernel))
	l, err := eventlog.Parse(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	vals, err := l.Replay()
	if err != nil {
		t.Fatal(err)
	}
	r, err := eventlog.VerifyAgainst(l, vals)
	if err != nil {
		t.Fatal(err)
	}
	return l, r, vals
}

type facts struct {
	ek, host       string
	reset, restart uint32
	clock          uint64
	safe           bool
	kernel         string
}

func (f facts) session(t *testing.T) *session.Facts {
	sum := sha256.Sum256([]byte(f.ek))
	sf := &session.Facts{EKHash: hex.EncodeToString(sum[:]), Hostname: f.host,
		Quotes: []verify.QuoteFacts{{ResetCount: f.reset, RestartCount: f.restart, Clock: f.clock, Safe: f.safe}}}
	k := f.kernel
	if k == "" {
		k = "6.8"
	}
	sf.Log, sf.Replayed, sf.PCRs = boot(t, k)
	st, err := eventlog.VerifiedSecureBoot(sf.Log, sf.Replayed)
	if err != nil {
		t.Fatal(err)
	}
	sf.SecureBoot = st
	return sf
}

// attest runs Admit, and Refused on a refusal, as the session does.
func attest(t *testing.T, n *Nodes, sf *session.Facts) (*session.Admission, error) {
	t.Helper()
	adm, err := n.Admit(context.Background(), sf)
	if err != nil {
		n.Refused(context.Background(), sf, err)
	}
	return adm, err
}

func host(t *testing.T, n *Nodes, ekHash string) *store.Host {
	t.Helper()
	var h *store.Host
	err := n.Store.View(context.Background(), func(tx store.Tx) (err error) {
		h, err = tx.HostByEK(context.Background(), ekHash)
		return err
	})
	if err != nil {
		t.Fatalf("host %s: %v", ekHash, err)
	}
	return h
}

func attempts(t *testing.T, n *Nodes) []store.Attempt {
	t.Helper()
	var a []store.Attempt
	if err := n.Store.View(context.Background(), func(tx store.Tx) (err error) {
		a, err = tx.Attempts(context.Background(), store.AttemptFilter{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return a
}

func enroll(t *testing.T, n *Nodes, sf *session.Facts, hostname string, groups ...string) {
	t.Helper()
	if err := n.Store.Update(context.Background(), func(tx store.Tx) error {
		return tx.CreateHost(context.Background(), &store.Host{EKHash: sf.EKHash, Hostname: hostname, Groups: groups, State: store.HostEnrolled})
	}); err != nil {
		t.Fatal(err)
	}
}

func TestEnrollment(t *testing.T) {
	t.Run("open admits an unknown EK and records the attempt", func(t *testing.T) {
		n, _ := newNodes(t, Open)
		adm, err := attest(t, n, facts{ek: "a", host: "claimed"}.session(t))
		if err != nil || adm.Hostname != "" {
			t.Fatalf("%+v %v", adm, err)
		}
		if a := attempts(t, n); len(a) != 1 || a[0].Outcome != store.OutcomeAdmitted || a[0].Server != "test-server" {
			t.Errorf("attempts %+v", a)
		}
	})
	t.Run("required refuses an unknown EK, takes the enrolled name", func(t *testing.T) {
		n, _ := newNodes(t, Required)
		sf := facts{ek: "a", host: "claimed"}.session(t)
		if _, err := attest(t, n, sf); verify.ReasonOf(err) != ReasonNotEnrolled {
			t.Fatalf("unknown EK: %v", err)
		}
		enroll(t, n, sf, "web-1", "web", "eu")
		adm, err := attest(t, n, sf)
		if err != nil || adm.Hostname != "web-1" || !slices.Equal(adm.Groups, []string{"eu", "web"}) {
			t.Fatalf("%+v %v", adm, err)
		}
		a := attempts(t, n)
		if len(a) != 2 || a[1].Outcome != store.OutcomeRefused || a[1].Reasons[0][:15] != "ek_not_enrolled" {
			t.Errorf("attempts %+v", a)
		}
	})
	t.Run("tofu binds once; a second TPM cannot take the name", func(t *testing.T) {
		n, _ := newNodes(t, TOFU)
		first := facts{ek: "a", host: "Node-1"}.session(t)
		first.Hostname = "node-1" // the session lowercases
		if adm, err := attest(t, n, first); err != nil || adm.Hostname != "node-1" {
			t.Fatalf("bind: %+v %v", adm, err)
		}
		second := facts{ek: "b", host: "node-1"}.session(t)
		if _, err := attest(t, n, second); verify.ReasonOf(err) != ReasonHostnameTaken {
			t.Fatalf("second TPM: %v", err)
		}
		again := facts{ek: "a", host: "other-name", reset: 1}.session(t)
		if adm, err := attest(t, n, again); err != nil || adm.Hostname != "node-1" {
			t.Fatalf("rebind by claim: %+v %v", adm, err)
		}
		bad := facts{ek: "c", host: "bad name;"}.session(t)
		if _, err := attest(t, n, bad); verify.ReasonOf(err) != ReasonHostnameInvalid {
			t.Errorf("invalid hostname: %v", err)
		}
	})
	t.Run("revoked", func(t *testing.T) {
		n, _ := newNodes(t, Open)
		sf := facts{ek: "a"}.session(t)
		enroll(t, n, sf, "web-1")
		h := host(t, n, sf.EKHash)
		h.State = store.HostRevoked
		if err := n.Store.Update(context.Background(), func(tx store.Tx) error { return tx.UpdateHost(context.Background(), h) }); err != nil {
			t.Fatal(err)
		}
		if _, err := attest(t, n, sf); verify.ReasonOf(err) != ReasonRevoked {
			t.Fatalf("revoked: %v", err)
		}
	})
}

// TestRebootTracking: the TPM's counters as TPM 2.0 Part 1 section 36
// defines them; each rollback is a security event and changes nothing.
func TestRebootTracking(t *testing.T) {
	first := facts{ek: "a", reset: 5, restart: 2, clock: 1000, safe: true}
	tests := []struct {
		name   string
		next   facts
		reason verify.Reason
	}{
		{"later clock", facts{ek: "a", reset: 5, restart: 2, clock: 2000, safe: true}, ""},
		{"reboot", facts{ek: "a", reset: 6, restart: 0, clock: 3000, safe: true}, ""},
		{"same quote counters", facts{ek: "a", reset: 5, restart: 2, clock: 1000, safe: true}, ""},
		{"reset count back (restored snapshot)", facts{ek: "a", reset: 4, restart: 9, clock: 9000, safe: true}, ReasonResetRollback},
		{"restart count back", facts{ek: "a", reset: 5, restart: 1, clock: 9000, safe: true}, ReasonRestartRollback},
		{"clock back within one boot", facts{ek: "a", reset: 5, restart: 2, clock: 999, safe: false}, ReasonClockRollback},
		{"clock back across a restart, not safe", facts{ek: "a", reset: 5, restart: 3, clock: 900, safe: false}, ""},
		{"clock back across a restart, safe", facts{ek: "a", reset: 5, restart: 3, clock: 900, safe: true}, ReasonClockRollback},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, events := newNodes(t, TOFU)
			f1 := first
			f1.host = "node-1"
			if _, err := attest(t, n, f1.session(t)); err != nil {
				t.Fatal(err)
			}
			sf := tc.next.session(t)
			_, err := attest(t, n, sf)
			if got := verify.ReasonOf(err); got != tc.reason {
				t.Fatalf("reason %q, want %q (%v)", got, tc.reason, err)
			}
			h := host(t, n, sf.EKHash)
			want := store.Counters{ResetCount: tc.next.reset, RestartCount: tc.next.restart, Clock: tc.next.clock, Safe: tc.next.safe}
			if tc.reason != "" {
				want = store.Counters{ResetCount: first.reset, RestartCount: first.restart, Clock: first.clock, Safe: first.safe}
				if len(*events) != 1 {
					t.Errorf("security events %v", *events)
				}
			}
			if *h.Counters != want {
				t.Errorf("counters %+v, want %+v", *h.Counters, want)
			}
		})
	}
}

// TestProfiles: a host with profiles is admitted only in a boot state one
// allows; a refused state is proposed, and the refusal changes nothing else.
func TestProfiles(t *testing.T) {
	n, _ := newNodes(t, Open)
	good := facts{ek: "a", kernel: "6.8", clock: 10}.session(t)
	enroll(t, n, good, "web-1", "web")
	p, err := profile.Capture(good.Log, "web-fleet", pcrs.SHA256, []int{0, 1, 2, 3, 4, 5, 6, 7})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(p)
	if err := n.Store.Update(context.Background(), func(tx store.Tx) error {
		if _, err := tx.PutProfile(context.Background(), store.Profile{Name: "web-fleet", Body: body}); err != nil {
			return err
		}
		return tx.Assign(context.Background(), store.Assignment{Profile: "web-fleet", Group: "web"})
	}); err != nil {
		t.Fatal(err)
	}
	adm, err := attest(t, n, good)
	if err != nil || adm.Profile != "web-fleet@1" {
		t.Fatalf("known boot: %+v %v", adm, err)
	}
	changed := facts{ek: "a", kernel: "6.9-unknown", clock: 20}.session(t)
	_, err = attest(t, n, changed)
	if verify.ReasonOf(err) != ReasonProfileMismatch {
		t.Fatalf("changed boot: %v", err)
	}
	h := host(t, n, changed.EKHash)
	if len(h.Proposed) == 0 || h.LastOutcome != store.OutcomeRefused {
		t.Errorf("proposed %d bytes, last outcome %q", len(h.Proposed), h.LastOutcome)
	}
	if h.Counters.Clock != 10 {
		t.Errorf("a refused attestation moved the counters to clock %d", h.Counters.Clock)
	}
	if _, err := profile.ParseProfile(h.Proposed); err != nil {
		t.Errorf("proposed state is not a profile: %v", err)
	}
}

// TestParsedProfilesFollowTheStore: profiles are parsed once per body and
// reused, but what an attestation is judged by is always what the store
// holds now: a new version with another body takes effect at once, and a
// new version with a body parsed before is reported under its own version.
func TestParsedProfilesFollowTheStore(t *testing.T) {
	n, _ := newNodes(t, Open)
	good := facts{ek: "a", kernel: "6.8", clock: 10}.session(t)
	other := facts{ek: "a", kernel: "6.9-other", clock: 20}.session(t)
	enroll(t, n, good, "web-1", "web")
	bodyOf := func(s *session.Facts) []byte {
		p, err := profile.Capture(s.Log, "web-fleet", pcrs.SHA256, []int{0, 1, 2, 3, 4, 5, 6, 7})
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	put := func(body []byte, assign bool) {
		t.Helper()
		if err := n.Store.Update(context.Background(), func(tx store.Tx) error {
			if _, err := tx.PutProfile(context.Background(), store.Profile{Name: "web-fleet", Body: body}); err != nil {
				return err
			}
			if assign {
				return tx.Assign(context.Background(), store.Assignment{Profile: "web-fleet", Group: "web"})
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	goodBody, otherBody := bodyOf(good), bodyOf(other)
	put(goodBody, true)
	clock := uint64(100)
	attestGood := func() (*session.Admission, error) {
		clock++
		s := facts{ek: "a", kernel: "6.8", clock: clock}.session(t)
		return attest(t, n, s)
	}
	for i := range 2 { // the second from the cache
		if adm, err := attestGood(); err != nil || adm.Profile != "web-fleet@1" {
			t.Fatalf("attestation %d with version 1: %+v %v", i, adm, err)
		}
	}
	put(otherBody, false) // version 2 allows only the other boot
	if _, err := attestGood(); verify.ReasonOf(err) != ReasonProfileMismatch {
		t.Fatalf("after version 2 (another boot): %v, want %s", err, ReasonProfileMismatch)
	}
	put(goodBody, false) // version 3: version 1's body again, parsed before
	if adm, err := attestGood(); err != nil || adm.Profile != "web-fleet@3" {
		t.Fatalf("after version 3 (version 1's body): %+v %v, want web-fleet@3", adm, err)
	}
}
