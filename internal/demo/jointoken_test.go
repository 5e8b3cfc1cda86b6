package demo

import (
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/hcl/ast"
)

// TestJoinTokenConfigs: the server config with join_token added and the
// join_token agent config are HCL, with both NodeAttestors on the server
// and the token in the agent block.
func TestJoinTokenConfigs(t *testing.T) {
	p := &Plugins{Server: "/x/server", ServerSum: "00"}
	srv, err := withJoinToken(ServerConfig("/d", "/s.sock", 1234, p.Server, p.ServerSum, ServerOptions{EKCABundle: "/ca"}))
	if err != nil {
		t.Fatal(err)
	}
	agent := JoinTokenAgentConfig("/d", "/a.sock", "/b.pem", 1234, "0f1e-2d3c", "")
	var sv struct {
		Plugins []map[string][]map[string]any `hcl:"plugins"`
	}
	if err := hcl.Decode(&sv, srv); err != nil {
		t.Fatalf("server config is not HCL: %v\n%s", err, srv)
	}
	for _, name := range []string{`NodeAttestor "join_token"`, `NodeAttestor "tpm"`} {
		if !strings.Contains(srv, name) {
			t.Errorf("server config lacks %s:\n%s", name, srv)
		}
	}
	var av map[string]any
	if err := hcl.Decode(&av, agent); err != nil {
		t.Fatalf("agent config is not HCL: %v\n%s", err, agent)
	}
	if !strings.Contains(agent, `join_token = "0f1e-2d3c"`) || strings.Contains(agent, `NodeAttestor "tpm"`) {
		t.Errorf("agent config:\n%s", agent)
	}
	if _, err := withJoinToken("server {}\n"); err == nil {
		t.Error("withJoinToken added to a config without a plugins block")
	}
}

func TestParseToken(t *testing.T) {
	got, err := parseToken("Token: 5a2b7c9e-0000-4d1e-9f00-123456789abc\n")
	if err != nil || got != "5a2b7c9e-0000-4d1e-9f00-123456789abc" {
		t.Fatalf("parseToken = %q, %v", got, err)
	}
	if _, err := parseToken("Error: permission denied\n"); err == nil {
		t.Fatal("parseToken found a token in an error")
	}
}

// TestExtraAttestorConfigs: ExtraNodeAttestors lands inside the server's
// plugins block beside tpmid's, and PluginDataDir replaces the plugin's
// default data_dir (bench-spire's floor pair and known machine).
func TestExtraAttestorConfigs(t *testing.T) {
	extra := "    NodeAttestor \"floor\" {\n        plugin_cmd = \"/f/server\"\n        plugin_data {}\n    }\n"
	srv := ServerConfig("/d", "/s.sock", 1234, "/x/server", "00", ServerOptions{ExtraNodeAttestors: extra})
	f, err := hcl.Parse(srv)
	if err != nil {
		t.Fatalf("server config is not HCL: %v\n%s", err, srv)
	}
	var names []string
	for _, plugins := range f.Node.(*ast.ObjectList).Filter("plugins").Items {
		for _, na := range plugins.Val.(*ast.ObjectType).List.Filter("NodeAttestor").Items {
			for _, k := range na.Keys {
				names = append(names, strings.Trim(k.Token.Text, `"`))
			}
		}
	}
	if len(names) != 2 || !slices.Contains(names, "floor") || !slices.Contains(names, "tpm") {
		t.Errorf("NodeAttestors in the plugins block: %v\n%s", names, srv)
	}

	for _, tt := range []struct{ dir, want string }{
		{"", `data_dir = "/d/tpmid"`},
		{"/kept/tpmid", `data_dir = "/kept/tpmid"`},
	} {
		agent := AgentConfig("/d", "/a.sock", "/b.pem", 1234, "/x/agent", "11", AgentOptions{TPMDevice: "/dev/tpmrm0", PluginDataDir: tt.dir})
		if !strings.Contains(agent, tt.want) {
			t.Errorf("PluginDataDir %q: want %s in\n%s", tt.dir, tt.want, agent)
		}
	}
	agent := AgentConfig("/d", "/a.sock", "/b.pem", 1234, "/x/agent", "11", AgentOptions{TPMDevice: "/dev/tpmrm0", PluginDataDir: "/kept/tpmid"})
	if strings.Contains(agent, `"/d/tpmid"`) {
		t.Errorf("default data_dir still there:\n%s", agent)
	}
}
