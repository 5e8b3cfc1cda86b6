package demo

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStopSignalsTheProcessOnly: Stop sends SIGTERM to the process, not to
// its group, so a parent (spire-server) still has its children (plugins)
// when it handles the signal, and stops them itself.
func TestStopSignalsTheProcessOnly(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "parent.log")
	script := `sleep 1000 & c=$!
trap 'if kill -0 $c 2>/dev/null; then echo child-alive-at-term; fi; kill $c; wait $c; echo parent-stopped-child; exit 0' TERM
echo ready
wait`
	p, err := startProcess("parent", logPath, dir, pluginEnv(dir), "/bin/sh", "-c", script)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := waitForLog(ctx, logPath, p.Done(), "ready"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	p.Stop()
	if d := time.Since(start); d > StopGrace/2 {
		t.Errorf("Stop took %s: the process did not stop on SIGTERM", d)
	}
	log := p.Log()
	for _, want := range []string{"child-alive-at-term", "parent-stopped-child"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q: the group was signalled, not the process\n%s", want, log)
		}
	}
	if exited, _ := p.Exited(); !exited {
		t.Error("Stop returned before the process exited")
	}
}

// TestPluginEnv: the SPIRE processes the harness starts get its socket
// directory as TMPDIR, where go-plugin puts the plugins' sockets.
func TestPluginEnv(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "env.log")
	p, err := startProcess("env", logPath, dir, pluginEnv(dir), "/bin/sh", "-c", `echo "tmp=$TMPDIR"; echo "sockets=$PLUGIN_UNIX_SOCKET_DIR"`)
	if err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	p.Stop()
	for _, want := range []string{"tmp=" + dir + "\n", "sockets=" + dir + "\n"} {
		if !strings.Contains(p.Log(), want) {
			t.Errorf("log lacks %q:\n%s", want, p.Log())
		}
	}
}

// TestNewReturnsAFailedStep: when the plugin build fails (the root is not
// a checkout), New returns the step's error, with a nil Env and without
// panicking, and removes the socket directory it made.
func TestNewReturnsAFailedStep(t *testing.T) {
	// SPIRE "found" (fake binaries in TPMID_CACHE), so that New gets to
	// the plugin build.
	cache := t.TempDir()
	bin := filepath.Join(cache, "spire-"+SPIREVersion, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"spire-server", "spire-agent"} {
		if err := os.WriteFile(filepath.Join(bin, b), []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("TPMID_CACHE", cache)
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)

	var steps []string
	env, err := New(context.Background(), Config{
		Root:   t.TempDir(), // no go.mod, no ./cmd: go build fails
		LogDir: filepath.Join(t.TempDir(), "logs"),
		Step: func(name string, _ time.Duration, err error) {
			if err != nil {
				steps = append(steps, name)
			}
		},
	})
	if err == nil {
		env.Close()
		t.Fatal("New succeeded with a root that cannot build the plugins")
	}
	if env != nil {
		t.Errorf("New returned an Env (%p) with its error", env)
	}
	if !strings.Contains(err.Error(), "build plugins") || errors.Is(err, ErrNoSPIRE) {
		t.Errorf("error %q does not name the failed step", err)
	}
	if len(steps) != 1 || steps[0] != "build plugins" {
		t.Errorf("failed steps reported: %q", steps)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("left in TMPDIR: %v", left)
	}
}
