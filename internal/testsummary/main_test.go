package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// stream is a go test -json stream: a package with a pass, a skip (with
// its reason), a failing subtest; another package that fails to build.
const stream = `{"Action":"start","Package":"github.com/tpmid/tpmid/a"}
{"Action":"run","Package":"github.com/tpmid/tpmid/a","Test":"TestPass"}
{"Action":"output","Package":"github.com/tpmid/tpmid/a","Test":"TestPass","Output":"=== RUN   TestPass\n"}
{"Action":"output","Package":"github.com/tpmid/tpmid/a","Test":"TestPass","Output":"    a_test.go:9: quiet when it passes\n"}
{"Action":"pass","Package":"github.com/tpmid/tpmid/a","Test":"TestPass"}
{"Action":"run","Package":"github.com/tpmid/tpmid/a","Test":"TestSkip"}
{"Action":"output","Package":"github.com/tpmid/tpmid/a","Test":"TestSkip","Output":"=== RUN   TestSkip\n"}
{"Action":"output","Package":"github.com/tpmid/tpmid/a","Test":"TestSkip","Output":"    a_test.go:10: a step first\n        on two lines\n"}
{"Action":"output","Package":"github.com/tpmid/tpmid/a","Test":"TestSkip","Output":"    a_test.go:12: swtpm is needed\n"}
{"Action":"output","Package":"github.com/tpmid/tpmid/a","Test":"TestSkip","Output":"--- SKIP: TestSkip (0.00s)\n"}
{"Action":"skip","Package":"github.com/tpmid/tpmid/a","Test":"TestSkip"}
{"Action":"run","Package":"github.com/tpmid/tpmid/a","Test":"TestFail"}
{"Action":"run","Package":"github.com/tpmid/tpmid/a","Test":"TestFail/sub"}
{"Action":"output","Package":"github.com/tpmid/tpmid/a","Test":"TestFail/sub","Output":"    a_test.go:20: boom\n"}
{"Action":"fail","Package":"github.com/tpmid/tpmid/a","Test":"TestFail/sub"}
{"Action":"fail","Package":"github.com/tpmid/tpmid/a","Test":"TestFail"}
{"Action":"output","Package":"github.com/tpmid/tpmid/a","Output":"PASS\n"}
{"Action":"output","Package":"github.com/tpmid/tpmid/a","Output":"FAIL\tgithub.com/tpmid/tpmid/a\t0.01s\n"}
{"Action":"fail","Package":"github.com/tpmid/tpmid/a"}
{"ImportPath":"github.com/tpmid/tpmid/b","Action":"build-output","Output":"b/b.go:3:1: syntax error\n"}
{"ImportPath":"github.com/tpmid/tpmid/b","Action":"build-fail"}
{"Action":"fail","Package":"github.com/tpmid/tpmid/b"}
`

func fakeGoTest(t *testing.T, out string, exit int) []string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "stream.json")
	if err := os.WriteFile(f, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"/bin/sh", "-c", `cat "$0"; echo "go: note on stderr" >&2; exit "$1"`, f, string(rune('0' + exit))}
}

func TestSummary(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(fakeGoTest(t, stream, 1), &out, &errOut)
	if code != 1 {
		t.Errorf("exit %d, want go test's 1", code)
	}
	got := out.String()
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	want := "tests: 1 passed, 2 failed, 1 skipped (a.TestSkip); failed packages: a, b"
	if last := lines[len(lines)-1]; last != want {
		t.Errorf("last line %q, want %q\n%s", last, want, got)
	}
	for _, w := range []string{"a_test.go:20: boom", "FAIL\tgithub.com/tpmid/tpmid/a", "syntax error", "SKIP a.TestSkip: a_test.go:12: swtpm is needed"} {
		if !strings.Contains(got, w) {
			t.Errorf("output lacks %q:\n%s", w, got)
		}
	}
	for _, no := range []string{"quiet when it passes", "=== RUN", "PASS\n"} {
		if strings.Contains(got, no) {
			t.Errorf("output has %q, which plain go test does not print:\n%s", no, got)
		}
	}
	if !strings.Contains(errOut.String(), "note on stderr") {
		t.Errorf("stderr not passed through: %q", errOut.String())
	}
}

func TestExitStatus(t *testing.T) {
	pass := `{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"pass","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Output":"ok  \tp\t0.01s\n"}
{"Action":"pass","Package":"p"}
`
	for _, tc := range []struct {
		name   string
		stream string
		exit   int
		want   int
	}{
		{"all pass", pass, 0, 0},
		{"go test failed", pass, 2, 2},
		{"a failure although go test exited 0", stream, 0, 1},
	} {
		var out, errOut bytes.Buffer
		if got := run(fakeGoTest(t, tc.stream, tc.exit), &out, &errOut); got != tc.want {
			t.Errorf("%s: exit %d, want %d\n%s", tc.name, got, tc.want, out.String())
		}
		if tc.name == "all pass" && !strings.HasSuffix(out.String(), "ok  \tp\t0.01s\ntests: 1 passed, 0 failed, 0 skipped\n") {
			t.Errorf("all pass: output %q", out.String())
		}
	}
	var out, errOut bytes.Buffer
	if got := run([]string{"/nonexistent/go"}, &out, &errOut); got != 2 {
		t.Errorf("a command that cannot start: exit %d, want 2", got)
	}
}
