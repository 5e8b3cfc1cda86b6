// Command spire measures spire-agent start to attested with tpmid (a swtpm
// TPM, real spire-server and spire-agent v1.13.3 with tpmid's plugins)
// against SPIRE's own join_token, on one spire-server that has both
// NodeAttestors, interleaved (tpmid, join_token, tpmid, ...), and prints
// every run, both medians and their ratio.
//
// Every run is a new spire-agent (a fresh data directory: no SVID kept, and
// for tpmid no AK kept, so the agent plugin creates its AK and the server
// does the full attestation: EK certificate, TPM2_MakeCredential, quote,
// event log). The time is from starting the spire-agent process to
// "Node attestation was successful" in its log (internal/demo polls the log
// every 10 ms, for both kinds alike). One run of each, not counted, warms
// the caches first.
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
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tpmid/tpmid/internal/demo"
)

// goalRatio: tpmid's median within this factor of join_token's (issue 11).
const goalRatio = 1.3

// limiterGap is how long after an attestation the next run starts: SPIRE's
// per-IP attestation limit allows one a second.
const limiterGap = 1100 * time.Millisecond

func main() { os.Exit(run()) }

func run() int {
	n := flag.Int("n", 10, "attestations of each kind")
	logs := flag.String("logs", "", "folder for every config and log (default: a temporary folder, removed unless the run fails)")
	level := flag.String("log-level", "DEBUG", "spire-server and spire-agent log level, the same for both kinds (DEBUG: the tpmid agent plugin logs its TPM time)")
	ak := flag.String("ak", "", "tpmid ak_algorithm (ecdsa or rsa; default the plugin's)")
	sameEK := flag.Bool("same-ek", false, "every tpmid run on one swtpm, so runs after the first re-attest a known agent ID; by default each run gets a new swtpm (a new EK, hence a new agent ID), as each join_token run gets a new token")
	flag.Parse()

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
	// One EK CA for every node, so that the server trusts each new swtpm.
	nodeOpts := demo.NodeOptions{Boot: demo.BootOptions{SecureBoot: true}, CADir: filepath.Join(logDir, "ek-ca")}
	node, err := env.NewNode(ctx, "node", nodeOpts)
	if err != nil {
		return fail(err)
	}
	srv, err := env.StartServerWithJoinToken(ctx, "server", demo.ServerOptions{
		EKCABundle: node.CABundle, LogLevel: *level, Store: filepath.Join(logDir, "tpmid.db"),
	})
	if err != nil {
		return fail(err)
	}

	runs := 0
	var parts, jparts []phases
	var last time.Time // when the previous attestation was done
	pace := func() {
		if d := time.Until(last.Add(limiterGap)); d > 0 {
			time.Sleep(d)
		}
	}
	tpmid := func() (time.Duration, error) {
		runs++
		if !*sameEK && runs > 1 {
			// Manufactured before the clock starts: not part of the time.
			if node, err = env.NewNode(ctx, fmt.Sprintf("node-%d", runs), nodeOpts); err != nil {
				return 0, err
			}
		}
		pace()
		a, err := env.AttestAs(ctx, srv, node, fmt.Sprintf("tpmid-agent-%d", runs), demo.AgentOptions{LogLevel: *level, AKAlgorithm: *ak})
		last = time.Now()
		if err != nil {
			return 0, err
		}
		a.Agent.Stop()
		parts = append(parts, agentPhases(a.Agent.Log()))
		return a.Duration, nil
	}
	joinToken := func() (time.Duration, error) {
		runs++
		pace()
		a, err := env.AttestJoinToken(ctx, srv, fmt.Sprintf("join-token-agent-%d", runs), *level, 0)
		last = time.Now()
		if err != nil {
			return 0, err
		}
		a.Agent.Stop()
		jparts = append(jparts, agentPhases(a.Agent.Log()))
		return a.Duration, nil
	}

	kind := "a new swtpm (new EK, new agent ID) per tpmid run"
	if *sameEK {
		kind = "one swtpm for every tpmid run (re-attestation of a known agent ID)"
	}
	fmt.Printf("tpmid bench-spire: spire-server + spire-agent %s on one machine, %s, %d of each, interleaved\n", demo.SPIREVersion, kind, *n)
	fmt.Printf("each run starts %s after the previous attestation (spire-server's per-IP attestation limit, 1/s, stays on)\n", limiterGap)
	if _, err := tpmid(); err != nil {
		return fail(fmt.Errorf("warm-up (tpmid): %w", err))
	}
	if _, err := joinToken(); err != nil {
		return fail(fmt.Errorf("warm-up (join_token): %w", err))
	}
	var tt, jt []time.Duration
	parts, jparts = nil, nil // not the warm-up's
	for i := range *n {
		d, err := tpmid()
		if err != nil {
			return fail(fmt.Errorf("run %d (tpmid): %w", i+1, err))
		}
		tt = append(tt, d)
		j, err := joinToken()
		if err != nil {
			return fail(fmt.Errorf("run %d (join_token): %w", i+1, err))
		}
		jt = append(jt, j)
		fmt.Printf("  run %2d: tpmid %7.1f ms   join_token %7.1f ms\n", i+1, msf(d), msf(j))
	}
	mt, mj := median(tt), median(jt)
	ratio := float64(mt) / float64(mj)
	fmt.Printf("median: tpmid %.1f ms, join_token %.1f ms, ratio %.2f\n", msf(mt), msf(mj), ratio)
	report(parts, jparts)
	verdict := "met"
	if ratio > goalRatio {
		verdict = "NOT met"
	}
	fmt.Printf("goal: tpmid within %.1fx of join_token (median of %d, interleaved): %s\n", goalRatio, *n, verdict)
	ok = true
	return 0
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

// report prints the medians of each phase for both kinds.
func report(tp, jp []phases) {
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
	fmt.Println("                                                            tpmid  join_token")
	for _, r := range []struct {
		name string
		f    func(phases) time.Duration
	}{
		{"process start to \"Starting agent\"", func(p phases) time.Duration { return p.process }},
		{"to node attestation starting (plugins loaded)", func(p phases) time.Duration { return p.plugins }},
		{"node attestation, to \"Node attestation was successful\"", func(p phases) time.Duration { return p.attest }},
	} {
		fmt.Printf("  %-56s %s %s\n", r.name, med(tp, r.f), med(jp, r.f))
	}
	fmt.Printf("  tpmid: start to the agent plugin's first log line %s; its TPM work (plugin_busy_ms) %s\n",
		strings.TrimSpace(med(tp, func(p phases) time.Duration { return p.pluginUp })), strings.TrimSpace(med(tp, func(p phases) time.Duration { return p.busy })))
}
