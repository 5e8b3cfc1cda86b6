// Command tpmid-demo shows tpmid end to end on one machine: it makes a
// software TPM (swtpm) with an EK certificate from a local CA, boots it (a
// measured boot whose event log explains PCRs 0-7), starts a real
// spire-server and spire-agent v1.13.3 with tpmid's "tpm" NodeAttestor, and
// prints the agent's SPIFFE ID and selectors. It stops everything it
// started, also on failure or ctrl-C, and keeps every log in one folder.
//
//	go run ./cmd/tpmid-demo            (or: make demo)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tpmid/tpmid/internal/demo"
)

func main() { os.Exit(run()) }

func run() int {
	var (
		logs       = flag.String("logs", "", "folder for every config, state and log (default demo-logs/<time> in the checkout)")
		secureBoot = flag.Bool("secureboot", true, "measure SecureBoot=1 (false: SecureBoot=0) into PCR7")
		akAlg      = flag.String("ak", "", "ak_algorithm for the agent plugin: ecdsa or rsa (default: the plugin's)")
		ecc        = flag.Bool("ecc", false, "use swtpm's ECC EK, which is P-384 (ek_algorithm = p384)")
		noInstall  = flag.Bool("no-install", false, "do not apt-get install swtpm when it is missing")
	)
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	root, err := demo.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tpmid-demo:", err)
		return 1
	}
	logDir := *logs
	if logDir == "" {
		logDir = filepath.Join(root, "demo-logs", time.Now().Format("20060102-150405"))
	}
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "tpmid-demo:", err)
		return 1
	}
	fmt.Printf("tpmid demo: spire-server + spire-agent %s, tpmid NodeAttestor %q, swtpm\n", demo.SPIREVersion, demo.PluginName)
	fmt.Printf("full logs: %s\n\n", logDir)

	step := func(name string, d time.Duration, err error) {
		mark := "ok"
		if err != nil {
			mark = "FAILED"
		}
		fmt.Printf("  %-6s %7s  %s\n", mark, d.Round(time.Millisecond), name)
	}
	fail := func(err error) int {
		if errors.Is(err, context.Canceled) || ctx.Err() != nil {
			fmt.Println("\ninterrupted: stopping everything")
		} else {
			fmt.Fprintf(os.Stderr, "\ntpmid-demo: %v\n", err)
		}
		fmt.Printf("full logs: %s\n", logDir)
		return 1
	}

	start := time.Now()
	if err := stepRun(step, "check swtpm, swtpm-tools", func() error {
		missing := demo.MissingSwtpm()
		if len(missing) == 0 {
			return nil
		}
		if *noInstall {
			return fmt.Errorf("missing %s: apt-get install swtpm swtpm-tools", strings.Join(missing, ", "))
		}
		fmt.Printf("  ..     installing %s with apt-get\n", strings.Join(demo.SwtpmPackages, " "))
		_, err := demo.InstallSwtpm(ctx, filepath.Join(logDir, "apt.log"))
		return err
	}); err != nil {
		return fail(err)
	}
	if _, err := demo.FindSPIRE(root); err != nil {
		if demo.MissingCC() {
			if err := stepRun(step, "install a C compiler (SPIRE's sqlite3 driver uses cgo)", func() error {
				if *noInstall {
					return fmt.Errorf("no C compiler: apt-get install %s", strings.Join(demo.CCPackages, " "))
				}
				return demo.InstallPackages(ctx, filepath.Join(logDir, "apt.log"), demo.CCPackages...)
			}); err != nil {
				return fail(err)
			}
		}
		fmt.Println("  ..     building SPIRE " + demo.SPIREVersion + " into .cache (cold: about 10 minutes, once)")
	}
	env, err := demo.New(ctx, demo.Config{LogDir: logDir, Root: root, BuildSPIRE: true, Step: step})
	if err != nil {
		return fail(err)
	}
	defer func() {
		t := time.Now()
		env.Close()
		fmt.Printf("  %-6s %7s  %s\n", "ok", time.Since(t).Round(time.Millisecond), "stop spire-agent, spire-server, swtpm")
	}()

	node, err := env.NewNode(ctx, "node1", demo.NodeOptions{ECC: *ecc, Boot: demo.BootOptions{SecureBoot: *secureBoot}})
	if err != nil {
		return fail(err)
	}
	fmt.Printf("         boot measured %s (PCR4) and SecureBoot=%v (PCR7): %d events\n", node.Boot.Kernel, *secureBoot, len(node.Boot.Events))
	// The operator's side: enroll the machine and approve its boot, in
	// the store the server plugin keeps (SQLite, the default backend).
	storePath := filepath.Join(logDir, "tpmid.db")
	var enrolled *demo.Enrollment
	if err := stepRun(step, "enroll node1 (tpmid store), capture its boot as a profile", func() error {
		var err error
		enrolled, err = demo.Enroll(ctx, storePath, node, "node1.example.org", "demo", "demo-boot")
		return err
	}); err != nil {
		return fail(err)
	}
	fmt.Printf("         host %s in group %s, profile %s, enrollment = required\n", enrolled.Hostname, enrolled.Group, enrolled.Profile)
	caDir := filepath.Join(logDir, "tpmid-ca")
	if err := stepRun(step, "tpmid ca init (root and intermediate, softkms keys)", func() error {
		_, err := demo.InitCA(ctx, caDir)
		return err
	}); err != nil {
		return fail(err)
	}
	srv, err := env.StartServer(ctx, "spire-server", demo.ServerOptions{EKCABundle: node.CABundle, Store: storePath, Enrollment: "required",
		ExtraPluginData: fmt.Sprintf("        ca_dir = %q", caDir)})
	if err != nil {
		return fail(err)
	}
	ao := demo.AgentOptions{AKAlgorithm: *akAlg}
	if *ecc {
		ao.EKAlgorithm = "p384" // swtpm 0.7 makes its ECC EK in the TCG high range
	}
	a, err := env.Attest(ctx, srv, node, ao)
	if err != nil {
		var r *demo.RefusedError
		if errors.As(err, &r) {
			fmt.Printf("\nspire-server refused the agent:\n  %s\n", r.Line)
		}
		return fail(err)
	}

	fmt.Println()
	fmt.Printf("agent SPIFFE ID: %s\n", a.SPIFFEID)
	fmt.Printf("selectors: %s\n", strings.Join(a.Selectors, " "))
	fmt.Printf("spire-agent start to attested: %s\n", a.Duration.Round(time.Millisecond))
	if a.TPMCommands != "" {
		fmt.Printf("TPM commands in the attestation: %s\n", a.TPMCommands)
	}
	alg := *akAlg
	if alg == "" {
		alg = "ecdsa"
	}
	chainPath := filepath.Join(logDir, "node1-agent", "data", "tpmid", "ak-"+alg+".chain.pem")
	if summary, err := demo.DescribeAKCert(ctx, chainPath, caDir); err != nil {
		fmt.Printf("AK certificate: none (%v)\n", err)
	} else {
		fmt.Printf("AK certificate: %s\n  %s\n", chainPath, summary)
	}
	fmt.Printf("total: %s\n", time.Since(start).Round(100*time.Millisecond))
	fmt.Printf("full logs: %s\n\n", logDir)
	return 0
}

func stepRun(step func(string, time.Duration, error), name string, fn func() error) error {
	t := time.Now()
	err := fn()
	step(name, time.Since(t), err)
	return err
}
