package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/hcl/ast"
	"github.com/hashicorp/hcl/hcl/token"
	"github.com/spf13/cobra"

	"github.com/tpmid/tpmid/pkg/common/boundedfile"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/server/nodes"
	"github.com/tpmid/tpmid/pkg/server/store"
)

// defaultStoreDSN is the server plugin's default for plugin_data's store
// (plugin.DefaultStore; a test keeps the two equal). It is not imported,
// so that this tool does not link the plugin and its SPIRE dependencies.
const defaultStoreDSN = "/var/lib/tpmid/tpmid.db"

// pluginName is the name tpmid's NodeAttestor has in a spire-server config
// (NodeAttestor "tpm" { ... }).
const pluginName = "tpm"

// maxConfigSize bounds a --config file (a spire-server config is a few KB).
const maxConfigSize = 1 << 20

// storeFlags selects the store the plugin uses: --store DSN, or --config
// FILE holding its plugin_data (or a whole spire-server config).
type storeFlags struct {
	dsn    string
	config string
}

// register adds the flags to cmd, persistent ones when the command is a
// parent (hosts, profiles, attestations).
func (s *storeFlags) register(cmd *cobra.Command, persistent bool) {
	f := cmd.Flags()
	if persistent {
		f = cmd.PersistentFlags()
	}
	f.StringVar(&s.dsn, "store", "", "the plugin's store: a SQLite file path or a postgres:// DSN (default "+defaultStoreDSN+")")
	f.StringVar(&s.config, "config", "", "read the store from this file: the server plugin's plugin_data (HCL), or a spire-server config with NodeAttestor \"tpm\"")
}

// fileConfig is what the tool reads from a --config file.
type fileConfig struct {
	Store      string // the DSN, default defaultStoreDSN
	Enrollment nodes.Enrollment
	// TrustDomain is server { trust_domain } of a whole spire-server
	// config; "" for a plugin_data file.
	TrustDomain string
	// EK settings, as written ("" when absent): tpmid ca serve applies
	// the same EK policy as the plugin.
	EKPolicy, EKCABundle, EKHashAllowlist string
}

// resolve returns the DSN to open and the --config file's settings (nil
// without --config).
func (s *storeFlags) resolve() (string, *fileConfig, error) {
	switch {
	case s.dsn != "" && s.config != "":
		return "", nil, errors.New("give --store or --config, not both")
	case s.dsn != "":
		return s.dsn, nil, nil
	case s.config != "":
		c, err := readConfigFile(s.config)
		if err != nil {
			return "", nil, err
		}
		return c.Store, c, nil
	}
	return defaultStoreDSN, nil, nil
}

// open opens the store. Unless create is set, a SQLite file that does not
// exist yet is an error rather than a new empty store: a read on a wrong
// path should not invent one (and leave it owned by whoever ran tpmid).
func (s *storeFlags) open(ctx context.Context, create bool) (store.Store, *fileConfig, error) {
	dsn, cfg, err := s.resolve()
	if err != nil {
		return nil, nil, err
	}
	if path, ok := store.SQLitePath(dsn); ok && !create {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("no tpmid store at %s (the server plugin creates it when it starts; select another with --store or --config)", path)
		}
	}
	st, err := store.Open(ctx, dsn)
	if err != nil {
		return nil, nil, fmt.Errorf("opening store %s: %w", store.RedactDSN(dsn), err)
	}
	return st, cfg, nil
}

// pluginData is the part of the server plugin's plugin_data this tool
// reads; every other key is ignored (the plugin itself checks them).
type pluginData struct {
	Store           *string `hcl:"store"`
	Enrollment      string  `hcl:"enrollment"`
	EKPolicy        string  `hcl:"ek_policy"`
	EKCABundle      string  `hcl:"ek_ca_bundle"`
	EKHashAllowlist string  `hcl:"ek_hash_allowlist"`
}

// readConfigFile reads a --config file: a spire-server config when it has a
// plugins or server block (then plugin_data of NodeAttestor "tpm", inline,
// as a string, or in plugin_data_file), else the plugin_data itself.
func readConfigFile(path string) (*fileConfig, error) {
	b, err := boundedfile.Read(path, maxConfigSize)
	if err != nil {
		return nil, err
	}
	f, err := hcl.ParseBytes(b)
	if err != nil {
		return nil, fmt.Errorf("%s: not HCL: %w", path, err)
	}
	root, ok := f.Node.(*ast.ObjectList)
	if !ok {
		return nil, fmt.Errorf("%s: not an HCL body", path)
	}
	c := &fileConfig{}
	var data ast.Node = root
	if len(root.Filter("plugins").Items) > 0 || len(root.Filter("server").Items) > 0 {
		for _, srv := range blocks(root, "server") {
			var s struct {
				TrustDomain string `hcl:"trust_domain"`
			}
			if err := hcl.DecodeObject(&s, srv); err != nil {
				return nil, fmt.Errorf("%s: server: %w", path, err)
			}
			c.TrustDomain = s.TrustDomain
		}
		var found []*ast.ObjectList
		for _, plugins := range blocks(root, "plugins") {
			found = append(found, blocks(plugins, "NodeAttestor", pluginName)...)
		}
		switch len(found) {
		case 0:
			return nil, fmt.Errorf("%s: no NodeAttestor %q block under plugins", path, pluginName)
		case 1:
		default:
			return nil, fmt.Errorf("%s: %d NodeAttestor %q blocks", path, len(found), pluginName)
		}
		if data, err = pluginDataOf(path, found[0]); err != nil {
			return nil, err
		}
	}
	var pd pluginData
	if data != nil {
		if err := hcl.DecodeObject(&pd, data); err != nil {
			return nil, fmt.Errorf("%s: plugin_data: %w", path, err)
		}
	}
	c.Store = defaultStoreDSN
	if pd.Store != nil {
		if *pd.Store == "" {
			return nil, fmt.Errorf("%s: store is empty (the plugin refuses it too)", path)
		}
		c.Store = *pd.Store
	}
	if c.Enrollment, err = nodes.ParseEnrollment(pd.Enrollment); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c.EKPolicy, c.EKCABundle, c.EKHashAllowlist = pd.EKPolicy, pd.EKCABundle, pd.EKHashAllowlist
	return c, nil
}

// blocks returns the bodies of list's blocks named by keys (e.g. plugins,
// or NodeAttestor "tpm"), however they are written.
func blocks(list *ast.ObjectList, keys ...string) []*ast.ObjectList {
	var out []*ast.ObjectList
	for _, item := range list.Filter(keys...).Items {
		if len(item.Keys) > 0 {
			continue // a longer name: NodeAttestor "tpm" "x"
		}
		if o, ok := item.Val.(*ast.ObjectType); ok {
			out = append(out, o.List)
		}
	}
	return out
}

// pluginDataOf returns the plugin_data of a plugin block: a block, a string
// (heredoc) of HCL, or the file plugin_data_file names; nil when it has none
// (every setting at its default).
func pluginDataOf(path string, plugin *ast.ObjectList) (ast.Node, error) {
	items := plugin.Filter("plugin_data").Items
	fileItems := plugin.Filter("plugin_data_file").Items
	if len(items)+len(fileItems) > 1 {
		return nil, fmt.Errorf("%s: NodeAttestor %q has more than one plugin_data or plugin_data_file", path, pluginName)
	}
	var text string
	switch {
	case len(items) == 1:
		switch v := items[0].Val.(type) {
		case *ast.ObjectType:
			return v.List, nil
		case *ast.LiteralType:
			s, ok := literalString(v)
			if !ok {
				return nil, fmt.Errorf("%s: plugin_data is neither a block nor a string", path)
			}
			text = s
		default:
			return nil, fmt.Errorf("%s: plugin_data is neither a block nor a string", path)
		}
	case len(fileItems) == 1:
		lit, ok := fileItems[0].Val.(*ast.LiteralType)
		name, ok2 := literalString(lit)
		if !ok || !ok2 {
			return nil, fmt.Errorf("%s: plugin_data_file is not a string", path)
		}
		b, err := boundedfile.Read(name, maxConfigSize)
		if err != nil {
			return nil, fmt.Errorf("%s: plugin_data_file: %w", path, err)
		}
		text = string(b)
	default:
		return nil, nil
	}
	f, err := hcl.ParseString(text)
	if err != nil {
		return nil, fmt.Errorf("%s: plugin_data is not HCL: %w", path, err)
	}
	return f.Node, nil
}

func literalString(v *ast.LiteralType) (string, bool) {
	if v == nil || (v.Token.Type != token.STRING && v.Token.Type != token.HEREDOC) {
		return "", false
	}
	s, ok := v.Token.Value().(string)
	return s, ok
}

// parsePCRList reads "0-7", "0,2,4-7" or "" (none).
func parsePCRList(s string) ([]int, error) {
	var out []int
	seen := map[int]bool{}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(strings.TrimSpace(lo))
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(strings.TrimSpace(hi))
		}
		if err != nil || a < 0 || b > pcrs.MaxIndex || a > b {
			return nil, fmt.Errorf("PCR list %q: %q is not an index or range within 0-%d", s, part, pcrs.MaxIndex)
		}
		for i := a; i <= b; i++ {
			if seen[i] {
				return nil, fmt.Errorf("PCR list %q: PCR %d is listed twice", s, i)
			}
			seen[i] = true
			out = append(out, i)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("PCR list %q selects no PCR", s)
	}
	slices.Sort(out)
	return out, nil
}

// parseSince reads an RFC 3339 time, or a duration back from now ("24h",
// "90m", or whole days "7d").
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	var d time.Duration
	var err error
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		n, err = strconv.Atoi(days)
		d = time.Duration(n) * 24 * time.Hour
	} else {
		d, err = time.ParseDuration(s)
	}
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("--since %q is neither an RFC 3339 time nor a positive duration (24h, 7d)", s)
	}
	return now.Add(-d), nil
}

// timePtr is nil for the zero time, so that JSON says null for "never".
func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// fmtTime is a time for text output; "-" for never.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// orEmpty makes a nil list [] in JSON.
func orEmpty(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

// orDash is s, or "-" when empty, for text columns.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
