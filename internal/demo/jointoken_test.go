package demo

import (
	"strings"
	"testing"

	"github.com/hashicorp/hcl"
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
