package version

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestGet(t *testing.T) {
	defer func(f func() (*debug.BuildInfo, bool)) { readBuildInfo = f }(readBuildInfo)
	readBuildInfo = func() (*debug.BuildInfo, bool) {
		return &debug.BuildInfo{
			GoVersion: "go1.26.0",
			Main:      debug.Module{Path: "github.com/tpmid/tpmid", Version: "v0.1.0"},
			Settings: []debug.BuildSetting{
				{Key: "vcs.revision", Value: "3e85431c0ffee0000000000000000000deadbeef"},
				{Key: "vcs.time", Value: "2026-11-25T10:00:00Z"},
				{Key: "vcs.modified", Value: "true"},
			},
		}, true
	}
	i := Get()
	if i.Version != "v0.1.0" || i.Revision != "3e85431c0ffee0000000000000000000deadbeef" || !i.Modified || i.Go != "go1.26.0" {
		t.Fatalf("Get() = %+v", i)
	}
	if got, want := i.String(), "v0.1.0 (rev 3e85431c0ffe, modified, go1.26.0)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got, want := Short(), "v0.1.0@3e85431c0ffe+modified"; got != want {
		t.Errorf("Short() = %q, want %q", got, want)
	}
	if got := Line("tpmid"); !strings.HasPrefix(got, "tpmid v0.1.0 (") {
		t.Errorf("Line() = %q", got)
	}

	readBuildInfo = func() (*debug.BuildInfo, bool) { return nil, false }
	if i := Get(); i.Version != "unknown" || i.String() != "unknown" {
		t.Errorf("no build info: %+v %q", i, i.String())
	}
	readBuildInfo = func() (*debug.BuildInfo, bool) {
		return &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: "github.com/tpmid/tpmid"}}, true
	}
	if got := Get().String(); got != "(devel) (go1.26.0)" {
		t.Errorf("devel build: %q", got)
	}
}

// The test binary itself carries build info: Get must not come back empty.
func TestGetReal(t *testing.T) {
	if i := Get(); i.Version == "" || i.Go == "" {
		t.Errorf("Get() = %+v", i)
	}
}

func TestRequested(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"--version"}, true},
		{[]string{"-version"}, true},
		{[]string{"version"}, true},
		{nil, false},
		{[]string{"--version", "x"}, false},
		{[]string{"serve"}, false},
	} {
		if got := Requested(tc.args); got != tc.want {
			t.Errorf("Requested(%q) = %v", tc.args, got)
		}
	}
}
