package main

import (
	"github.com/tpmid/tpmid/pkg/server/store"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tpmid/tpmid/pkg/server/nodes"
	"github.com/tpmid/tpmid/pkg/server/plugin"
)

func TestDefaultStoreIsThePlugins(t *testing.T) {
	if defaultStoreDSN != plugin.DefaultStore {
		t.Errorf("tpmid's default store %q, the plugin's %q", defaultStoreDSN, plugin.DefaultStore)
	}
}

// TestConfigFile: the store key (and enrollment, trust domain) from a
// plugin_data file and from a whole spire-server config, inline, as a
// heredoc or through plugin_data_file.
func TestConfigFile(t *testing.T) {
	dataFile := writeFile(t, "tpm.hcl", []byte(`store = "postgres://tpmid@db/tpmid"`+"\n"))
	tests := []struct {
		name       string
		text       string
		wantStore  string
		wantEnroll nodes.Enrollment
		wantTD     string
		wantErr    string
	}{
		{name: "plugin_data", text: `
ek_policy = "cert"
ek_ca_bundle = "/etc/tpmid/ek-roots"
store = "/srv/tpmid/state.db"
enrollment = "required"
`, wantStore: "/srv/tpmid/state.db", wantEnroll: nodes.Required},
		{name: "plugin_data without store", text: `ek_policy = "allowlist"`, wantStore: defaultStoreDSN, wantEnroll: nodes.Open},
		{name: "empty file", text: ``, wantStore: defaultStoreDSN, wantEnroll: nodes.Open},
		{name: "spire-server config", text: `
server {
    bind_address = "0.0.0.0"
    trust_domain = "example.org"
}
plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            store = "/not/this/one"
        }
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
    NodeAttestor "tpm" {
        plugin_cmd = "/opt/tpmid/tpmid-server-plugin"
        plugin_data {
            ek_policy = "cert"
            store = "postgres://tpmid:secret@db.example.org/tpmid"
            enrollment = "tofu"
        }
    }
}
`, wantStore: "postgres://tpmid:secret@db.example.org/tpmid", wantEnroll: nodes.TOFU, wantTD: "example.org"},
		{name: "spire-server config, plugin_data heredoc", text: `
plugins {
    NodeAttestor "tpm" {
        plugin_cmd = "/opt/tpmid/tpmid-server-plugin"
        plugin_data = <<EOT
store = "/var/lib/other/tpmid.db"
EOT
    }
}
`, wantStore: "/var/lib/other/tpmid.db", wantEnroll: nodes.Open},
		{name: "spire-server config, plugin_data_file", text: `
plugins {
    NodeAttestor "tpm" {
        plugin_data_file = "` + dataFile + `"
    }
}
`, wantStore: "postgres://tpmid@db/tpmid", wantEnroll: nodes.Open},
		{name: "spire-server config, no plugin_data", text: `
server { trust_domain = "td.test" }
plugins {
    NodeAttestor "tpm" { plugin_cmd = "x" }
}
`, wantStore: defaultStoreDSN, wantEnroll: nodes.Open, wantTD: "td.test"},
		{name: "spire-server config without tpm", text: `
plugins {
    NodeAttestor "join_token" { plugin_data {} }
}
`, wantErr: `no NodeAttestor "tpm" block`},
		{name: "two tpm blocks", text: `
plugins {
    NodeAttestor "tpm" { plugin_data { store = "a" } }
    NodeAttestor "tpm" { plugin_data { store = "b" } }
}
`, wantErr: `2 NodeAttestor "tpm" blocks`},
		{name: "empty store", text: `store = ""`, wantErr: "store is empty"},
		{name: "bad enrollment", text: `enrollment = "sometimes"`, wantErr: "enrollment"},
		{name: "not HCL", text: `plugins {`, wantErr: "not HCL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sf := &storeFlags{config: writeFile(t, "server.conf", []byte(tt.text))}
			dsn, c, err := sf.resolve()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if dsn != tt.wantStore || c.Store != tt.wantStore || c.Enrollment != tt.wantEnroll || c.TrustDomain != tt.wantTD {
				t.Errorf("dsn %q, config %+v", dsn, c)
			}
		})
	}
	if _, _, err := (&storeFlags{dsn: "x", config: "y"}).resolve(); err == nil {
		t.Error("--store and --config together accepted")
	}
	if dsn, _, _ := (&storeFlags{}).resolve(); dsn != defaultStoreDSN {
		t.Errorf("default %q", dsn)
	}
	if got := store.RedactDSN("postgres://tpmid:secret@db/tpmid"); strings.Contains(got, "secret") {
		t.Errorf("redacted %q", got)
	}
}

// TestConfigFileCommands: commands given --config use the store its store
// key names, like the plugin.
func TestConfigFileCommands(t *testing.T) {
	db := filepath.Join(t.TempDir(), "var", "tpmid.db")
	cfg := writeFile(t, "tpm.hcl", []byte(`store = "`+db+`"`+"\n"+`enrollment = "open"`+"\n"))
	out, err := runCmd(t, newHostsCmd(), "enroll", "--config", cfg, "--hostname", "web1", "--ek-hash", hexOf('a'))
	if err != nil || !strings.Contains(out, "note: enrollment is open") {
		t.Fatalf("%v\n%s", err, out)
	}
	out, err = runCmd(t, newHostsCmd(), "list", "--store", db)
	if err != nil || !strings.Contains(out, "web1") {
		t.Fatalf("the host is not in %s: %v\n%s", db, err, out)
	}
	out, err = runCmd(t, newHostsCmd(), "list", "--config", cfg)
	if err != nil || !strings.Contains(out, "web1") {
		t.Fatalf("list --config: %v\n%s", err, out)
	}
}

func TestParsePCRListAndSince(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
	}{
		{"0-7", []int{0, 1, 2, 3, 4, 5, 6, 7}},
		{"4, 0,8-9", []int{0, 4, 8, 9}},
		{"23", []int{23}},
		{"", nil}, {"7-3", nil}, {"0-24", nil}, {"1,1", nil}, {"x", nil}, {"-1", nil},
	} {
		got, err := parsePCRList(tc.in)
		if (err != nil) != (tc.want == nil) || !slices.Equal(got, tc.want) {
			t.Errorf("%q: %v %v, want %v", tc.in, got, err, tc.want)
		}
	}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"24h":                  now.Add(-24 * time.Hour),
		"90m":                  now.Add(-90 * time.Minute),
		"7d":                   now.Add(-7 * 24 * time.Hour),
		"2026-11-24T08:00:00Z": time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC),
	} {
		if got, err := parseSince(in, now); err != nil || !got.Equal(want) {
			t.Errorf("%q: %v %v, want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "yesterday", "-5h", "1w"} {
		if _, err := parseSince(bad, now); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
