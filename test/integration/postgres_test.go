package integration

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tpmid/tpmid/internal/demo"
	"github.com/tpmid/tpmid/internal/swtpm"
	"github.com/tpmid/tpmid/pkg/server/store"
)

// PostgreSQL, as the store tests use it: the server named by
// TPMID_TEST_POSTGRES (default postgres://postgres@127.0.0.1:5432/postgres,
// a role that may CREATE DATABASE), a fresh database per test, dropped at
// cleanup. When it is unreachable the test is skipped, unless
// TPMID_REQUIRE_POSTGRES=1, which makes it fail. (The "pgx" database/sql
// driver is the one the store registers.)

const defaultPostgresAdmin = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

func postgresAdminDSN() string {
	if v := os.Getenv("TPMID_TEST_POSTGRES"); v != "" {
		return v
	}
	return defaultPostgresAdmin
}

func redactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "TPMID_TEST_POSTGRES"
	}
	return u.Redacted()
}

// skipWithoutPostgres skips t, or fails it when TPMID_REQUIRE_POSTGRES=1.
func skipWithoutPostgres(t *testing.T, format string, a ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, a...)
	if os.Getenv("TPMID_REQUIRE_POSTGRES") == "1" {
		t.Fatalf("PostgreSQL is required (TPMID_REQUIRE_POSTGRES=1): %s", msg)
	}
	t.Skipf("%s; set TPMID_TEST_POSTGRES, or TPMID_REQUIRE_POSTGRES=1 to fail instead", msg)
}

// newPostgresDB creates an empty database on the test PostgreSQL server,
// dropped once the harness has stopped, and returns its DSN.
func (e *testEnv) newPostgresDB(ctx context.Context) string {
	t := e.t
	t.Helper()
	admin := postgresAdminDSN()
	db, err := sql.Open("pgx", admin)
	if err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		skipWithoutPostgres(t, "PostgreSQL at %s is unreachable (%v)", redactDSN(admin), err)
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	name := "tpmid_it_" + hex.EncodeToString(rnd[:])
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		db.Close()
		t.Fatalf("create database: %v", err)
	}
	e.afterClose(func() {
		defer db.Close()
		if _, err := db.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("TPMID_TEST_POSTGRES must be a postgres:// URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// TestTwoServersShareOnePostgresStore: two spire-servers (each with its
// own SPIRE datastore, sqlite) keep their tpmid store in one PostgreSQL
// database, with enrollment = "tofu". Two clones of one TPM (the same EK)
// attest at the same moment, one through each server, claiming two
// hostnames: exactly one hostname is bound to the EK, and every agent
// admitted carries it (a clone that comes second may also be refused as
// a clone: clock_rollback). Then the binding made through one server
// holds on the other: another TPM claiming the bound name is refused
// there (hostname_taken), and the bound host attests through it.
func TestTwoServersShareOnePostgresStore(t *testing.T) {
	env, ctx := newEnv(t)
	dsn := env.newPostgresDB(ctx)
	a := env.newMachine(ctx, "node-a")
	b := env.newMachine(ctx, "node-b")
	var srvs []*demo.Server
	for i := 1; i <= 2; i++ {
		srv, err := env.StartServer(ctx, fmt.Sprintf("spire-server-%d", i), demo.ServerOptions{
			EKCABundle: a.caBundle, Enrollment: "tofu", Store: dsn,
			ExtraPluginData: fmt.Sprintf("        server_name = \"spire-%d\"", i),
		})
		if err != nil {
			t.Fatal(err)
		}
		srvs = append(srvs, srv)
	}

	// Two clones of B's TPM attest at once, one through each server.
	b.stop()
	snap := filepath.Join(env.tmp, "node-b-snapshot")
	if err := swtpm.Snapshot(b.state, snap); err != nil {
		t.Fatal(err)
	}
	clones := []*machine{
		env.cloneMachine(ctx, "node-b1", snap, b.caBundle),
		env.cloneMachine(ctx, "node-b2", snap, b.caBundle),
	}
	claims := []string{env.hostname("node-b1.example.org"), env.hostname("node-b2.example.org")}
	if claims[0] == claims[1] {
		t.Logf("both clones claim %s (agents cannot claim other hostnames here: %v)", claims[0], canSetHostnames())
	}
	type result struct {
		a   *demo.Attestation
		err error
	}
	results := make([]result, 2)
	var wg sync.WaitGroup
	for i := range clones {
		wg.Go(func() {
			a, err := env.attest(ctx, srvs[i], clones[i], agentOpts{Hostname: claims[i]})
			results[i] = result{a, err}
		})
	}
	wg.Wait()

	h := hostOf(t, ctx, dsn, b.ekHash)
	if h == nil {
		t.Fatalf("no host is bound to the clones' EK; outcomes %v, %v", results[0].err, results[1].err)
	}
	t.Logf("bound: %s", h.Hostname)
	if !slices.Contains(claims, h.Hostname) {
		t.Errorf("the EK is bound to %s, which neither agent claimed (%v)", h.Hostname, claims)
	}
	admitted := 0
	for i, r := range results {
		if r.err != nil {
			reason, rf := refusalReason(r.err)
			if rf == nil {
				t.Errorf("%s: %v", clones[i].name, r.err)
				continue
			}
			t.Logf("%s (claims %s, through spire-%d) refused: %s", clones[i].name, claims[i], i+1, reason)
			// The loser lost the binding (hostname_taken), or came
			// second with a clock behind the winner's (a clone).
			if reason != "hostname_taken" && reason != "clock_rollback" {
				t.Errorf("%s refused for %s: %s", clones[i].name, reason, rf.Line)
			}
			continue
		}
		admitted++
		t.Logf("%s (claims %s, through spire-%d) admitted: %s", clones[i].name, claims[i], i+1, strings.Join(r.a.Selectors, " "))
		wantSelector(t, r.a, "host", h.Hostname)
		r.a.Agent.Stop()
	}
	if admitted == 0 {
		t.Fatal("neither clone was admitted")
	}
	var hosts []string
	storeView(t, ctx, dsn, func(tx store.Tx) error {
		hs, err := tx.ListHosts(ctx)
		for _, h := range hs {
			hosts = append(hosts, h.Hostname)
		}
		return err
	})
	if !slices.Equal(hosts, []string{h.Hostname}) {
		t.Errorf("hosts in the store %v, want only %s", hosts, h.Hostname)
	}
	var servers []string
	binder := -1
	for _, at := range attemptsOf(t, ctx, dsn, b.ekHash) {
		servers = append(servers, at.Server)
		if binder < 0 && at.Outcome == store.OutcomeAdmitted {
			binder = slices.Index([]string{"spire-1", "spire-2"}, at.Server)
		}
	}
	slices.Sort(servers)
	if !slices.Equal(servers, []string{"spire-1", "spire-2"}) || binder < 0 {
		t.Fatalf("the clones' attempts were recorded by %v, want one by each server, one admitted", servers)
	}

	// The binding made through one server holds on the other.
	other := srvs[1-binder]
	_, err := env.attest(ctx, other, a, agentOpts{Hostname: h.Hostname})
	wantRefused(t, err, "hostname_taken")
	// The clone whose clock is ahead now is ahead of every clock admitted.
	ahead := clones[0]
	if clones[1].clock(ctx).Clock > clones[0].clock(ctx).Clock {
		ahead = clones[1]
	}
	again := env.mustAttest(ctx, other, ahead, agentOpts{Hostname: claims[slices.Index(clones, ahead)]})
	wantSelector(t, again, "host", h.Hostname)
}

// pgServer is a PostgreSQL instance of the test's own (initdb, pg_ctl) on
// a free loopback port, which the test stops and starts.
type pgServer struct {
	bin, dir, data string
	port           int
	cred           *syscall.Credential // the postgres user when running as root
}

// postgresBinDir finds initdb and pg_ctl: the newest /usr/lib/postgresql/*/bin, or PATH.
func postgresBinDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	version := func(d string) int { v, _ := strconv.Atoi(filepath.Base(filepath.Dir(d))); return v }
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	p, err := exec.LookPath("initdb")
	if err != nil {
		return "", errors.New("initdb not found in /usr/lib/postgresql/*/bin nor on PATH (apt-get install postgresql)")
	}
	return filepath.Dir(p), nil
}

// ownPostgres initialises and starts a PostgreSQL instance in a temporary
// directory; it is stopped and removed once the harness has stopped.
func (e *testEnv) ownPostgres(ctx context.Context) *pgServer {
	t := e.t
	t.Helper()
	bin, err := postgresBinDir()
	if err != nil {
		skipWithoutPostgres(t, "%v", err)
	}
	p := &pgServer{bin: bin}
	// initdb refuses to run as root: run PostgreSQL as the postgres user.
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			skipWithoutPostgres(t, "running as root and there is no postgres user to run PostgreSQL as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	// Not under t.TempDir (mode 0700, root's): the postgres user must
	// reach it. The socket directory is this one too (short path).
	if p.dir, err = os.MkdirTemp("", "tpmid-pg-"); err != nil {
		t.Fatal(err)
	}
	e.afterClose(func() {
		p.run(context.Background(), "pg_ctl", "stop", "-D", p.data, "-m", "immediate", "-w")
		os.RemoveAll(p.dir)
	})
	if p.cred != nil {
		if err := os.Chown(p.dir, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	p.data = filepath.Join(p.dir, "data")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	if err := e.Step("initdb (PostgreSQL "+filepath.Base(filepath.Dir(bin))+")", func() error {
		return p.run(ctx, "initdb", "-D", p.data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
	}); err != nil {
		t.Fatal(err)
	}
	p.start(t, ctx)
	return p
}

// run runs one PostgreSQL program, its output in the instance's log.
func (p *pgServer) run(ctx context.Context, prog string, args ...string) error {
	logf, err := os.OpenFile(filepath.Join(p.dir, "commands.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "### %s %s\n", prog, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, filepath.Join(p.bin, prog), args...)
	cmd.Dir = p.dir
	// A file, not a pipe: pg_ctl's postmaster outlives it.
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(filepath.Join(p.dir, "commands.log"))
		return fmt.Errorf("%s: %v\n%s", prog, err, lastLines(string(b), 15))
	}
	return nil
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

func (p *pgServer) start(t *testing.T, ctx context.Context) {
	t.Helper()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off", p.port, p.dir)
	if err := p.run(ctx, "pg_ctl", "start", "-D", p.data, "-l", filepath.Join(p.dir, "postgres.log"), "-w", "-t", "60", "-o", opts); err != nil {
		t.Fatal(err)
	}
}

func (p *pgServer) stop(t *testing.T, ctx context.Context) {
	t.Helper()
	if err := p.run(ctx, "pg_ctl", "stop", "-D", p.data, "-m", "fast", "-w", "-t", "60"); err != nil {
		t.Fatal(err)
	}
}

func (p *pgServer) dsn() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=5", p.port)
}

// TestStoreOutageRefusesThenRecovers: while the PostgreSQL of the tpmid
// store is down, an agent's attestation fails with store_unavailable
// (gRPC Unavailable) and leaves nothing in the store, not even the
// attempt; once PostgreSQL is back, the next attestation is admitted and
// recorded, without restarting spire-server.
func TestStoreOutageRefusesThenRecovers(t *testing.T) {
	env, ctx := newEnv(t)
	pg := env.ownPostgres(ctx)
	a := env.newMachine(ctx, "node-a")
	srv := env.startTOFUServer(ctx, a, demo.ServerOptions{Store: pg.dsn()})
	name := env.hostname("node-a.example.org")

	if err := env.Step("stop PostgreSQL", func() error { pg.stop(t, ctx); return nil }); err != nil {
		t.Fatal(err)
	}
	_, err := env.attest(ctx, srv, a, agentOpts{Hostname: name})
	r := wantRefused(t, err, "store_unavailable")
	if !strings.Contains(r.Line, "store unavailable") {
		t.Errorf("the refusal does not say the store is unavailable: %s", r.Line)
	}
	// The agent is stopped as soon as spire-server logs the refusal; when
	// it logged the error it got first, that says Unavailable.
	if line := findLogLine(env.agentLog(a), "Failed to retrieve attestation result"); line != "" {
		if !strings.Contains(line, "code = Unavailable") {
			t.Errorf("the agent's error is not gRPC Unavailable: %s", line)
		} else {
			t.Logf("spire-agent: %s", line)
		}
	}

	if err := env.Step("start PostgreSQL", func() error { pg.start(t, ctx); return nil }); err != nil {
		t.Fatal(err)
	}
	if h := hostOf(t, ctx, pg.dsn(), a.ekHash); h != nil {
		t.Errorf("a host was bound during the outage: %+v", h)
	}
	if as := attemptsOf(t, ctx, pg.dsn(), a.ekHash); len(as) != 0 {
		t.Errorf("attempts written during the outage: %v", outcomes(as))
	}

	again := env.mustAttest(ctx, srv, a, agentOpts{Hostname: name})
	wantSelector(t, again, "host", name)
	if h := hostOf(t, ctx, pg.dsn(), a.ekHash); h == nil || h.Hostname != name || h.Counters == nil {
		t.Errorf("host after recovery: %+v, want %s bound with counters", h, name)
	}
	if got := outcomes(attemptsOf(t, ctx, pg.dsn(), a.ekHash)); !slices.Equal(got, []string{"admitted"}) {
		t.Errorf("attempts %v, want one admitted", got)
	}
}
