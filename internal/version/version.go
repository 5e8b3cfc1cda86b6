// Package version reports what a tpmid binary was built from, read from
// the build info the Go toolchain embeds (runtime/debug.ReadBuildInfo):
// the module version, the VCS revision and whether the tree was modified,
// and the Go version.
package version

import (
	"fmt"
	"runtime/debug"
	"strings"
)

// Info is what a binary says about its build.
type Info struct {
	Module   string `json:"module"`             // the main module's path
	Version  string `json:"version"`            // module version: a tag, a pseudo-version or "(devel)"
	Revision string `json:"revision,omitempty"` // vcs.revision
	Time     string `json:"time,omitempty"`     // vcs.time
	Modified bool   `json:"modified,omitempty"` // vcs.modified: built from a tree with uncommitted changes
	Go       string `json:"go"`                 // the Go toolchain
}

// readBuildInfo is debug.ReadBuildInfo, replaced in tests.
var readBuildInfo = debug.ReadBuildInfo

// Get returns this binary's build info; Version is "unknown" when the
// binary carries none.
func Get() Info {
	bi, ok := readBuildInfo()
	if !ok {
		return Info{Module: "github.com/tpmid/tpmid", Version: "unknown"}
	}
	i := Info{Module: bi.Main.Path, Version: bi.Main.Version, Go: bi.GoVersion}
	if i.Version == "" {
		i.Version = "(devel)"
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			i.Revision = s.Value
		case "vcs.time":
			i.Time = s.Value
		case "vcs.modified":
			i.Modified = s.Value == "true"
		}
	}
	return i
}

// String is the one-line form: "v0.1.0 (rev 3e85431c, modified, go1.26.0)".
func (i Info) String() string {
	var extra []string
	if i.Revision != "" {
		rev := i.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		extra = append(extra, "rev "+rev)
	}
	if i.Modified {
		extra = append(extra, "modified")
	}
	if i.Go != "" {
		extra = append(extra, i.Go)
	}
	if len(extra) == 0 {
		return i.Version
	}
	return fmt.Sprintf("%s (%s)", i.Version, strings.Join(extra, ", "))
}

// Line is what `<binary> --version` prints: the program's name and String.
func Line(program string) string { return program + " " + Get().String() }

// Short is the version and revision alone, for log fields.
func Short() string {
	i := Get()
	if i.Revision == "" {
		return i.Version
	}
	rev := i.Revision
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if i.Modified {
		rev += "+modified"
	}
	return i.Version + "@" + rev
}

// Requested reports whether args (os.Args[1:]) ask for the version alone:
// the plugin binaries check it before pluginmain.Serve, which would
// otherwise refuse to run outside SPIRE.
func Requested(args []string) bool {
	return len(args) == 1 && (args[0] == "--version" || args[0] == "-version" || args[0] == "version")
}
