// Command spire measures spire-agent start to attested with tpmid (a swtpm
// TPM, real spire-server and spire-agent v1.13.3 with tpmid's plugins and
// its AK CA) against SPIRE's own join_token, on one spire-server, and prints
// every run, the medians and their ratios. Four kinds of agent, interleaved:
//
//   - tpmid, new machine: a new swtpm per run (a new EK, hence a new agent
//     ID, as each join_token run is a new agent) and a fresh data directory,
//     so the agent plugin makes its SRK and AK and the server does the full
//     attestation (EK certificate, TPM2_MakeCredential, quote, event log)
//     and the CA's delivery step (the AK certificate, one more round trip);
//   - tpmid, known machine: one swtpm whose plugin data_dir is kept across
//     runs, as a machine's disk keeps it, and a fresh spire-agent data
//     directory (no SVID), as when an agent re-attests after its SVID
//     expired or it was evicted: the fast path (the AK certificate instead
//     of TPM2_ActivateCredential, 4 TPM commands). A run that does not
//     take the fast path fails the harness;
//   - floor: an external NodeAttestor pair that does nothing (package
//     floor: one random payload, no key), built with the same flags as
//     tpmid's plugins: what SPIRE's external plugin model costs by itself
//     (plugin_checksum, exec, go-plugin handshake, the SDK's Init,
//     Configure, one stream);
//   - join_token: SPIRE's built-in attestor, a new token per run.
//
// The time is from starting the spire-agent process to "Node attestation
// was successful" in its log (internal/demo polls the log every 10 ms, for
// every kind alike). One run of each, not counted, warms the caches first
// (and gives the known machine its AK certificate).
//
// spire-server lets each client IP attest once a second (the per-IP
// AttestAgent limit, server.ratelimit.attestation, on by default: SPIRE
// v1.13.3 pkg/server/api/limits AttestLimitPerIP = 1). Every agent here
// connects from 127.0.0.1, so a run started within a second of the previous
// attestation waits out the rest of that second inside AttestAgent,
// whatever its attestor. The server keeps SPIRE's default, and each run's
// clock starts only once a second and a margin have passed since the
// previous attestation (limiterGap), so no run pays for another's.
//
//	make bench-spire
//	CGO_ENABLED=1 go run -tags tpmsimulator ./test/bench/spire -n 10
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tpmid/tpmid/internal/demo"
	"github.com/tpmid/tpmid/test/bench/spire/floor"
)

// goalRatio: tpmid's median within this factor of join_token's (issue 11).
const goalRatio = 1.3

// limiterGap is how long after an attestation the next run starts: SPIRE's
// per-IP attestation limit allows one a second.
const limiterGap = 1100 * time.Millisecond

func main() { os.Exit(run()) }

// kind is one kind of agent: how to run one, and what its runs gave.
type kind struct {
	name    string
	attest  func(run int) (*demo.Attestation, error)
	times   []time.Duration
	phases  []phases
	tpmCmds []string
}

func run() int {
	n := flag.Int("n", 10, "attestations of each kind")
	logs := flag.String("logs", "", "folder for every config and log (default: a temporary folder, removed unless the run fails)")
	level := flag.String("log-level", "DEBUG", "spire-server and spire-agent log level, the same for every kind: DEBUG (the tpmid agent plugin logs its TPM time) or INFO (the known machine's fast path is checked on the server's Info line)")
	ak := flag.String("ak", "", "tpmid ak_algorithm (ecdsa or rsa; default the plugin's)")
	flag.Parse()

	if l := strings.ToUpper(*level); l != "DEBUG" && l != "INFO" {
		return fail(fmt.Errorf("-log-level %q: want DEBUG or INFO", *level))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	logDir, keep := *logs, *logs != ""
	if logDir == "" {
		d, err := os.MkdirTemp("", "tpmid-bench-spire-")
		if err != nil {
			return fail(err)
		}
		logDir = d
	}
	ok := false
	defer func() {
		if !keep && ok {
			os.RemoveAll(logDir)
		} else {
			fmt.Printf("logs: %s\n", logDir)
		}
	}()

	env, err := demo.New(ctx, demo.Config{LogDir: logDir, BuildSPIRE: true})
	if err != nil {
		return fail(err)
	}
	defer env.Close()
	floorAgent, floorAgentSum, floorServer, floorServerSum, err := buildFloor(ctx, logDir)
	if err != nil {
		return fail(err)
	}
	caDir := filepath.Join(logDir, "tpmid-ca")
	if _, err := demo.InitCA(ctx, caDir); err != nil {
		return fail(fmt.Errorf("tpmid ca init: %w", err))
	}
	// One EK CA for every node, so that the server trusts each new swtpm.
	nodeOpts := demo.NodeOptions{Boot: demo.BootOptions{SecureBoot: true}, CADir: filepath.Join(logDir, "ek-ca")}
	known, err := env.NewNode(ctx, "known", nodeOpts)
	if err != nil {
		return fail(err)
	}
	srv, err := env.StartServerWithJoinToken(ctx, "server", demo.ServerOptions{
		EKCABundle: known.CABundle, LogLevel: *level, Store: filepath.Join(logDir, "tpmid.db"),
		ExtraPluginData: fmt.Sprintf("        ca_dir = %q", caDir),
		ExtraNodeAttestors: fmt.Sprintf("    NodeAttestor %q {\n        plugin_cmd = %q\n        plugin_checksum = %q\n        plugin_data {}\n    }\n",
			floor.Name, floorServer, floorServerSum),
	})
	if err != nil {
		return fail(err)
	}

	agentOpts := demo.AgentOptions{LogLevel: *level, AKAlgorithm: *ak}
	newMachine := &kind{name: "tpmid, new machine", attest: func(run int) (*demo.Attestation, error) {
		// Manufactured before the clock starts: not part of the time.
		node, err := env.NewNode(ctx, fmt.Sprintf("node-%d", run), nodeOpts)
		if err != nil {
			return nil, err
		}
		return env.AttestAs(ctx, srv, node, fmt.Sprintf("tpmid-new-%d", run), agentOpts)
	}}
	knownOpts := agentOpts
	knownOpts.PluginDataDir = filepath.Join(logDir, "known-tpmid-data")
	warm := true
	knownMachine := &kind{name: "tpmid, known machine", attest: func(run int) (*demo.Attestation, error) {
		// The server plugin logs every admission at Info with fast_path;
		// runs are sequential, so one more fast_path=true line is this run's.
		fast := strings.Count(srv.Log(), "fast_path=true")
		a, err := env.AttestAs(ctx, srv, known, fmt.Sprintf("tpmid-known-%d", run), knownOpts)
		if err == nil && !warm && strings.Count(srv.Log(), "fast_path=true") != fast+1 {
			err = fmt.Errorf("the server did not admit the known machine on the fast path (see %s and the server log)", a.Agent.LogPath)
		}
		return a, err
	}}
	floorKind := &kind{name: "floor (external no-op)", attest: func(run int) (*demo.Attestation, error) {
		return env.AttestExternal(ctx, srv, fmt.Sprintf("floor-agent-%d", run), floor.Name, floorAgent, floorAgentSum, *level, 0)
	}}
	joinToken := &kind{name: "join_token", attest: func(run int) (*demo.Attestation, error) {
		return env.AttestJoinToken(ctx, srv, fmt.Sprintf("join-token-agent-%d", run), *level, 0)
	}}
	kinds := []*kind{newMachine, knownMachine, floorKind, joinToken}

	runs := 0
	var last time.Time // when the previous attestation was done
	once := func(k *kind, counted bool) error {
		runs++
		if d := time.Until(last.Add(limiterGap)); d > 0 {
			time.Sleep(d)
		}
		a, err := k.attest(runs)
		last = time.Now()
		if err != nil {
			return fmt.Errorf("%s: %w", k.name, err)
		}
		a.Agent.Stop()
		if counted {
			k.times = append(k.times, a.Duration)
			k.phases = append(k.phases, agentPhases(a.Agent.Log()))
			k.tpmCmds = append(k.tpmCmds, a.TPMCommands)
		}
		return nil
	}

	fmt.Printf("tpmid bench-spire: spire-server + spire-agent %s on one machine, tpmid with its AK CA, %d of each kind, interleaved\n", demo.SPIREVersion, *n)
	fmt.Printf("each run starts %s after the previous attestation (spire-server's per-IP attestation limit, 1/s, stays on)\n", limiterGap)
	for _, k := range kinds {
		if err := once(k, false); err != nil {
			return fail(fmt.Errorf("warm-up: %w", err))
		}
	}
	warm = false
	for i := range *n {
		line := fmt.Sprintf("  run %2d:", i+1)
		for _, k := range kinds {
			if err := once(k, true); err != nil {
				return fail(fmt.Errorf("run %d: %w", i+1, err))
			}
			line += fmt.Sprintf("  %s %6.1f", shortName(k.name), msf(k.times[len(k.times)-1]))
		}
		fmt.Println(line + " ms")
	}

	mj, mf := median(joinToken.times), median(floorKind.times)
	fmt.Println("medians:")
	for _, k := range kinds {
		m := median(k.times)
		fmt.Printf("  %-24s %7.1f ms   x%.2f join_token   x%.2f floor", k.name, msf(m), ratio(m, mj), ratio(m, mf))
		if c := tpmCommands(k.tpmCmds); c != "" {
			fmt.Printf("   TPM commands %s", c)
		}
		fmt.Println()
	}
	report(kinds)
	for _, k := range []*kind{newMachine, knownMachine} {
		verdict := "met"
		if ratio(median(k.times), mj) > goalRatio {
			verdict = "NOT met"
		}
		fmt.Printf("goal: %s within %.1fx of join_token (median of %d, interleaved): %s\n", k.name, goalRatio, *n, verdict)
	}
	fmt.Printf("SPIRE's external plugin floor is x%.2f join_token; tpmid's own share is what it takes beyond the floor: %.1f ms (new machine), %.1f ms (known machine)\n",
		ratio(mf, mj), msf(median(newMachine.times)-mf), msf(median(knownMachine.times)-mf))
	ok = true
	return 0
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }

// shortName is a kind's column label in the per-run lines.
func shortName(name string) string {
	switch name {
	case "tpmid, new machine":
		return "new"
	case "tpmid, known machine":
		return "known"
	case "floor (external no-op)":
		return "floor"
	}
	return name
}

// tpmCommands summarises the TPM command counts the tpmid agent plugin
// logged ("8", or "8-10" when runs differ); "" for kinds without a TPM.
func tpmCommands(cs []string) string {
	var set []string
	for _, c := range cs {
		if c != "" && !slices.Contains(set, c) {
			set = append(set, c)
		}
	}
	slices.Sort(set)
	return strings.Join(set, ", ")
}

// buildFloor builds the no-op pair into logDir/floor-bin with the flags
// demo.BuildPlugins uses for tpmid's (so the binaries hash and load alike)
// and returns each path and SHA-256.
func buildFloor(ctx context.Context, logDir string) (agent, agentSum, server, serverSum string, err error) {
	root, err := demo.RepoRoot()
	if err != nil {
		return "", "", "", "", err
	}
	out := filepath.Join(logDir, "floor-bin")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out+"/",
		"./test/bench/spire/floor/agent", "./test/bench/spire/floor/server")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", "", "", "", fmt.Errorf("building the floor plugins: %v: %s", err, b)
	}
	agent, server = filepath.Join(out, "agent"), filepath.Join(out, "server")
	if agentSum, err = demo.FileSHA256(agent); err != nil {
		return "", "", "", "", err
	}
	if serverSum, err = demo.FileSHA256(server); err != nil {
		return "", "", "", "", err
	}
	return agent, agentSum, server, serverSum, nil
}

func msf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fail(err error) int {
	fmt.Fprintln(os.Stderr, "bench-spire:", err)
	return 1
}

// phases is what an agent's log tells of where its time went, from the
// harness's start line (RFC 3339, nanoseconds) and spire-agent's own
// timestamps (log_format "text": nanoseconds); zero when absent.
type phases struct {
	process  time.Duration // process start to "Starting agent"
	plugins  time.Duration // "Starting agent" to node attestation starting: the catalog, for tpmid plugin_checksum, exec, go-plugin handshake, Configure
	attest   time.Duration // node attestation starting to "Node attestation was successful"
	pluginUp time.Duration // start to the tpmid agent plugin's first log line
	busy     time.Duration // the tpmid agent plugin's plugin_busy_ms
}

var (
	startRe      = regexp.MustCompile(`(?m)^### (\S+): `)
	lineTimeRe   = regexp.MustCompile(`^time="([^"]+)"`)
	pluginTSRe   = regexp.MustCompile(`subsystem_name=tpm\.tpmid-agent-plugin[^\n]*timestamp="?([0-9TZ:.\-]+)"?`)
	pluginBusyRe = regexp.MustCompile(`plugin_busy_ms=([0-9.]+)`)
)

// agentPhases reads an agent's log.
func agentPhases(log string) phases {
	var p phases
	m := startRe.FindStringSubmatch(log)
	if m == nil {
		return p
	}
	start, err := time.Parse(time.RFC3339Nano, strings.TrimSuffix(m[1], ":"))
	if err != nil {
		return p
	}
	// The first line with each message.
	at := func(msg string) time.Time {
		for _, l := range strings.Split(log, "\n") {
			if !strings.Contains(l, msg) {
				continue
			}
			if m := lineTimeRe.FindStringSubmatch(l); m != nil {
				if t, err := time.Parse(time.RFC3339Nano, m[1]); err == nil {
					return t
				}
			}
			return time.Time{}
		}
		return time.Time{}
	}
	span := func(a, b time.Time) time.Duration {
		if a.IsZero() || b.IsZero() || b.Before(a) {
			return 0
		}
		return b.Sub(a)
	}
	agent, nodeAtt, done := at(`msg="Starting agent"`), at(`Starting node attestation"`), at(`msg="Node attestation was successful"`)
	p.process, p.plugins, p.attest = span(start, agent), span(agent, nodeAtt), span(nodeAtt, done)
	if m := pluginTSRe.FindStringSubmatch(log); m != nil {
		if t, err := time.Parse("2006-01-02T15:04:05.000Z07:00", m[1]); err == nil && t.After(start) {
			p.pluginUp = t.Sub(start)
		}
	}
	if m := pluginBusyRe.FindStringSubmatch(log); m != nil {
		if ms, err := strconv.ParseFloat(m[1], 64); err == nil {
			p.busy = time.Duration(ms * float64(time.Millisecond))
		}
	}
	return p
}

// report prints the medians of each phase for every kind.
func report(kinds []*kind) {
	med := func(ps []phases, f func(phases) time.Duration) string {
		var ds []time.Duration
		for _, p := range ps {
			if d := f(p); d > 0 {
				ds = append(ds, d)
			}
		}
		if len(ds) == 0 {
			return "      -"
		}
		return fmt.Sprintf("%7.1f", msf(median(ds)))
	}
	fmt.Println("where the time goes (medians from the agents' own logs, ms):")
	head := fmt.Sprintf("  %-56s", "")
	for _, k := range kinds {
		head += fmt.Sprintf(" %7s", shortName(k.name))
	}
	fmt.Println(head)
	for _, r := range []struct {
		name string
		f    func(phases) time.Duration
	}{
		{"process start to \"Starting agent\"", func(p phases) time.Duration { return p.process }},
		{"to node attestation starting (plugins loaded)", func(p phases) time.Duration { return p.plugins }},
		{"node attestation, to \"Node attestation was successful\"", func(p phases) time.Duration { return p.attest }},
		{"tpmid: start to the agent plugin's first log line", func(p phases) time.Duration { return p.pluginUp }},
		{"tpmid: its TPM work (plugin_busy_ms)", func(p phases) time.Duration { return p.busy }},
	} {
		line := fmt.Sprintf("  %-56s", r.name)
		for _, k := range kinds {
			line += " " + med(k.phases, r.f)
		}
		fmt.Println(line)
	}
}
