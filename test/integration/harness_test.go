package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/tpmid/tpmid/internal/demo"
	"github.com/tpmid/tpmid/internal/swtpm"
	"github.com/tpmid/tpmid/internal/tpmtest"
	"github.com/tpmid/tpmid/pkg/common/eventlog"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/common/tpm"
	"github.com/tpmid/tpmid/pkg/server/nodes"
	"github.com/tpmid/tpmid/pkg/server/store"
)

// testEnv is the demo harness of one test, plus what the node store tests
// need: a temporary directory for stores and TPM states, agents that claim
// a chosen hostname, machines whose swtpm can be rebooted, snapshotted and
// restored, and the tpmid CLI.
type testEnv struct {
	*demo.Env
	t *testing.T
	// tmp is made before the harness starts anything, so that it is
	// removed only after every process using it has stopped.
	tmp string
	// sockDir holds the agents' sockets (short paths: 108 bytes at most).
	sockDir string

	mu   sync.Mutex
	runs map[string]int
	late []func()
}

// StartServer starts a spire-server whose tpmid store is, unless o says
// otherwise, a SQLite file of this test's temporary directory: never the
// plugin's default path.
func (e *testEnv) StartServer(ctx context.Context, name string, o demo.ServerOptions) (*demo.Server, error) {
	if o.Store == "" {
		o.Store = filepath.Join(e.tmp, name+"-tpmid.db")
	}
	return e.Env.StartServer(ctx, name, o)
}

// afterClose runs f at cleanup, after the harness stopped every process.
func (e *testEnv) afterClose(f func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.late = append(e.late, f)
}

func (e *testEnv) runLate() {
	e.mu.Lock()
	fs := e.late
	e.late = nil
	e.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

// next numbers the agents run on one machine, so that each has a fresh
// data directory (a new agent, not a restarted one) and its own log.
func (e *testEnv) next(name string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.runs == nil {
		e.runs = map[string]int{}
	}
	e.runs[name]++
	return e.runs[name]
}

// Hostnames. The agent plugin claims os.Hostname() (there is no setting
// for it), so an agent claims a chosen name only when it runs in a UTS
// namespace of its own (unshare --uts, which needs root). Without that,
// every agent claims this machine's name (TPMID_TEST_SAME_HOSTNAME=1 makes
// that so here too).
var hostnames struct {
	once sync.Once
	err  error
}

// canSetHostnames reports whether agents can be given hostnames.
func canSetHostnames() error {
	hostnames.once.Do(func() {
		if os.Getenv("TPMID_TEST_SAME_HOSTNAME") == "1" {
			hostnames.err = errors.New("TPMID_TEST_SAME_HOSTNAME=1")
			return
		}
		out, err := exec.Command("unshare", "--uts", "--", "/bin/sh", "-c", `printf %s tpmid-probe >/proc/sys/kernel/hostname`).CombinedOutput()
		if err != nil {
			hostnames.err = fmt.Errorf("unshare --uts: %v: %s", err, bytes.TrimSpace(out))
		}
	})
	return hostnames.err
}

// hostname returns the hostname an agent started with agentOpts{Hostname:
// it} claims: want when agents can be given hostnames, else this
// machine's own name (the test is skipped when tpmid would not bind it).
func (e *testEnv) hostname(want string) string {
	if canSetHostnames() == nil {
		return want
	}
	h, err := os.Hostname()
	h = strings.ToLower(h)
	if err != nil || !nodes.ValidHostname(h) {
		e.t.Skipf("agents claim this machine's hostname %q (%v), which tpmid does not bind, and they cannot be given another: %v", h, err, canSetHostnames())
	}
	return h
}

// distinctHostnames skips the test when agents cannot claim different
// hostnames.
func (e *testEnv) distinctHostnames() {
	if err := canSetHostnames(); err != nil {
		e.t.Skipf("needs agents that claim different hostnames, in UTS namespaces of their own: %v", err)
	}
}

var safeHostRe = regexp.MustCompile(`^[a-z0-9.-]+$`)

// spireBinFor returns a directory whose spire-agent runs the real one in a
// UTS namespace named hostname.
func (e *testEnv) spireBinFor(hostname string) (string, error) {
	if !safeHostRe.MatchString(hostname) {
		return "", fmt.Errorf("hostname %q", hostname)
	}
	dir := filepath.Join(e.tmp, "bin-"+hostname)
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, err := os.Stat(filepath.Join(dir, "spire-agent")); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	real := filepath.Join(e.SPIREBin, "spire-agent")
	script := fmt.Sprintf(`#!/bin/sh
# spire-agent, in a UTS namespace of its own whose hostname is %[1]s: the
# hostname the tpmid agent plugin claims (os.Hostname).
exec unshare --uts -- /bin/sh -c 'printf %%s "$0" >/proc/sys/kernel/hostname && exec "$@"' '%[1]s' '%[2]s' "$@"
`, hostname, strings.ReplaceAll(real, "'", `'\''`))
	return dir, os.WriteFile(filepath.Join(dir, "spire-agent"), []byte(script), 0o755)
}

// agentOpts configure one agent run.
type agentOpts struct {
	// Hostname is what the agent claims: a name from e.hostname, or ""
	// for this machine's.
	Hostname string
	Timeout  time.Duration
}

// attest runs a new spire-agent (fresh data directory, log
// <machine>-agent-<n>.log) on m against srv and waits for the outcome; a
// refusal is a *demo.RefusedError. The agent is left running until
// cleanup (or Agent.Stop). Safe for concurrent use.
func (e *testEnv) attest(ctx context.Context, srv *demo.Server, m *machine, o agentOpts) (*demo.Attestation, error) {
	name := fmt.Sprintf("%s-agent-%d", m.name, e.next(m.name))
	bin := e.SPIREBin
	if o.Hostname != "" && canSetHostnames() == nil {
		var err error
		if bin, err = e.spireBinFor(o.Hostname); err != nil {
			return nil, err
		}
	}
	claim := o.Hostname
	if claim == "" {
		claim = "this machine's"
	}
	var a *demo.Attestation
	err := e.Step(fmt.Sprintf("spire-agent %s on %s (hostname %s), wait for attestation", name, m.name, claim), func() error {
		var err error
		a, err = demo.RunAgent(ctx, bin, filepath.Join(e.LogDir, name), e.sockDir, filepath.Join(e.LogDir, name+".log"), srv, e.Plugins,
			demo.AgentOptions{TPMDevice: m.inst.Addr(), EventLogPath: m.logPath, Timeout: o.Timeout})
		return err
	})
	if a != nil {
		e.t.Cleanup(a.Agent.Stop)
	}
	return a, err
}

// agentLog returns the log of the last agent run on m.
func (e *testEnv) agentLog(m *machine) string {
	e.mu.Lock()
	n := e.runs[m.name]
	e.mu.Unlock()
	b, _ := os.ReadFile(filepath.Join(e.LogDir, fmt.Sprintf("%s-agent-%d.log", m.name, n)))
	return string(b)
}

// mustAttest is attest that fails the test unless the agent was admitted.
func (e *testEnv) mustAttest(ctx context.Context, srv *demo.Server, m *machine, o agentOpts) *demo.Attestation {
	e.t.Helper()
	a, err := e.attest(ctx, srv, m, o)
	if err != nil {
		e.t.Fatalf("%s: %v", m.name, err)
	}
	e.t.Logf("%s admitted: %s", m.name, strings.Join(a.Selectors, " "))
	if want := "spiffe://example.org/spire/agent/tpm/" + m.ekHash; a.SPIFFEID != want {
		e.t.Errorf("agent ID %s, want %s", a.SPIFFEID, want)
	}
	return a
}

var reasonRe = regexp.MustCompile(`\breason="?([a-z0-9_]+)`)

// refusalReason returns the reason of a refusal spire-server logged.
func refusalReason(err error) (string, *demo.RefusedError) {
	var r *demo.RefusedError
	if !errors.As(err, &r) {
		return "", nil
	}
	if m := reasonRe.FindStringSubmatch(r.Line); m != nil {
		return m[1], r
	}
	return "", r
}

// wantRefused fails the test unless err is spire-server's refusal for
// reason.
func wantRefused(t *testing.T, err error, reason string) *demo.RefusedError {
	t.Helper()
	got, r := refusalReason(err)
	switch {
	case err == nil:
		t.Fatalf("admitted; want a refusal with reason %s", reason)
	case r == nil:
		t.Fatalf("want a refusal with reason %s in spire-server's log, got: %v", reason, err)
	case got != reason:
		t.Fatalf("refused with reason %q, want %s: %s", got, reason, r.Line)
	}
	t.Logf("refused (%s): %s", reason, r.Line)
	return r
}

// wantSelector fails the test unless a has tpm:<key>:<value>.
func wantSelector(t *testing.T, a *demo.Attestation, key, value string) {
	t.Helper()
	if got, ok := demo.Selector(a.Selectors, key); !ok || got != value {
		t.Errorf("selector tpm:%s:%s, want tpm:%s:%s (selectors %v)", key, got, key, value, a.Selectors)
	}
}

// machine is a swtpm-backed machine the test can reboot, change the boot
// of, snapshot and restore. Its TPM state and event log live in the
// test's temporary directory.
type machine struct {
	env      *testEnv
	name     string
	state    string // swtpm state directory
	caBundle string // ek_ca_bundle trusting its EK
	ekHash   string
	logPath  string // the event log the agent sends
	boot     *demo.Boot
	inst     *swtpm.Instance
}

// banks are the PCR banks the machines have and log (the harness default).
var banks = []pcrs.Alg{pcrs.SHA1, pcrs.SHA256}

// newMachine manufactures a swtpm (EK certificate from this test's local
// CA, shared by all its machines), starts it and boots it.
func (e *testEnv) newMachine(ctx context.Context, name string) *machine {
	e.t.Helper()
	m := &machine{env: e, name: name, state: filepath.Join(e.tmp, name, "tpmstate")}
	if err := e.Step(name+": manufacture swtpm", func() error {
		man, err := swtpm.Setup(m.state, swtpm.Options{CADir: filepath.Join(e.tmp, "ek-ca")})
		if err != nil {
			return err
		}
		m.caBundle = man.BundleDir
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
	m.init(ctx)
	return m
}

// cloneMachine makes a machine whose TPM is a copy of snapshot (a
// swtpm.Snapshot): the same EK, the same counters.
func (e *testEnv) cloneMachine(ctx context.Context, name, snapshot, caBundle string) *machine {
	e.t.Helper()
	m := &machine{env: e, name: name, state: filepath.Join(e.tmp, name, "tpmstate"), caBundle: caBundle}
	if err := swtpm.Restore(snapshot, m.state); err != nil {
		e.t.Fatal(err)
	}
	m.init(ctx)
	return m
}

func (m *machine) init(ctx context.Context) {
	e := m.env
	e.t.Helper()
	m.logPath = filepath.Join(e.tmp, m.name, "binary_bios_measurements")
	var err error
	if m.boot, err = demo.MeasureBoot(demo.BootOptions{Banks: banks, SecureBoot: true}, filepath.Join(e.SPIREBin, "spire-agent")); err != nil {
		e.t.Fatal(err)
	}
	m.start(ctx)
	if err := m.withTPM(func(tp *tpm.TPM) error {
		ek, err := tp.EK(tpm.EKAuto)
		if err != nil {
			return err
		}
		m.ekHash = sha256Hex(ek.PublicDER)
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
}

// start starts swtpm (a TPM Reset: resetCount goes up, PCRs are reset)
// and boots: the measured boot extends PCRs 0-7 and its log is written.
func (m *machine) start(ctx context.Context) {
	e := m.env
	e.t.Helper()
	if err := e.Step(m.name+": start swtpm, measured boot", func() error {
		inst, err := swtpm.Start(ctx, m.state)
		if err != nil {
			return err
		}
		m.inst = inst
		e.t.Cleanup(func() { inst.Stop() })
		if err := os.WriteFile(m.logPath, m.boot.Log, 0o644); err != nil {
			return err
		}
		return m.withTPM(func(tp *tpm.TPM) error {
			for _, x := range m.boot.Extends {
				if err := tpmtest.Extend(tp, x.PCR, x.Digests); err != nil {
					return fmt.Errorf("extending PCR %d: %w", x.PCR, err)
				}
			}
			return nil
		})
	}); err != nil {
		e.t.Fatal(err)
	}
}

// stop stops swtpm (its state is kept).
func (m *machine) stop() {
	m.env.t.Helper()
	if err := m.inst.Stop(); err != nil {
		m.env.t.Fatal(err)
	}
}

// reboot is stop and start.
func (m *machine) reboot(ctx context.Context) {
	m.env.t.Helper()
	m.stop()
	m.start(ctx)
}

// clock reads the TPM's clock and reboot counters.
func (m *machine) clock(ctx context.Context) swtpm.ClockInfo {
	m.env.t.Helper()
	ci, err := m.inst.ClockInfo(ctx)
	if err != nil {
		m.env.t.Fatal(err)
	}
	return ci
}

// withTPM opens the running swtpm (no agent may hold it).
func (m *machine) withTPM(f func(*tpm.TPM) error) error {
	tp, err := tpm.Open(tpm.Config{Device: m.inst.Addr()})
	if err != nil {
		return fmt.Errorf("opening %s: %w", m.inst.Addr(), err)
	}
	defer tp.Close()
	return f(tp)
}

// measureUnknownBootApp is a boot change: a boot application nobody has
// seen (random digests) is measured into PCR4, in the TPM and in the log,
// as firmware would after an update of the boot loader. The log still
// replays to the TPM's PCRs.
func (m *machine) measureUnknownBootApp(path string) {
	e := m.env
	e.t.Helper()
	d := map[pcrs.Alg][]byte{}
	for _, a := range banks {
		d[a] = make([]byte, a.Size())
		rand.Read(d[a])
	}
	if err := m.withTPM(func(tp *tpm.TPM) error { return tpmtest.Extend(tp, 4, d) }); err != nil {
		e.t.Fatal(err)
	}
	if err := appendEvent(m.logPath, 4, eventlog.EvEFIBootServicesApp, d, imageLoadEvent(4096, path)); err != nil {
		e.t.Fatal(err)
	}
}

// appendEvent appends one TCG_PCR_EVENT2 record to the crypto-agile log
// at path (whose banks are banks) and checks that the log still parses.
func appendEvent(path string, pcr uint32, typ eventlog.EventType, digests map[pcrs.Alg][]byte, data []byte) error {
	// A builder's output is the Spec ID header, then its records.
	hdr, err := eventlog.NewBuilder(banks...)
	if err != nil {
		return err
	}
	b, _ := eventlog.NewBuilder(banks...)
	if err := b.ExtendDigest(pcr, typ, digests, data); err != nil {
		return err
	}
	old, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	log := append(old, b.Bytes()[len(hdr.Bytes()):]...)
	if _, err := eventlog.Parse(log); err != nil {
		return fmt.Errorf("the log with the new event does not parse: %w", err)
	}
	return os.WriteFile(path, log, 0o644)
}

// imageLoadEvent is a UEFI_IMAGE_LOAD_EVENT naming path in a media
// file-path device path.
func imageLoadEvent(size uint64, path string) []byte {
	var name bytes.Buffer
	for _, c := range utf16.Encode([]rune(path + "\x00")) {
		binary.Write(&name, binary.LittleEndian, c)
	}
	var dp bytes.Buffer
	dp.Write([]byte{0x04, 0x04})
	binary.Write(&dp, binary.LittleEndian, uint16(4+name.Len()))
	dp.Write(name.Bytes())
	dp.Write([]byte{0x7f, 0xff, 0x04, 0x00})
	var b bytes.Buffer
	for _, v := range []uint64{0x10000000, size, 0, uint64(dp.Len())} {
		binary.Write(&b, binary.LittleEndian, v)
	}
	b.Write(dp.Bytes())
	return b.Bytes()
}

// Store access from the test, as an operator's tool would: the server
// plugin has the same store open.

func storeUpdate(t *testing.T, ctx context.Context, dsn string, fn func(tx store.Tx) error) {
	t.Helper()
	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Update(ctx, fn); err != nil {
		t.Fatal(err)
	}
}

func storeView(t *testing.T, ctx context.Context, dsn string, fn func(tx store.Tx) error) {
	t.Helper()
	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.View(ctx, fn); err != nil {
		t.Fatal(err)
	}
}

// hostOf returns the host bound to ekHash, nil when none.
func hostOf(t *testing.T, ctx context.Context, dsn, ekHash string) *store.Host {
	t.Helper()
	var h *store.Host
	storeView(t, ctx, dsn, func(tx store.Tx) error {
		var err error
		h, err = tx.HostByEK(ctx, ekHash)
		if errors.Is(err, store.ErrNotFound) {
			h, err = nil, nil
		}
		return err
	})
	return h
}

// attemptsOf returns ekHash's attempts, oldest first.
func attemptsOf(t *testing.T, ctx context.Context, dsn, ekHash string) []store.Attempt {
	t.Helper()
	var as []store.Attempt
	storeView(t, ctx, dsn, func(tx store.Tx) error {
		var err error
		as, err = tx.Attempts(ctx, store.AttemptFilter{EKHash: ekHash})
		return err
	})
	for i, j := 0, len(as)-1; i < j; i, j = i+1, j-1 {
		as[i], as[j] = as[j], as[i]
	}
	return as
}

// outcomes summarises attempts as "admitted", "refused(reason)", ...
func outcomes(as []store.Attempt) []string {
	var out []string
	for _, a := range as {
		s := a.Outcome
		if len(a.Reasons) > 0 {
			r, _, _ := strings.Cut(a.Reasons[0], ":")
			s += "(" + r + ")"
		}
		out = append(out, s)
	}
	return out
}

// The tpmid CLI, built once for all tests.
var (
	tpmidOnce sync.Once
	tpmidBin  string
	tpmidErr  error
)

// tpmid runs the tpmid CLI and returns its combined output.
func (e *testEnv) tpmid(ctx context.Context, args ...string) (string, error) {
	tpmidOnce.Do(func() {
		out := filepath.Join(e.Root, "out", "integration", "bin")
		cmd := exec.CommandContext(context.Background(), "go", "build", "-o", out+"/", "./cmd/tpmid")
		cmd.Dir = e.Root
		if b, err := cmd.CombinedOutput(); err != nil {
			tpmidErr = fmt.Errorf("building tpmid: %v: %s", err, b)
			return
		}
		tpmidBin = filepath.Join(out, "tpmid")
	})
	if tpmidErr != nil {
		return "", tpmidErr
	}
	var out string
	err := e.Step("tpmid "+strings.Join(args, " "), func() error {
		b, err := exec.CommandContext(ctx, tpmidBin, args...).CombinedOutput()
		out = string(b)
		if err != nil {
			return fmt.Errorf("%v: %s", err, strings.TrimSpace(out))
		}
		return nil
	})
	shown := strings.TrimSpace(out)
	if lines := strings.Split(shown, "\n"); len(lines) > 12 {
		shown = strings.Join(lines[:12], "\n") + fmt.Sprintf("\n... (%d more lines)", len(lines)-12)
	}
	e.t.Logf("tpmid %s:\n%s", strings.Join(args, " "), shown)
	return out, err
}

// agentIDs lists the agent IDs spire-server knows.
func agentIDs(t *testing.T, ctx context.Context, srv *demo.Server) []string {
	t.Helper()
	recs, err := srv.Agents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range recs {
		ids = append(ids, r.ID)
	}
	return ids
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
