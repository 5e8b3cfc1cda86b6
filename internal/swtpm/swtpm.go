// Package swtpm manufactures and runs software TPMs (swtpm, libtpms) for
// tests and demos: EK certificates signed by a local CA whose root and
// intermediate are returned as a bundle, and a swtpm process serving raw
// TPM commands on a loopback TCP port or a unix socket, which
// pkg/common/tpm opens as tcp://127.0.0.1:P or unix:///path.
//
// Never use these TPMs as a root of trust: the local CA's private keys sit
// in plain files next to the bundle.
package swtpm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNotInstalled means swtpm or swtpm_setup is not on PATH.
var ErrNotInstalled = errors.New("swtpm is not installed (apt-get install -y swtpm swtpm-tools)")

// Available reports whether swtpm and swtpm_setup (and swtpm_localca,
// which swtpm_setup runs) are on PATH.
func Available() error {
	for _, p := range []string{"swtpm", "swtpm_setup", "swtpm_localca"} {
		if _, err := exec.LookPath(p); err != nil {
			return fmt.Errorf("%w: %s not found on PATH", ErrNotInstalled, p)
		}
	}
	return nil
}

// Options shape a manufactured TPM.
type Options struct {
	// ECC makes swtpm_setup create an ECC storage primary key (--ecc).
	// swtpm 0.7 always creates both an RSA 2048 EK (certificate at NV
	// 0x01c00002) and an ECC P-384 EK (0x01c00016), whatever this says.
	ECC bool
	// CADir holds the local CA (keys, config, serial) and its bundle. Give
	// two TPMs the same CADir to have them share a CA, or different ones
	// so neither trusts the other's. Empty: <stateDir>/ca.
	CADir string
	// RSAKeySize is swtpm_setup --rsa-keysize: 0 (2048), 2048 or 3072. With
	// 3072, swtpm 0.7 makes the RSA EK an RSA-3072 EK of the TCG high range
	// (template H-6, certificate at NV 0x01c0001c, key at 0x8101001c)
	// instead of the RSA-2048 one.
	RSAKeySize int
	// Banks are the PCR banks to activate; empty means sha1 and sha256.
	Banks []string
	// EKCertDir, when set, also gets a DER copy of each EK certificate
	// swtpm_setup writes to NV (swtpm_setup --write-ek-cert-files: with
	// swtpm 0.7, ek-rsa2048.crt and ek-secp384r1.crt).
	EKCertDir string
}

// Manufactured describes a TPM state made by Setup.
type Manufactured struct {
	StateDir string
	CADir    string
	// BundleDir contains only the CA certificates (root.pem and
	// intermediate.pem), suitable for the server plugin's ek_ca_bundle.
	BundleDir string
	// RootPEM and IntermediatePEM are the two files in BundleDir.
	RootPEM, IntermediatePEM string
}

// setupMu serialises Setup calls that share a CA directory within this
// process; swtpm_localca also locks its own state.
var setupMu sync.Mutex

// Setup manufactures a TPM 2.0 in stateDir (created if missing, its TPM
// state overwritten): EKs with certificates signed by the local CA in
// opt.CADir, a platform certificate, locked NV. It writes its own
// swtpm_setup and swtpm-localca configuration into the CA directory and
// never reads /etc.
func Setup(stateDir string, opt Options) (*Manufactured, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	stateDir, err := filepath.Abs(stateDir)
	if err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	caDir := opt.CADir
	if caDir == "" {
		caDir = filepath.Join(stateDir, "ca")
	}
	if caDir, err = filepath.Abs(caDir); err != nil {
		return nil, fmt.Errorf("CA directory: %w", err)
	}
	banks := opt.Banks
	if len(banks) == 0 {
		banks = []string{"sha1", "sha256"}
	}
	for _, b := range banks {
		switch b {
		case "sha1", "sha256", "sha384", "sha512":
		default:
			return nil, fmt.Errorf("swtpm setup: unknown PCR bank %q (want sha1, sha256, sha384 or sha512)", b)
		}
	}
	for _, d := range []string{stateDir, caDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("swtpm setup: %w", err)
		}
	}
	localca, err := exec.LookPath("swtpm_localca")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotInstalled, err)
	}
	files := map[string]string{
		"swtpm-localca.conf": fmt.Sprintf("statedir = %s\nsigningkey = %s\nissuercert = %s\ncertserial = %s\n",
			caDir, filepath.Join(caDir, "signkey.pem"), filepath.Join(caDir, "issuercert.pem"), filepath.Join(caDir, "certserial")),
		"swtpm-localca.options": "--platform-manufacturer tpmid\n--platform-version 2.1\n--platform-model swtpm\n",
		"swtpm_setup.conf": fmt.Sprintf("create_certs_tool = %s\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\nactive_pcr_banks = %s\n",
			localca, filepath.Join(caDir, "swtpm-localca.conf"), filepath.Join(caDir, "swtpm-localca.options"), strings.Join(banks, ",")),
	}
	setupMu.Lock()
	defer setupMu.Unlock()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(caDir, name), []byte(content), 0o600); err != nil {
			return nil, fmt.Errorf("swtpm setup: writing %s: %w", name, err)
		}
	}
	args := []string{"--tpm2", "--tpmstate", stateDir, "--create-ek-cert", "--create-platform-cert",
		"--lock-nvram", "--overwrite", "--pcr-banks", strings.Join(banks, ","),
		"--config", filepath.Join(caDir, "swtpm_setup.conf")}
	if opt.ECC {
		args = append(args, "--ecc")
	}
	if opt.RSAKeySize != 0 {
		args = append(args, "--rsa-keysize", fmt.Sprint(opt.RSAKeySize))
	}
	if opt.EKCertDir != "" {
		if err := os.MkdirAll(opt.EKCertDir, 0o700); err != nil {
			return nil, fmt.Errorf("swtpm setup: %w", err)
		}
		args = append(args, "--write-ek-cert-files", opt.EKCertDir)
	}
	cmd := exec.Command("swtpm_setup", args...)
	// swtpm_setup reads XDG_CONFIG_HOME/swtpm_setup.conf when --config is
	// absent; --config is always given, and a clean HOME keeps user files out.
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+caDir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("swtpm_setup %s: %w\n%s", strings.Join(args, " "), err, tail(out, 2048))
	}
	m := &Manufactured{StateDir: stateDir, CADir: caDir, BundleDir: filepath.Join(caDir, "bundle")}
	if err := os.MkdirAll(m.BundleDir, 0o755); err != nil {
		return nil, fmt.Errorf("swtpm setup: %w", err)
	}
	m.RootPEM = filepath.Join(m.BundleDir, "root.pem")
	m.IntermediatePEM = filepath.Join(m.BundleDir, "intermediate.pem")
	for src, dst := range map[string]string{
		filepath.Join(caDir, "swtpm-localca-rootca-cert.pem"): m.RootPEM,
		filepath.Join(caDir, "issuercert.pem"):                m.IntermediatePEM,
	} {
		b, err := os.ReadFile(src)
		if err != nil {
			return nil, fmt.Errorf("swtpm setup: local CA certificate missing after swtpm_setup: %w", err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			return nil, fmt.Errorf("swtpm setup: %w", err)
		}
	}
	return m, nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(bytes.TrimSpace(b))
}

// Instance is a running swtpm.
type Instance struct {
	addr     string
	cmd      *exec.Cmd
	done     chan struct{}
	err      error // exit status, valid after done
	out      *syncBuffer
	once     sync.Once
	tmpDir   string
	stateDir string
}

// Addr is the device string for pkg/common/tpm: tcp://127.0.0.1:P or
// unix:///path.
func (i *Instance) Addr() string { return i.addr }

// Start runs swtpm on stateDir serving raw TPM 2.0 commands on a free
// loopback TCP port (control channel on another), already started
// (TPM2_Startup(CLEAR)). ctx bounds only the start-up wait; the process
// runs until Stop. swtpm serves one connection at a time: close the TPM
// before opening it again.
func Start(ctx context.Context, stateDir string) (*Instance, error) {
	return start(ctx, stateDir, false)
}

// StartUnix is Start with unix sockets (swtpm's unixio) in a fresh short
// temporary directory; Addr returns unix:///path.
func StartUnix(ctx context.Context, stateDir string) (*Instance, error) {
	return start(ctx, stateDir, true)
}

func start(ctx context.Context, stateDir string, unix bool) (*Instance, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	// swtpm may accept connections before it notices a bad state
	// directory, so check it here for a clear, deterministic error.
	if fi, err := os.Stat(stateDir); err != nil {
		return nil, fmt.Errorf("swtpm state directory (run Setup first): %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("swtpm state directory %s is not a directory", stateDir)
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		inst, err := startOnce(ctx, stateDir, unix)
		if err == nil {
			return inst, nil
		}
		lastErr = err
		if ctx.Err() != nil || unix {
			break
		}
		// A TCP port picked as free may have been taken meanwhile: retry.
	}
	return nil, lastErr
}

func startOnce(ctx context.Context, stateDir string, unix bool) (*Instance, error) {
	inst := &Instance{done: make(chan struct{}), out: &syncBuffer{}, stateDir: stateDir}
	var server, ctrl, dialNet, dialAddr string
	if unix {
		dir, err := os.MkdirTemp("", "swtpm")
		if err != nil {
			return nil, fmt.Errorf("swtpm: socket directory: %w", err)
		}
		inst.tmpDir = dir
		sock := filepath.Join(dir, "tpm.sock")
		server = "type=unixio,path=" + sock
		ctrl = "type=unixio,path=" + filepath.Join(dir, "ctrl.sock")
		dialNet, dialAddr = "unix", sock
		inst.addr = "unix://" + sock
	} else {
		ports, err := freePorts(2)
		if err != nil {
			return nil, err
		}
		server = fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", ports[0])
		ctrl = fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", ports[1])
		dialNet, dialAddr = "tcp", "127.0.0.1:"+strconv.Itoa(ports[0])
		inst.addr = "tcp://" + dialAddr
	}
	inst.cmd = exec.Command("swtpm", "socket", "--tpm2",
		"--server", server, "--ctrl", ctrl,
		"--tpmstate", "dir="+stateDir,
		"--flags", "not-need-init,startup-clear")
	inst.cmd.Stdout = inst.out
	inst.cmd.Stderr = inst.out
	if err := inst.cmd.Start(); err != nil {
		inst.cleanup()
		return nil, fmt.Errorf("starting swtpm: %w", err)
	}
	go func() {
		inst.err = inst.cmd.Wait()
		close(inst.done)
	}()
	// Wait until the data socket accepts. swtpm serves one connection at
	// a time; the probe connection is closed at once.
	for {
		conn, err := net.DialTimeout(dialNet, dialAddr, time.Second)
		if err == nil {
			conn.Close()
			return inst, nil
		}
		select {
		case <-inst.done:
			inst.cleanup()
			return nil, fmt.Errorf("swtpm exited during start-up (%v): %s", inst.err, tail(inst.out.Bytes(), 2048))
		case <-ctx.Done():
			inst.Stop()
			return nil, fmt.Errorf("waiting for swtpm at %s: %w", inst.addr, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop terminates swtpm (SIGTERM, then SIGKILL after 5 s) and waits for
// it. swtpm saves its state on exit. Stop is idempotent.
func (i *Instance) Stop() error {
	var err error
	i.once.Do(func() {
		_ = i.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-i.done:
		case <-time.After(5 * time.Second):
			_ = i.cmd.Process.Kill()
			<-i.done
			err = fmt.Errorf("swtpm did not stop on SIGTERM; killed")
		}
		i.cleanup()
	})
	return err
}

func (i *Instance) cleanup() {
	if i.tmpDir != "" {
		os.RemoveAll(i.tmpDir)
	}
}

// freePorts returns n distinct loopback TCP ports that were free a moment
// ago.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// syncBuffer collects swtpm's output, bounded to its last 64 KiB.
type syncBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b = append(s.b, p...)
	if len(s.b) > 64<<10 {
		s.b = s.b[len(s.b)-64<<10:]
	}
	return len(p), nil
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.b...)
}
