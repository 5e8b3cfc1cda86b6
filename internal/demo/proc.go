package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is a child started in its own process group, with stdout and
// stderr appended to one log file. Stop stops it as an init system does:
// SIGTERM to the process alone, so that spire-server or spire-agent stops
// its plugins itself, then SIGKILL to the whole group after a grace period.
type Process struct {
	Name    string
	LogPath string
	Started time.Time

	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	err  error // exit status, valid after done is closed
	once sync.Once
}

// startProcess runs argv with its output in logPath (appended).
func startProcess(name, logPath, dir string, env []string, argv ...string) (*Process, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(f, "### %s: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(argv, " "))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.Stdin = nil
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	// Own process group (so Stop reaches grandchildren, and a ctrl-C sent to
	// the terminal's group is handled by us, not by the children), and die
	// with the parent if it is killed outright.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, log: f, done: make(chan struct{})}
	p.Started = time.Now()
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Exited reports whether the process has ended, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// StopGrace is how long Stop waits after SIGTERM before SIGKILL. SPIRE
// gives each external plugin 2 s to exit after asking it to (go-plugin),
// so this leaves room for a few.
const StopGrace = 15 * time.Second

// Stop stops the process the way an init system does: SIGTERM to the
// process only (not its group: spire-server and spire-agent then
// deinitialize their plugins over gRPC and stop them, instead of logging
// "Failed to deinitialize plugin" for plugins the signal killed first),
// wait for it, SIGKILL the group after StopGrace. Whatever of the group
// outlives it (a plugin of a crashed parent) is killed last.
func (p *Process) Stop() {
	p.once.Do(func() {
		pgid := p.cmd.Process.Pid
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(StopGrace):
			fmt.Fprintf(p.log, "### %s: %s did not stop %s after SIGTERM: SIGKILL\n", time.Now().Format(time.RFC3339Nano), p.Name, StopGrace)
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		p.log.Close()
	})
}

// Log returns the process log so far.
func (p *Process) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// waitForLog polls path until it contains one of needles; it returns the
// needle found. It gives up when ctx ends or when exited is closed.
func waitForLog(ctx context.Context, path string, exited <-chan struct{}, needles ...string) (string, error) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		b, _ := os.ReadFile(path)
		for _, n := range needles {
			if strings.Contains(string(b), n) {
				return n, nil
			}
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-exited:
			// One last look: the line may have been written just before exit.
			b, _ := os.ReadFile(path)
			for _, n := range needles {
				if strings.Contains(string(b), n) {
					return n, nil
				}
			}
			return "", errors.New("process exited")
		case <-t.C:
		}
	}
}

// runCmd runs a short command and returns its combined output; the command
// line and output are appended to logPath when it is set.
func runCmd(ctx context.Context, logPath, dir string, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.CombinedOutput()
	if logPath != "" {
		if f, ferr := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); ferr == nil {
			fmt.Fprintf(f, "### %s: %s\n%s", time.Now().Format(time.RFC3339Nano), strings.Join(argv, " "), out)
			if err != nil {
				fmt.Fprintf(f, "### exit: %v\n", err)
			}
			f.Close()
		}
	}
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", filepath.Base(argv[0]), err, lastLines(string(out), 5))
	}
	return string(out), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
