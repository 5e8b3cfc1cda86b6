package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tpmid/tpmid/internal/demo"
	"github.com/tpmid/tpmid/internal/swtpm"
	"github.com/tpmid/tpmid/pkg/common/eventlog"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/server/profile"
	"github.com/tpmid/tpmid/pkg/server/store"
)

// The node store end to end: spire-server's tpmid plugin keeps hosts,
// profiles and attempts in a store (here a SQLite file of the test's
// temporary directory, or PostgreSQL in postgres_test.go), and each test
// changes it as an operator would, with the store API or the tpmid CLI.

// storeDSN is the SQLite store testEnv.StartServer gives the server name.
func (e *testEnv) storeDSN(name string) string { return filepath.Join(e.tmp, name+"-tpmid.db") }

// startTOFUServer starts a spire-server with enrollment = "tofu" that
// trusts m's EK CA (every machine of a test shares it).
func (e *testEnv) startTOFUServer(ctx context.Context, m *machine, o demo.ServerOptions) *demo.Server {
	e.t.Helper()
	o.EKCABundle, o.Enrollment = m.caBundle, "tofu"
	srv, err := e.StartServer(ctx, "spire-server", o)
	if err != nil {
		e.t.Fatal(err)
	}
	return srv
}

// TestTOFUBindsHostnameToFirstEK: with enrollment = "tofu" the first EK to
// attest under a hostname is bound to it (selector tpm:host:<hostname>);
// another TPM whose agent claims the same hostname is refused
// (hostname_taken). Where agents can be given hostnames, the other TPM
// then binds a name of its own, and the first keeps its bound name
// whatever its agent claims later.
func TestTOFUBindsHostnameToFirstEK(t *testing.T) {
	env, ctx := newEnv(t)
	a := env.newMachine(ctx, "node-a")
	b := env.newMachine(ctx, "node-b")
	srv := env.startTOFUServer(ctx, a, demo.ServerOptions{})
	dsn := env.storeDSN("spire-server")
	name := env.hostname("node-a.example.org")

	first := env.mustAttest(ctx, srv, a, agentOpts{Hostname: name})
	checkAttested(t, first, certSelectors...)
	wantSelector(t, first, "host", name)

	_, err := env.attest(ctx, srv, b, agentOpts{Hostname: name})
	wantRefused(t, err, "hostname_taken")
	if h := hostOf(t, ctx, dsn, a.ekHash); h == nil || h.Hostname != name || h.State != store.HostEnrolled {
		t.Errorf("host of A's EK: %+v, want %s, enrolled", h, name)
	}
	if h := hostOf(t, ctx, dsn, b.ekHash); h != nil {
		t.Errorf("B's EK was bound: %+v", h)
	}
	if got := outcomes(attemptsOf(t, ctx, dsn, b.ekHash)); !slices.Equal(got, []string{"refused(hostname_taken)"}) {
		t.Errorf("B's attempts %v, want one refused(hostname_taken)", got)
	}
	if ids := agentIDs(t, ctx, srv); !slices.Equal(ids, []string{first.SPIFFEID}) {
		t.Errorf("spire-server agent list %v, want only A's agent", ids)
	}

	if canSetHostnames() != nil {
		t.Logf("not shown (agents cannot claim other hostnames here: %v): B binding a name of its own, A keeping its name under another claim", canSetHostnames())
		return
	}
	second := env.mustAttest(ctx, srv, b, agentOpts{Hostname: "node-b.example.org"})
	wantSelector(t, second, "host", "node-b.example.org")
	first.Agent.Stop()
	again := env.mustAttest(ctx, srv, a, agentOpts{Hostname: "renamed.example.org"})
	wantSelector(t, again, "host", name)
	if h := hostOf(t, ctx, dsn, a.ekHash); h == nil || h.Hostname != name {
		t.Errorf("A's host after a different claim: %+v, want %s", h, name)
	}
}

// TestRevokedHostIsRefusedAndEvicted: `tpmid hosts revoke --spire-socket`
// revokes a bound host in the store and evicts its agent from SPIRE at
// once (spire-server agent list no longer shows it); the host's next
// attestation, by a new agent on the same TPM, is refused (ek_revoked).
func TestRevokedHostIsRefusedAndEvicted(t *testing.T) {
	env, ctx := newEnv(t)
	a := env.newMachine(ctx, "node-a")
	srv := env.startTOFUServer(ctx, a, demo.ServerOptions{})
	dsn := env.storeDSN("spire-server")
	name := env.hostname("node-a.example.org")

	first := env.mustAttest(ctx, srv, a, agentOpts{Hostname: name})
	wantSelector(t, first, "host", name)
	if ids := agentIDs(t, ctx, srv); !slices.Contains(ids, first.SPIFFEID) {
		t.Fatalf("spire-server agent list %v does not show %s", ids, first.SPIFFEID)
	}

	out, err := env.tpmid(ctx, "hosts", "revoke", name, "--store", dsn,
		"--spire-socket", srv.SocketPath, "--trust-domain", demo.TrustDomain,
		"--spire-server", filepath.Join(env.SPIREBin, "spire-server"))
	if err != nil {
		t.Fatal(err)
	}
	// Stopped before it notices the eviction (it would try again).
	first.Agent.Stop()
	if !strings.Contains(out, "evicted "+first.SPIFFEID) {
		t.Errorf("tpmid hosts revoke does not say it evicted %s", first.SPIFFEID)
	}
	if ids := agentIDs(t, ctx, srv); slices.Contains(ids, first.SPIFFEID) {
		t.Errorf("after revoke --spire-socket, spire-server agent list still shows %s", first.SPIFFEID)
	}
	if h := hostOf(t, ctx, dsn, a.ekHash); h == nil || h.State != store.HostRevoked {
		t.Fatalf("host after revoke: %+v, want revoked", h)
	}

	_, err = env.attest(ctx, srv, a, agentOpts{Hostname: name})
	wantRefused(t, err, "ek_revoked")
	if ids := agentIDs(t, ctx, srv); slices.Contains(ids, first.SPIFFEID) {
		t.Errorf("the revoked host's agent is back in spire-server agent list: %v", ids)
	}
	got := outcomes(attemptsOf(t, ctx, dsn, a.ekHash))
	if len(got) < 2 || got[0] != "admitted" || slices.ContainsFunc(got[1:], func(o string) bool { return o != "refused(ek_revoked)" }) {
		t.Errorf("attempts %v, want admitted, then only refused(ek_revoked)", got)
	}
}

// TestBootChangeRefusedUntilApproved: a host whose profile was captured
// from its own event log is admitted with tpm:profile:<name>@<version>;
// after a boot change (an unknown boot application measured into PCR4,
// in the TPM and in the log) it is refused (profile_mismatch) and the
// store keeps the boot it saw as the host's proposed state; once an
// operator approves it (tpmid hosts approve) the host is admitted again
// under the approved profile.
func TestBootChangeRefusedUntilApproved(t *testing.T) {
	env, ctx := newEnv(t)
	a := env.newMachine(ctx, "node-a")
	srv := env.startTOFUServer(ctx, a, demo.ServerOptions{})
	dsn := env.storeDSN("spire-server")
	name := env.hostname("node-a.example.org")

	first := env.mustAttest(ctx, srv, a, agentOpts{Hostname: name})
	if p, ok := demo.Selector(first.Selectors, "profile"); ok {
		t.Errorf("profile selector %q before any profile was assigned", p)
	}

	// The operator captures the known-good boot and assigns it to the host.
	l, err := eventlog.Parse(a.boot.Log)
	if err != nil {
		t.Fatal(err)
	}
	p, err := profile.Capture(l, "node-a-boot", pcrs.SHA256, []int{0, 1, 2, 3, 4, 5, 6, 7})
	if err != nil {
		t.Fatal(err)
	}
	body, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var captured *store.Profile
	storeUpdate(t, ctx, dsn, func(tx store.Tx) error {
		if captured, err = tx.PutProfile(ctx, store.Profile{Name: p.Name, Body: body}); err != nil {
			return err
		}
		return tx.Assign(ctx, store.Assignment{Profile: p.Name, Host: name})
	})
	first.Agent.Stop()
	known := env.mustAttest(ctx, srv, a, agentOpts{Hostname: name})
	wantSelector(t, known, "profile", fmt.Sprintf("%s@%d", captured.Name, captured.Version))
	known.Agent.Stop()

	// The boot changes.
	a.measureUnknownBootApp(`\EFI\vendor\newloader.efi`)
	_, err = env.attest(ctx, srv, a, agentOpts{Hostname: name})
	wantRefused(t, err, "profile_mismatch")
	out, err := env.tpmid(ctx, "hosts", "show", name, "--store", dsn, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var shown struct {
		Proposed        bool            `json:"proposed"`
		LastOutcome     string          `json:"last_outcome"`
		ProposedProfile json.RawMessage `json:"proposed_profile"`
	}
	if err := json.Unmarshal([]byte(out), &shown); err != nil {
		t.Fatalf("tpmid hosts show --json: %v", err)
	}
	if !shown.Proposed || shown.LastOutcome != store.OutcomeRefused {
		t.Fatalf("after the refusal the host shows proposed %v, last outcome %q; want a proposed state, refused", shown.Proposed, shown.LastOutcome)
	}
	proposed, err := profile.ParseProfile(shown.ProposedProfile)
	if err != nil {
		t.Fatalf("the proposed state is not a profile: %v", err)
	}
	if ev := proposed.PCRs[pcrs.SHA256][4].Events; len(ev) <= len(p.PCRs[pcrs.SHA256][4].Events) {
		t.Errorf("the proposed state's PCR4 has %d digests, want more than the %d captured (the new boot application)", len(ev), len(p.PCRs[pcrs.SHA256][4].Events))
	}

	// The operator approves it.
	approvedName := "host-" + name
	out, err = env.tpmid(ctx, "hosts", "approve", name, "--store", dsn)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, approvedName+"@1") {
		t.Errorf("tpmid hosts approve does not name profile %s@1", approvedName)
	}
	if h := hostOf(t, ctx, dsn, a.ekHash); h == nil || len(h.Proposed) != 0 || !slices.Contains(h.Profiles, approvedName) {
		t.Fatalf("host after approve: %+v; want no proposed state, profile %s assigned", h, approvedName)
	}
	approved := env.mustAttest(ctx, srv, a, agentOpts{Hostname: name})
	wantSelector(t, approved, "profile", approvedName+"@1")
	wantSelector(t, approved, "host", name)
	want := []string{"admitted", "admitted", "refused(profile_mismatch)", "admitted"}
	if got := outcomes(attemptsOf(t, ctx, dsn, a.ekHash)); !slices.Equal(got, want) {
		t.Errorf("attempts %v, want %v", got, want)
	}
}

// TestRestoredTPMSnapshotIsRefused: the TPM state of an admitted host is
// copied while swtpm is stopped; the machine boots on twice (each start is
// a TPM Reset: resetCount goes up) and is admitted each time; then the old
// copy is restored and booted, as a restored disk image or a cloned VM
// would: its resetCount is lower than the one last seen, and it is
// refused (reset_count_rollback), with an error in spire-server's log.
// The restored TPM counts one start past its copy, so it must be behind
// by two boots to be behind at all.
func TestRestoredTPMSnapshotIsRefused(t *testing.T) {
	env, ctx := newEnv(t)
	a := env.newMachine(ctx, "node-a")
	srv := env.startTOFUServer(ctx, a, demo.ServerOptions{})
	dsn := env.storeDSN("spire-server")
	name := env.hostname("node-a.example.org")

	c0 := a.clock(ctx)
	env.mustAttest(ctx, srv, a, agentOpts{Hostname: name}).Agent.Stop()
	a.stop()
	snap := filepath.Join(env.tmp, "node-a-snapshot")
	if err := swtpm.Snapshot(a.state, snap); err != nil {
		t.Fatal(err)
	}
	var last swtpm.ClockInfo
	for range 2 {
		a.start(ctx)
		last = a.clock(ctx)
		env.mustAttest(ctx, srv, a, agentOpts{Hostname: name}).Agent.Stop()
		a.stop()
	}
	if h := hostOf(t, ctx, dsn, a.ekHash); h == nil || h.Counters == nil || h.Counters.ResetCount != last.ResetCount {
		t.Fatalf("host counters %+v, want reset count %d", h, last.ResetCount)
	}

	if err := swtpm.Restore(snap, a.state); err != nil {
		t.Fatal(err)
	}
	a.start(ctx)
	restored := a.clock(ctx)
	t.Logf("reset counts: first boot %d, last boot %d, restored copy %d", c0.ResetCount, last.ResetCount, restored.ResetCount)
	if restored.ResetCount >= last.ResetCount {
		t.Fatalf("the restored TPM's reset count %d is not behind %d", restored.ResetCount, last.ResetCount)
	}
	_, err := env.attest(ctx, srv, a, agentOpts{Hostname: name})
	wantRefused(t, err, "reset_count_rollback")
	if line := findLogLine(srv.Log(), "TPM counters went back"); line == "" {
		t.Error("spire-server's log has no security error for the rollback")
	} else {
		t.Logf("spire-server: %s", line)
	}
	h := hostOf(t, ctx, dsn, a.ekHash)
	if h == nil || h.Counters == nil || h.Counters.ResetCount != last.ResetCount || h.LastOutcome != store.OutcomeRefused {
		t.Errorf("host after the refusal: %+v; want counters unchanged (reset %d), last outcome refused", h, last.ResetCount)
	}
	want := []string{"admitted", "admitted", "admitted", "refused(reset_count_rollback)"}
	if got := outcomes(attemptsOf(t, ctx, dsn, a.ekHash)); !slices.Equal(got, want) {
		t.Errorf("attempts %v, want %v", got, want)
	}
}

func findLogLine(log, needle string) string {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, needle) {
			return l
		}
	}
	return ""
}
