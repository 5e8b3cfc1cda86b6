// Command load drives the real tpmid server plugin process under many
// concurrent attestations, as spire-server hosts it (go-plugin with SPIRE's
// handshake, the SDK's Init, Configure, then NodeAttestor.Attest streams),
// with the SQLite store and then PostgreSQL, and prints attestations/s, p50
// and p99 latency, the plugin's peak RSS and the CPU both sides used.
//
// The attesters are software TPMs (internal/softagent): thousands of
// distinct ECC P-256 EKs certified by a test CA, restricted ECDSA AKs, and
// quotes over the PCRs replayed from a real 45 KB event log (ubuntu-2404,
// sha256 bank). The plugin cannot tell them from TPMs; what it spends per
// attestation is what it spends on a real one (its EK certificate chain,
// AK creation check, TPM2_MakeCredential, quote, event log replay and PCR7
// grammar, the store transaction).
//
// Run it with `make bench-load` (which builds bin/tpmid-server-plugin), or
//
//	CGO_ENABLED=1 go run ./test/bench/load -plugin bin/tpmid-server-plugin
//
// sqlite-profile assigns every host a reference profile captured from the
// log, so that every attestation is also appraised against it. Then
// sqlite-ca gives the plugin tpmid's AK CA (ca_dir): the first
// attestation of each attester carries the certificate delivery and its
// acknowledgement, and every later one takes the fast path.
//
// Flags set the duration of each phase, the closed-loop concurrencies, the
// number of attesters and the PostgreSQL server; -cpuprofile profiles the
// plugin (through a bench-only build of it, see profplugin).
package main

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tpmid/tpmid/ca/issuer"
	"github.com/tpmid/tpmid/internal/grpcbuffers"
	"github.com/tpmid/tpmid/internal/realdata"
	"github.com/tpmid/tpmid/internal/softagent"
	"github.com/tpmid/tpmid/internal/testca"
	"github.com/tpmid/tpmid/pkg/common/eventlog"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/server/profile"
	"github.com/tpmid/tpmid/pkg/server/store"
)

// realLog is the 45 KB log every attester reports (MANIFEST.md: Ubuntu
// 24.04 on GCE, AMD SEV-SNP, Secure Boot off).
const realLog = "eventlogs/go-tpm-tools/ubuntu-2404-amd-sevsnp.bin"

// The goals, printed beside the figures.
const (
	goalRate      = 3000 // full attestations/s on 2 cores, SQLite store
	goalPGRatio   = 1.5  // PostgreSQL's rate within this factor of SQLite's
	goalHalfP99   = 20 * time.Millisecond
	trustDomain   = "example.org"
	profileEnvVar = "TPMID_BENCH_CPUPROFILE"
)

// The harness shares the plugin's two cores: its gRPC client marshals each
// 46 KB evidence into a buffer of that size too, not a zeroed 1 MiB one
// (package grpcbuffers; that was 9% of the harness's CPU).
func init() { grpcbuffers.Install() }

type options struct {
	plugin      string
	duration    time.Duration
	concurrency []int
	attesters   int
	postgres    string
	cpuprofile  string
	harnessProf string
	stores      string
}

func main() {
	var o options
	var conc string
	cores := runtime.NumCPU()
	flag.StringVar(&o.plugin, "plugin", "bin/tpmid-server-plugin", "the server plugin binary (make build)")
	flag.DurationVar(&o.duration, "duration", 8*time.Second, "length of each measured phase")
	flag.StringVar(&conc, "concurrency", fmt.Sprintf("%d,%d", 2*cores, 8*cores), "closed-loop attestations in flight, comma separated (default 2x and 8x the cores)")
	flag.IntVar(&o.attesters, "attesters", 2000, "distinct software TPMs (EKs)")
	flag.StringVar(&o.postgres, "postgres", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "PostgreSQL server to create a fresh database on (empty: skip PostgreSQL)")
	flag.StringVar(&o.stores, "stores", "sqlite,postgres,sqlite-profile,sqlite-ca", "stores to measure, in order; sqlite-profile is SQLite with a reference profile (captured from the log) assigned to every host; sqlite-ca is SQLite with tpmid's AK CA (ca_dir): first attestations with the certificate delivery, then the fast path")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "", "directory for a CPU profile of the plugin per store (runs a bench-only build of the plugin that writes one)")
	flag.StringVar(&o.harnessProf, "harness-cpuprofile", "", "file for a CPU profile of the harness itself (its software TPMs and gRPC client share the plugin's cores)")
	flag.Parse()
	for _, f := range strings.Split(conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fatalf("-concurrency %q: want positive integers", conc)
		}
		o.concurrency = append(o.concurrency, n)
	}
	var prof *os.File
	if o.harnessProf != "" {
		var err error
		if prof, err = os.Create(o.harnessProf); err != nil {
			fatalf("%v", err)
		}
		if err := pprof.StartCPUProfile(prof); err != nil {
			fatalf("%v", err)
		}
	}
	err := run(context.Background(), &o)
	if prof != nil {
		pprof.StopCPUProfile()
		if cerr := prof.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("harness CPU profile: %w", cerr)
		}
	}
	if err != nil {
		fatalf("%v", err)
	}
}

func fatalf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "bench-load: "+format+"\n", a...)
	os.Exit(1)
}

// storeRun is one store's figures.
type storeRun struct {
	name    string
	enroll  *phase
	closed  []*phase
	half    *phase
	rssKiB  int
	skipped string
	// countsSessions: the phases say how many database sessions opened.
	countsSessions bool
}

func (s *storeRun) best() *phase {
	var b *phase
	for _, p := range s.closed {
		if b == nil || p.rate() > b.rate() {
			b = p
		}
	}
	return b
}

func run(ctx context.Context, o *options) error {
	if _, err := os.Stat(o.plugin); err != nil {
		return fmt.Errorf("plugin binary: %w (run make build, or pass -plugin)", err)
	}
	dir, err := os.MkdirTemp("", "tpmid-bench-load-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	pluginPath := o.plugin
	if o.cpuprofile != "" {
		if pluginPath, err = buildProfilingPlugin(dir); err != nil {
			return err
		}
		if err := os.MkdirAll(o.cpuprofile, 0o755); err != nil {
			return err
		}
	}

	t0 := time.Now()
	rd, err := realdata.Find()
	if err != nil {
		return fmt.Errorf("real evidence folder (set %s): %w", realdata.EnvVar, err)
	}
	logBytes, err := os.ReadFile(filepath.Join(rd, realLog))
	if err != nil {
		return err
	}
	boot, err := softagent.NewBoot(logBytes)
	if err != nil {
		return err
	}
	ca, err := testca.New("tpmid bench-load EK CA")
	if err != nil {
		return err
	}
	bundle := filepath.Join(dir, "ek-ca.pem")
	if err := os.WriteFile(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), 0o644); err != nil {
		return err
	}
	attesters, err := makeAttesters(ca, boot, o.attesters)
	if err != nil {
		return err
	}
	fmt.Printf("tpmid bench-load: %s, %d CPUs (GOMAXPROCS %d), %s\n", runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version())
	fmt.Printf("plugin %s; %d software TPMs (ECC P-256 EKs, test CA), event log %s (%d bytes); prepared in %s\n",
		pluginPath, len(attesters), filepath.Base(realLog), len(logBytes), time.Since(t0).Round(time.Millisecond))
	fmt.Printf("phases of %s; closed loop at %v in flight; open loop at half the best closed-loop rate\n", o.duration, o.concurrency)
	fmt.Printf("load average before: %s (other processes share these cores: the figures are for this machine as it was)\n\n", loadAvg())

	var runs []*storeRun
	for _, name := range strings.Split(o.stores, ",") {
		var sr *storeRun
		switch strings.TrimSpace(name) {
		case "sqlite":
			sr, err = measureStore(ctx, o, pluginPath, "SQLite", filepath.Join(dir, "tpmid.db"), bundle, attesters, nil, "")
		case "postgres":
			sr, err = measurePostgres(ctx, o, pluginPath, bundle, attesters)
		case "sqlite-profile":
			path := filepath.Join(dir, "tpmid-profile.db")
			if err = assignProfile(ctx, path, logBytes, attesters); err != nil {
				return err
			}
			sr, err = measureStore(ctx, o, pluginPath, "SQLite + profile", path, bundle, attesters, nil, "")
		case "sqlite-ca":
			caDir := filepath.Join(dir, "ak-ca")
			if _, err = issuer.Init(ctx, issuer.InitOptions{Dir: caDir, Name: "tpmid bench-load AK CA"}); err != nil {
				return fmt.Errorf("AK CA: %w", err)
			}
			sr, err = measureStore(ctx, o, pluginPath, "SQLite + CA", filepath.Join(dir, "tpmid-ca.db"), bundle, attesters, nil, caDir)
		default:
			return fmt.Errorf("-stores: unknown store %q (sqlite, postgres, sqlite-profile, sqlite-ca)", name)
		}
		if err != nil {
			return err
		}
		runs = append(runs, sr)
		report(sr)
	}
	summary(runs)
	fmt.Printf("load average after: %s\n", loadAvg())
	return nil
}

// assignProfile makes the SQLite store at path hold a reference profile
// captured from the attesters' log (sha256 PCRs 0-7, as the plugin quotes)
// and assigns it to every attester's hostname, as an operator who appraises
// the fleet's boots would: every attestation is then judged by it.
func assignProfile(ctx context.Context, path string, logBytes []byte, attesters []*softagent.Attester) error {
	l, err := eventlog.Parse(logBytes)
	if err != nil {
		return err
	}
	p, err := profile.Capture(l, "bench-fleet", pcrs.SHA256, []int{0, 1, 2, 3, 4, 5, 6, 7})
	if err != nil {
		return fmt.Errorf("capturing the profile: %w", err)
	}
	body, err := json.Marshal(p)
	if err != nil {
		return err
	}
	st, err := store.OpenSQLite(ctx, path)
	if err != nil {
		return err
	}
	defer st.Close()
	return st.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.PutProfile(ctx, store.Profile{Name: "bench-fleet", Body: body}); err != nil {
			return err
		}
		for _, a := range attesters {
			if err := tx.Assign(ctx, store.Assignment{Profile: "bench-fleet", Host: a.Hostname}); err != nil {
				return err
			}
		}
		return nil
	})
}

// loadAvg is /proc/loadavg's 1, 5 and 15 minute figures.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// makeAttesters makes n software TPMs on every core.
func makeAttesters(ca *testca.CA, boot *softagent.Boot, n int) ([]*softagent.Attester, error) {
	out := make([]*softagent.Attester, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	workers := runtime.NumCPU()
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				out[i], errs[i] = softagent.New(ca, boot, fmt.Sprintf("load-%05d.bench.example", i))
			}
		})
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// pluginData is the server plugin's configuration, as in a spire-server
// config (conf/server.conf): the EK roots, the sha256 bank's PCRs 0-7 with
// the event log required, tofu enrollment, the store, and the AK CA when
// caDir is set.
func pluginData(bundle, store, caDir string) string {
	ca := ""
	if caDir != "" {
		ca = fmt.Sprintf("ca_dir = %q\n", caDir)
	}
	return ca + fmt.Sprintf(`ek_ca_bundle = %q
ek_policy = "cert"
pcr_banks = ["sha256"]
pcrs = [0, 1, 2, 3, 4, 5, 6, 7]
require_event_log = true
evidence_timeout = "60s"
store = %q
enrollment = "tofu"
server_name = "bench-load"
`, bundle, store)
}

// measureStore starts the plugin on store and runs every phase.
//
// sessions, when not nil, counts the database sessions opened so far
// (PostgreSQL's pg_stat_database.sessions for the bench database): a pool
// that closes and reopens connections under load shows there.
//
// caDir, when set, is an AK CA for the plugin's ca_dir: the first
// attestations then carry the delivery step, and every later one takes the
// fast path.
func measureStore(ctx context.Context, o *options, pluginPath, name, store, bundle string, attesters []*softagent.Attester, sessions func() int64, caDir string) (*storeRun, error) {
	if caDir != "" {
		for _, a := range attesters {
			if a.HasAKCert() {
				return nil, fmt.Errorf("%s: the attesters already hold AK certificates (list sqlite-ca last in -stores)", name)
			}
		}
	}
	var env []string
	if o.cpuprofile != "" {
		env = append(env, profileEnvVar+"="+filepath.Join(o.cpuprofile, strings.ToLower(name)+".pprof"))
	}
	p, err := startPlugin(ctx, pluginPath, env)
	if err != nil {
		return nil, err
	}
	defer p.stop(ctx)
	if err := p.configure(ctx, trustDomain, pluginData(bundle, store, caDir)); err != nil {
		return nil, fmt.Errorf("%s: Configure: %w", name, err)
	}
	sr := &storeRun{name: name, countsSessions: sessions != nil}
	measure := func(phaseName string, pid int, load func(*recorder)) *phase {
		var s0 int64
		if sessions != nil {
			s0 = sessions()
		}
		ph := measure(phaseName, pid, load)
		if sessions != nil {
			ph.sessions = sessions() - s0
		}
		return ph
	}
	maxConc := o.concurrency[0]
	for _, c := range o.concurrency {
		maxConc = max(maxConc, c)
	}
	fmt.Printf("== %s: enrolling %d hosts (first attestation each, %d in flight)\n", name, len(attesters), maxConc)
	sr.enroll = measure("enroll (new hosts)", p.pid(), everyOnce(ctx, p.na, attesters, maxConc))
	sr.enroll.concurrency = maxConc
	if sr.enroll.failed > 0 {
		return nil, fmt.Errorf("%s: %d of %d first attestations failed, first: %s", name, sr.enroll.failed, len(attesters), sr.enroll.firstErr)
	}
	pl := newPool(attesters)
	for _, c := range o.concurrency {
		fmt.Printf("== %s: closed loop, %d in flight, %s\n", name, c, o.duration)
		ph := measure(fmt.Sprintf("closed loop %d in flight", c), p.pid(), closedLoop(ctx, p.na, pl, c, o.duration))
		ph.concurrency = c
		sr.closed = append(sr.closed, ph)
	}
	rate := sr.best().rate() / 2
	fmt.Printf("== %s: open loop at %.0f/s, %s\n", name, rate, o.duration)
	sr.half = measure(fmt.Sprintf("open loop %.0f/s (half)", rate), p.pid(), openLoop(ctx, p.na, pl, rate, o.duration))
	sr.half.target = rate
	if sr.rssKiB, err = peakRSS(p.pid()); err != nil {
		return nil, err
	}
	return sr, nil
}

// measurePostgres creates a fresh database, measures, and drops it. An
// unreachable server skips PostgreSQL with the reason.
func measurePostgres(ctx context.Context, o *options, pluginPath, bundle string, attesters []*softagent.Attester) (*storeRun, error) {
	if o.postgres == "" {
		return &storeRun{name: "PostgreSQL", skipped: "-postgres is empty"}, nil
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	admin, err := pgx.Connect(cctx, o.postgres)
	if err != nil {
		return &storeRun{name: "PostgreSQL", skipped: fmt.Sprintf("cannot reach %s: %v", redact(o.postgres), err)}, nil
	}
	defer admin.Close(ctx)
	db := fmt.Sprintf("tpmid_bench_load_%d", time.Now().UnixNano())
	if _, err := admin.Exec(cctx, "CREATE DATABASE "+db); err != nil {
		return &storeRun{name: "PostgreSQL", skipped: fmt.Sprintf("CREATE DATABASE on %s: %v", redact(o.postgres), err)}, nil
	}
	defer func() {
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)"); err != nil {
			fmt.Fprintf(os.Stderr, "bench-load: dropping database %s: %v\n", db, err)
		}
	}()
	cfg, err := pgx.ParseConfig(o.postgres)
	if err != nil {
		return nil, err
	}
	dsn := fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Host, cfg.Port, db)
	sessions := func() int64 {
		var n int64
		// pg_stat_database is updated when a session ends and read from a
		// snapshot per transaction: clear it so each read is fresh.
		_, _ = admin.Exec(ctx, "SELECT pg_stat_clear_snapshot()")
		if err := admin.QueryRow(ctx, "SELECT sessions FROM pg_stat_database WHERE datname = $1", db).Scan(&n); err != nil {
			return 0
		}
		return n
	}
	return measureStore(ctx, o, pluginPath, "PostgreSQL", dsn, bundle, attesters, sessions, "")
}

func redact(dsn string) string {
	if cfg, err := pgx.ParseConfig(dsn); err == nil {
		return fmt.Sprintf("postgres://%s@%s:%d/%s", cfg.User, cfg.Host, cfg.Port, cfg.Database)
	}
	return "(unparsable DSN)"
}

// buildProfilingPlugin builds profplugin, the server plugin with a CPU
// profile around pluginmain.Serve, into dir.
func buildProfilingPlugin(dir string) (string, error) {
	out := filepath.Join(dir, "tpmid-server-plugin-prof")
	cmd := exec.Command("go", "build", "-o", out, "./test/bench/load/profplugin")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building the profiling plugin (run from the module root): %w", err)
	}
	return out, nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d.Microseconds())/1000) }

// report prints one store's phases.
func report(sr *storeRun) {
	if sr.skipped != "" {
		fmt.Printf("\n%s: skipped: %s\n\n", sr.name, sr.skipped)
		return
	}
	fmt.Printf("\n%s store\n", sr.name)
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "phase\tok\tfailed\tatt/s\tp50 ms\tp99 ms\tplugin CPU\tharness CPU\tpostgres CPU\tothers' CPU\tharness share\tplugin µs CPU/att\t")
	for _, p := range append(append([]*phase{sr.enroll}, sr.closed...), sr.half) {
		cores := func(d time.Duration) string { return fmt.Sprintf("%.2f cores", d.Seconds()/p.wall.Seconds()) }
		share := 0.0
		if t := p.harnessCPU + p.pluginCPU; t > 0 {
			share = 100 * p.harnessCPU.Seconds() / t.Seconds()
		}
		per := 0.0
		if p.ok > 0 {
			per = float64(p.pluginCPU.Microseconds()) / float64(p.ok)
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%.0f%%\t%.0f\t\n", p.name, p.ok, p.failed, p.rate(),
			ms(p.percentile(0.50)), ms(p.percentile(0.99)), cores(p.pluginCPU), cores(p.harnessCPU), cores(p.postgresCPU), cores(p.othersCPU()), share, per)
	}
	w.Flush()
	for _, p := range append(append([]*phase{sr.enroll}, sr.closed...), sr.half) {
		if len(p.paths) > 1 || p.paths["full"] != p.ok {
			fmt.Printf("  %s: paths %s\n", p.name, pathCounts(p.paths))
		}
		if sr.countsSessions {
			fmt.Printf("  %s: %d database sessions opened for %d attestations\n", p.name, p.sessions, p.ok+p.failed)
		}
		if p.failed > 0 {
			fmt.Printf("  %s: %d failed, first: %s\n", p.name, p.failed, p.firstErr)
		}
	}
	fmt.Printf("plugin peak RSS (VmHWM): %.1f MiB; postgres CPU is every PostgreSQL server process's (whoever it served); others' CPU is the rest of the machine, postgres included\n\n", float64(sr.rssKiB)/1024)
}

// pathCounts is "fast 812, full+delivery 3" in a fixed order.
func pathCounts(m map[string]int) string {
	var out []string
	for _, k := range []string{"full", "full+delivery", "fast", "fast+delivery"} {
		if m[k] > 0 {
			out = append(out, fmt.Sprintf("%s %d", k, m[k]))
		}
	}
	return strings.Join(out, ", ")
}

// summary weighs the figures against the goals.
func summary(runs []*storeRun) {
	var sqlite, pg, withCA, withProfile *storeRun
	for _, r := range runs {
		switch {
		case r.skipped != "":
		case r.name == "SQLite + CA":
			withCA = r
		case r.name == "SQLite + profile":
			withProfile = r
		case r.name == "SQLite":
			sqlite = r
		case r.name == "PostgreSQL":
			pg = r
		}
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	fmt.Println("Goals (issue 11), on this machine, the harness sharing its cores with the plugin:")
	if sqlite != nil {
		b := sqlite.best()
		perAtt := b.pluginCPU.Seconds() / float64(max(b.ok, 1))
		fmt.Printf("  >= %d full attestations/s, SQLite, %d cores: %.0f/s at %d in flight: %s (the plugin spent %.0f µs CPU per attestation: %.0f/s if it had all %d cores)\n",
			goalRate, runtime.NumCPU(), b.rate(), b.concurrency, verdict(b.rate() >= goalRate), perAtt*1e6, float64(runtime.NumCPU())/perAtt, runtime.NumCPU())
		fmt.Printf("  p99 < %s at half load, SQLite: %s ms: %s\n", goalHalfP99, ms(sqlite.half.percentile(0.99)), verdict(sqlite.half.failed == 0 && sqlite.half.percentile(0.99) < goalHalfP99))
	}
	if pg != nil {
		fmt.Printf("  p99 < %s at half load, PostgreSQL: %s ms: %s\n", goalHalfP99, ms(pg.half.percentile(0.99)), verdict(pg.half.failed == 0 && pg.half.percentile(0.99) < goalHalfP99))
	}
	if sqlite != nil && pg != nil {
		r := sqlite.best().rate() / pg.best().rate()
		fmt.Printf("  PostgreSQL within %.1fx of SQLite: SQLite/PostgreSQL = %.2f: %s\n", goalPGRatio, r, verdict(r <= goalPGRatio))
	}
	if withProfile != nil {
		b := withProfile.best()
		fmt.Printf("With a reference profile assigned to every host (SQLite), no goal set: %.0f/s at %d in flight (%.0f µs plugin CPU each), p99 %s ms at half load\n",
			b.rate(), b.concurrency, b.pluginCPU.Seconds()*1e6/float64(max(b.ok, 1)), ms(withProfile.half.percentile(0.99)))
	}
	if withCA != nil {
		perAtt := func(p *phase) float64 { return p.pluginCPU.Seconds() * 1e6 / float64(max(p.ok, 1)) }
		b := withCA.best()
		fmt.Printf("With the AK CA (SQLite), no goal set: first attestations with the delivery step %.0f/s (%.0f µs plugin CPU each); fast path %.0f/s at %d in flight (%.0f µs each), p99 %s ms at half load\n",
			withCA.enroll.rate(), perAtt(withCA.enroll), b.rate(), b.concurrency, perAtt(b), ms(withCA.half.percentile(0.99)))
	}
}
