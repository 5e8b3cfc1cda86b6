package demo

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Module is the module path this harness belongs to.
const Module = "github.com/tpmid/tpmid"

// SPIREVersion is the SPIRE release the harness runs against.
const SPIREVersion = "v1.13.3"

// RepoRoot finds the checkout's root by walking up from the working
// directory to the go.mod of this module.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(firstLine(b), Module) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("not inside a checkout of %s", Module)
		}
		dir = parent
	}
}

func firstLine(b []byte) string {
	s := bufio.NewScanner(strings.NewReader(string(b)))
	if s.Scan() {
		return s.Text()
	}
	return ""
}

// Plugins are the built plugin binaries and their SHA-256 (plugin_checksum).
type Plugins struct {
	Server, ServerSum string
	Agent, AgentSum   string
}

// BuildPlugins builds both plugin binaries into outDir with `go build`,
// with the release's flags (scripts/dist.sh: -trimpath, no symbol tables),
// so that the demo, the integration tests and bench-spire run what
// operators install: spire-agent hashes the whole binary for
// plugin_checksum on every start, so its size is start-up time.
func BuildPlugins(ctx context.Context, root, outDir, logPath string) (*Plugins, error) {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, err
	}
	p := &Plugins{
		Server: filepath.Join(outDir, "tpmid-server-plugin"),
		Agent:  filepath.Join(outDir, "tpmid-agent-plugin"),
	}
	if _, err := runCmd(ctx, logPath, root, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", outDir+"/", "./cmd/tpmid-server-plugin", "./cmd/tpmid-agent-plugin"); err != nil {
		return nil, fmt.Errorf("building the plugins: %w", err)
	}
	var err error
	if p.ServerSum, err = FileSHA256(p.Server); err != nil {
		return nil, err
	}
	if p.AgentSum, err = FileSHA256(p.Agent); err != nil {
		return nil, err
	}
	return p, nil
}

// FileSHA256 is the hex SHA-256 of a file: a plugin binary's
// plugin_checksum.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// SPIREBinDir is where scripts/ensure-spire.sh caches the SPIRE binaries.
func SPIREBinDir(root string) string {
	cache := os.Getenv("TPMID_CACHE")
	if cache == "" {
		cache = filepath.Join(root, ".cache")
	}
	return filepath.Join(cache, "spire-"+SPIREVersion, "bin")
}

// FindSPIRE returns the cached SPIRE bin directory, or an error saying how to
// get it. It never builds.
func FindSPIRE(root string) (string, error) {
	dir := SPIREBinDir(root)
	for _, b := range []string{"spire-server", "spire-agent"} {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.Mode()&0o111 == 0 {
			return "", fmt.Errorf("%s not found in %s (run scripts/ensure-spire.sh, or make deps)", b, dir)
		}
	}
	return dir, nil
}

// EnsureSPIRE runs scripts/ensure-spire.sh (a no-op when the binaries are
// cached) and returns the directory holding spire-server and spire-agent.
func EnsureSPIRE(ctx context.Context, root, logPath string) (string, error) {
	if dir, err := FindSPIRE(root); err == nil {
		return dir, nil
	}
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "ensure-spire.sh"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "SPIRE_VERSION="+SPIREVersion)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if logPath != "" {
		_ = os.WriteFile(logPath, []byte(stderr.String()+string(out)), 0o644)
	}
	if err != nil {
		return "", fmt.Errorf("scripts/ensure-spire.sh: %w: %s", err, lastLines(stderr.String(), 5))
	}
	dir := strings.TrimSpace(lastLines(string(out), 1))
	if dir == "" {
		return "", errors.New("scripts/ensure-spire.sh printed no directory")
	}
	return dir, nil
}

// SwtpmPackages are the Debian packages that provide swtpm and its tools.
var SwtpmPackages = []string{"swtpm", "swtpm-tools"}

// MissingSwtpm lists the swtpm programs not found on PATH.
func MissingSwtpm() []string {
	var missing []string
	for _, b := range []string{"swtpm", "swtpm_setup"} {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	return missing
}

// CCPackages provide the C compiler that SPIRE's sqlite3 driver (cgo)
// needs when SPIRE is built.
var CCPackages = []string{"gcc", "libc6-dev"}

// MissingCC reports whether there is no C compiler on PATH.
func MissingCC() bool {
	for _, c := range []string{os.Getenv("CC"), "cc", "gcc"} {
		if c == "" {
			continue
		}
		if _, err := exec.LookPath(c); err == nil {
			return false
		}
	}
	return true
}

// InstallSwtpm installs the swtpm packages with apt-get when swtpm or
// swtpm_setup is missing (through sudo unless running as root). It returns
// whether it installed anything.
func InstallSwtpm(ctx context.Context, logPath string) (bool, error) {
	if len(MissingSwtpm()) == 0 {
		return false, nil
	}
	if err := InstallPackages(ctx, logPath, SwtpmPackages...); err != nil {
		return false, err
	}
	if m := MissingSwtpm(); len(m) > 0 {
		return true, fmt.Errorf("still missing after apt-get install: %s", strings.Join(m, ", "))
	}
	return true, nil
}

// InstallPackages runs apt-get install for pkgs (through sudo unless root).
func InstallPackages(ctx context.Context, logPath string, pkgs ...string) error {
	if _, err := exec.LookPath("apt-get"); err != nil {
		return fmt.Errorf("apt-get is not available: install %s by hand", strings.Join(pkgs, " "))
	}
	var prefix []string
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("sudo"); err != nil {
			return fmt.Errorf("%s must be installed, and this is not root and there is no sudo", strings.Join(pkgs, " "))
		}
		prefix = []string{"sudo"}
	}
	if err := runLogged(ctx, logPath, append(prefix, "apt-get", "update", "-q")...); err != nil {
		return err
	}
	args := append(append(prefix, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q", "--no-install-recommends"), pkgs...)
	return runLogged(ctx, logPath, args...)
}

// runLogged runs a command in the foreground (sudo may ask for a password on
// the terminal) with its output appended to logPath.
func runLogged(ctx context.Context, logPath string, argv ...string) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = os.Stdin
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if logPath != "" {
		if f, ferr := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); ferr == nil {
			fmt.Fprintf(f, "### %s\n%s", strings.Join(argv, " "), out.String())
			f.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, lastLines(out.String(), 5))
	}
	return nil
}
