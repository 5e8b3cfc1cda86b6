// Command testsummary runs `go test -json ...`, prints what plain `go test`
// would (a line per package, and the output of failing tests), and ends
// with one line counting passed, failed and skipped tests that names every
// skipped test. Before that line, each skipped test is listed with its
// reason. `make test` runs it:
//
//	go run ./internal/testsummary -- go test -json -count=1 ./...
//
// The exit status is go test's (non-zero when it failed), or 1 when a
// test failed although go test exited 0, or 2 when go test could not run.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: testsummary -- go test -json [flags] [packages]")
		os.Exit(2)
	}
	os.Exit(run(args, os.Stdout, os.Stderr))
}

// run runs argv, summarising its JSON output to out, and returns the exit
// status to use.
func run(argv []string, out, errOut io.Writer) int {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = errOut
	cmd.Stdin = os.Stdin
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintln(errOut, "testsummary:", err)
		return 2
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(errOut, "testsummary:", err)
		return 2
	}
	s := newSummary(out)
	readErr := s.read(stdout)
	waitErr := cmd.Wait()
	if readErr != nil {
		fmt.Fprintln(errOut, "testsummary: reading go test's output:", readErr)
	}
	fmt.Fprintln(out, s.line())

	var exit *exec.ExitError
	switch {
	case errors.As(waitErr, &exit) && exit.ExitCode() > 0:
		return exit.ExitCode()
	case waitErr != nil:
		fmt.Fprintln(errOut, "testsummary:", waitErr)
		return 2
	case s.failed > 0 || len(s.failedPkgs) > 0 || readErr != nil:
		return 1
	}
	return 0
}

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action     string
	Package    string
	Test       string
	Output     string
	ImportPath string // build-output, build-fail
}

type testKey struct{ pkg, test string }

// summary consumes events and keeps the counts.
type summary struct {
	out io.Writer
	// output buffered per running test, printed only if it fails.
	running map[testKey][]string

	passed, failed int
	skipped        []skip
	failedPkgs     []string
}

type skip struct{ name, reason string }

func newSummary(out io.Writer) *summary {
	return &summary{out: out, running: map[testKey][]string{}}
}

// read consumes a `go test -json` stream. Lines that are not JSON (go
// test's own messages) are printed as they are.
func (s *summary) read(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for sc.Scan() {
		line := sc.Bytes()
		var ev event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &ev) != nil {
			fmt.Fprintf(s.out, "%s\n", line)
			continue
		}
		s.handle(ev)
	}
	return sc.Err()
}

func (s *summary) handle(ev event) {
	if ev.Action == "build-output" {
		fmt.Fprint(s.out, ev.Output)
		return
	}
	if ev.Action == "build-fail" {
		return // the package's own fail event follows
	}
	if ev.Test == "" {
		s.packageEvent(ev)
		return
	}
	k := testKey{ev.Package, ev.Test}
	switch ev.Action {
	case "run":
		s.running[k] = nil
	case "output":
		s.running[k] = append(s.running[k], ev.Output)
	case "pass":
		s.passed++
		delete(s.running, k)
	case "fail":
		s.failed++
		for _, o := range s.running[k] {
			fmt.Fprint(s.out, o)
		}
		delete(s.running, k)
	case "skip":
		s.skipped = append(s.skipped, skip{name: shortPkg(ev.Package) + "." + ev.Test, reason: skipReason(s.running[k])})
		delete(s.running, k)
	}
}

func (s *summary) packageEvent(ev event) {
	switch ev.Action {
	case "output":
		// -json implies -v: drop the lines plain go test would not print.
		if o := ev.Output; o != "PASS\n" && !strings.HasPrefix(o, "=== ") {
			fmt.Fprint(s.out, o)
		}
	case "fail":
		s.failedPkgs = append(s.failedPkgs, shortPkg(ev.Package))
		// Tests that never finished (a panic, a timeout): show their output.
		var left []testKey
		for k := range s.running {
			if k.pkg == ev.Package {
				left = append(left, k)
			}
		}
		sort.Slice(left, func(i, j int) bool { return left[i].test < left[j].test })
		for _, k := range left {
			for _, o := range s.running[k] {
				fmt.Fprint(s.out, o)
			}
			delete(s.running, k)
		}
	}
}

// skipReason is the last message a skipped test logged before "--- SKIP"
// (its t.Skip message; earlier t.Log lines are not the reason), first
// line only.
func skipReason(output []string) string {
	reason := ""
	for _, o := range output {
		for _, l := range strings.Split(strings.TrimSuffix(o, "\n"), "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "--- SKIP") {
				return reason
			}
			if logEntryRe.MatchString(l) {
				reason = strings.TrimSpace(l)
			}
		}
	}
	return reason
}

// logEntryRe matches the first line of a t.Log entry: "    file_test.go:12: ...".
var logEntryRe = regexp.MustCompile(`^\s+[^\s:]+\.go:\d+: `)

const module = "github.com/tpmid/tpmid/"

func shortPkg(p string) string {
	if s := strings.TrimPrefix(p, module); s != p {
		return s
	}
	return p
}

// line lists the skipped tests with their reasons, then returns the one
// line summary.
func (s *summary) line() string {
	var names []string
	for _, sk := range s.skipped {
		fmt.Fprintf(s.out, "SKIP %s: %s\n", sk.name, sk.reason)
		names = append(names, sk.name)
	}
	l := fmt.Sprintf("tests: %d passed, %d failed, %d skipped", s.passed, s.failed, len(s.skipped))
	if len(names) > 0 {
		l += " (" + strings.Join(names, ", ") + ")"
	}
	if len(s.failedPkgs) > 0 {
		l += "; failed packages: " + strings.Join(s.failedPkgs, ", ")
	}
	return l
}
