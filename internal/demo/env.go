// Package demo is the end-to-end harness shared by `make demo`
// (cmd/tpmid-demo) and the integration tests (test/integration): it builds
// the plugins, finds SPIRE, manufactures software TPMs with swtpm, boots
// them (a measured boot whose event log explains PCRs 0-7), runs a real
// spire-server and spire-agent with tpmid's NodeAttestor, reports what the
// server recorded, and stops everything it started. Every log is kept in
// one folder.
package demo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tpmid/tpmid/internal/swtpm"
	"github.com/tpmid/tpmid/internal/tpmtest"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/common/tpm"
)

// Config configures an Env.
type Config struct {
	// LogDir receives every config, state and log; created if missing.
	LogDir string
	// Root is the checkout; found from the working directory when empty.
	Root string
	// BuildSPIRE runs scripts/ensure-spire.sh when the SPIRE binaries are
	// not cached; otherwise New fails with ErrNoSPIRE.
	BuildSPIRE bool
	// Plugins, when set, are used instead of building them (tests build
	// once per package with BuildPlugins).
	Plugins *Plugins
	// Step, when set, is told when each step starts and how long it took.
	Step func(name string, d time.Duration, err error)
}

// ErrNoSPIRE: the SPIRE binaries are not cached and building was not asked.
var ErrNoSPIRE = errors.New("SPIRE binaries not found")

// Env is one harness run. Close stops everything it started.
type Env struct {
	Root     string
	LogDir   string
	SPIREBin string
	Plugins  *Plugins

	sockDir string
	step    func(string, time.Duration, error)

	mu      sync.Mutex
	closers []func()
	closed  bool
}

// New prepares an Env: the log folder, the plugins (built with go build) and
// the SPIRE binaries.
//
// When a step fails, New stops what it had started and returns the step's
// error (and a nil Env).
func New(ctx context.Context, c Config) (_ *Env, err error) {
	root := c.Root
	if root == "" {
		if root, err = RepoRoot(); err != nil {
			return nil, err
		}
	}
	if c.LogDir == "" {
		return nil, errors.New("demo: Config.LogDir is required")
	}
	logDir, err := filepath.Abs(c.LogDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, err
	}
	// Unix socket paths are limited to 108 bytes: keep them short and apart.
	sockDir, err := os.MkdirTemp("", "tpmid-")
	if err != nil {
		return nil, err
	}
	// e, not the named result: a failed step returns a nil *Env, and e must
	// still be closed.
	e := &Env{Root: root, LogDir: logDir, sockDir: sockDir, step: c.Step}
	e.onClose(func() { os.RemoveAll(sockDir) })
	defer func() {
		if err != nil {
			e.Close()
		}
	}()

	if err := e.Step("ensure SPIRE "+SPIREVersion, func() error {
		if c.BuildSPIRE {
			e.SPIREBin, err = EnsureSPIRE(ctx, root, filepath.Join(logDir, "ensure-spire.log"))
			return err
		}
		if e.SPIREBin, err = FindSPIRE(root); err != nil {
			return fmt.Errorf("%w: %v", ErrNoSPIRE, err)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if c.Plugins != nil {
		e.Plugins = c.Plugins
		return e, nil
	}
	if err := e.Step("build plugins", func() error {
		e.Plugins, err = BuildPlugins(ctx, root, filepath.Join(logDir, "bin"), filepath.Join(logDir, "build.log"))
		return err
	}); err != nil {
		return nil, err
	}
	return e, nil
}

// Step runs fn as a named step and reports its duration.
func (e *Env) Step(name string, fn func() error) error {
	start := time.Now()
	err := fn()
	if e.step != nil {
		e.step(name, time.Since(start), err)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func (e *Env) onClose(f func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closers = append(e.closers, f)
}

// Close stops everything the Env started, newest first. Logs stay.
func (e *Env) Close() {
	if e == nil {
		return
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	cs := e.closers
	e.closers = nil
	e.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
}

// NodeOptions describe a machine: its TPM and its boot.
type NodeOptions struct {
	// ECC makes swtpm create an ECC EK (P-384 on swtpm 0.7) instead of RSA.
	ECC bool
	// RSAKeySize 3072 makes swtpm's RSA EK an RSA-3072 one (TCG template
	// H-6); 0 means 2048.
	RSAKeySize int
	// CADir is the swtpm local CA's directory: nodes sharing it share the
	// EK CA. Empty: a CA of the node's own.
	CADir string
	// Boot is the measured boot.
	Boot BootOptions
}

// Node is a booted machine with a running swtpm.
type Node struct {
	Name         string
	Dir          string
	Device       string // tpm_device for the agent plugin
	EventLogPath string // event_log_path for the agent plugin
	CABundle     string // ek_ca_bundle that trusts this node's EK
	EKHash       string // hex SHA-256 of the EK public key (PKIX DER) the agent will use: the default EK, the P-384 one with ECC
	Boot         *Boot
	swtpm        *swtpm.Instance
}

// NewNode manufactures a swtpm (EK certificate from a local CA), starts it
// and boots it: it extends PCRs 0-7 with a measured boot and writes the event
// log that explains them.
func (e *Env) NewNode(ctx context.Context, name string, o NodeOptions) (*Node, error) {
	dir := filepath.Join(e.LogDir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	n := &Node{Name: name, Dir: dir, EventLogPath: filepath.Join(dir, "binary_bios_measurements")}
	banks := o.Boot.Banks
	if len(banks) == 0 {
		banks = []pcrs.Alg{pcrs.SHA1, pcrs.SHA256}
		o.Boot.Banks = banks
	}
	var bankNames []string
	for _, a := range banks {
		bankNames = append(bankNames, a.String())
	}
	caDir := o.CADir
	if caDir == "" {
		caDir = filepath.Join(dir, "ek-ca")
	}
	state := filepath.Join(dir, "tpmstate")
	kind := "RSA"
	if o.ECC {
		kind = "ECC"
	} else if o.RSAKeySize != 0 {
		kind = fmt.Sprintf("RSA-%d", o.RSAKeySize)
	}
	if err := e.Step(name+": manufacture swtpm ("+kind+" EK, certificate from a local CA)", func() error {
		if err := swtpm.Available(); err != nil {
			return err
		}
		man, err := swtpm.Setup(state, swtpm.Options{ECC: o.ECC, RSAKeySize: o.RSAKeySize, CADir: caDir, Banks: bankNames})
		if err != nil {
			return err
		}
		n.CABundle = man.BundleDir
		return nil
	}); err != nil {
		return nil, err
	}
	if err := e.Step(name+": start swtpm", func() error {
		inst, err := swtpm.Start(ctx, state)
		if err != nil {
			return err
		}
		n.swtpm = inst
		e.onClose(func() { inst.Stop() })
		n.Device = inst.Addr()
		return nil
	}); err != nil {
		return nil, err
	}
	if err := e.Step(name+": measured boot into PCRs 0-7", func() error {
		boot, err := MeasureBoot(o.Boot, filepath.Join(e.SPIREBin, "spire-agent"))
		if err != nil {
			return err
		}
		n.Boot = boot
		if err := os.WriteFile(n.EventLogPath, boot.Log, 0o644); err != nil {
			return err
		}
		t, err := tpm.Open(tpm.Config{Device: n.Device})
		if err != nil {
			return fmt.Errorf("opening %s: %w", n.Device, err)
		}
		defer t.Close()
		for _, x := range boot.Extends {
			if err := tpmtest.Extend(t, x.PCR, x.Digests); err != nil {
				return fmt.Errorf("extending PCR %d: %w", x.PCR, err)
			}
		}
		alg := tpm.EKAuto
		if o.ECC {
			alg = tpm.EKP384 // the EK an ECC node's agent is configured with
		}
		ek, err := t.EK(alg)
		if err != nil {
			return fmt.Errorf("reading the EK: %w", err)
		}
		sum := sha256.Sum256(ek.PublicDER)
		n.EKHash = hex.EncodeToString(sum[:])
		return nil
	}); err != nil {
		return nil, err
	}
	return n, nil
}

// StartServer starts a spire-server named name (its files in LogDir/name)
// with tpmid's NodeAttestor configured by o, and waits until it is healthy.
func (e *Env) StartServer(ctx context.Context, name string, o ServerOptions) (*Server, error) {
	var s *Server
	err := e.Step("start spire-server (healthy)", func() error {
		dir := filepath.Join(e.LogDir, name)
		sockDir := filepath.Join(e.sockDir, name)
		if err := os.MkdirAll(sockDir, 0o700); err != nil {
			return err
		}
		var err error
		s, err = StartServer(ctx, e.SPIREBin, dir, sockDir, filepath.Join(e.LogDir, name+".log"), e.Plugins, o)
		if err != nil {
			return err
		}
		e.onClose(s.Stop)
		return nil
	})
	return s, err
}

// Attest runs a spire-agent (its files in LogDir/<node>-agent) on node
// against srv, waits for the outcome, and leaves the agent running until
// Close. A refusal is returned as a *RefusedError.
func (e *Env) Attest(ctx context.Context, srv *Server, node *Node, o AgentOptions) (*Attestation, error) {
	if o.TPMDevice == "" {
		o.TPMDevice = node.Device
	}
	if o.EventLogPath == "" {
		o.EventLogPath = node.EventLogPath
	}
	name := node.Name + "-agent"
	var a *Attestation
	err := e.Step("start spire-agent on "+node.Name+", wait for attestation", func() error {
		dir := filepath.Join(e.LogDir, name)
		var err error
		a, err = RunAgent(ctx, e.SPIREBin, dir, e.sockDir, filepath.Join(e.LogDir, name+".log"), srv, e.Plugins, o)
		if err != nil {
			return err
		}
		e.onClose(a.Agent.Stop)
		return nil
	})
	return a, err
}

// Selector returns the value of the first selector "tpm:<key>:..." in sels,
// and whether there was one.
func Selector(sels []string, key string) (string, bool) {
	prefix := PluginName + ":" + key + ":"
	for _, s := range sels {
		if v, ok := strings.CutPrefix(s, prefix); ok {
			return v, true
		}
	}
	return "", false
}
