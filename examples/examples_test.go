// Package examples holds deployment examples (systemd units, SPIRE
// configurations, Kubernetes manifests); its test checks that they parse
// and that each NodeAttestor "tpm" plugin_data is accepted by the plugin's
// own Validate, so the examples cannot drift from the plugins.
package examples

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/hcl/ast"
	"github.com/hashicorp/hcl/hcl/printer"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"go.yaml.in/yaml/v3"

	"github.com/tpmid/tpmid/internal/testca"
	agentplugin "github.com/tpmid/tpmid/pkg/agent/plugin"
	serverplugin "github.com/tpmid/tpmid/pkg/server/plugin"
)

// validator is the Validate half of SPIRE's Config service, which both
// plugins implement.
type validator interface {
	Validate(context.Context, *configv1.ValidateRequest) (*configv1.ValidateResponse, error)
}

// tpmPluginData parses a SPIRE configuration and returns the plugin_data
// of its NodeAttestor "tpm", printed back to HCL as SPIRE hands it to the
// plugin, and its plugin_cmd.
func tpmPluginData(t *testing.T, name, conf string) (data, cmd string) {
	t.Helper()
	file, err := hcl.Parse(conf)
	if err != nil {
		t.Fatalf("%s: HCL: %v", name, err)
	}
	root := file.Node.(*ast.ObjectList)
	na := &ast.ObjectList{}
	for _, plugins := range root.Filter("plugins").Items {
		if o, ok := plugins.Val.(*ast.ObjectType); ok {
			na.Items = append(na.Items, o.List.Filter("NodeAttestor", "tpm").Items...)
		}
	}
	if len(na.Items) != 1 {
		t.Fatalf("%s: want one plugins { NodeAttestor \"tpm\" }, got %d", name, len(na.Items))
	}
	body, ok := na.Items[0].Val.(*ast.ObjectType)
	if !ok {
		t.Fatalf("%s: NodeAttestor \"tpm\" is not a block", name)
	}
	var plugin struct {
		PluginCmd string `hcl:"plugin_cmd"`
	}
	if err := hcl.DecodeObject(&plugin, body); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	pd := body.List.Filter("plugin_data")
	if len(pd.Items) != 1 {
		t.Fatalf("%s: want one plugin_data block, got %d", name, len(pd.Items))
	}
	obj, ok := pd.Items[0].Val.(*ast.ObjectType)
	if !ok {
		t.Fatalf("%s: plugin_data is not a block", name)
	}
	var buf bytes.Buffer
	if err := printer.Fprint(&buf, obj.List); err != nil {
		t.Fatal(err)
	}
	return buf.String(), plugin.PluginCmd
}

// trustFiles writes an EK CA bundle and an allowlist, and returns the
// replacements of the examples' paths by them: the server's Validate
// loads both files.
func trustFiles(t *testing.T) *strings.Replacer {
	t.Helper()
	dir := t.TempDir()
	ca, err := testca.New("examples EK root")
	if err != nil {
		t.Fatal(err)
	}
	roots := filepath.Join(dir, "ek-roots")
	if err := os.Mkdir(roots, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := ca.WritePEM(filepath.Join(roots, "root.pem")); err != nil {
		t.Fatal(err)
	}
	allow := filepath.Join(dir, "ek-allowlist.txt")
	if err := os.WriteFile(allow, []byte("# fleet\n"+strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer(
		`"/etc/tpmid/ek-roots"`, `"`+roots+`"`,
		`"/etc/tpmid/ek-allowlist.txt"`, `"`+allow+`"`,
	)
}

func validate(t *testing.T, name string, p validator, data string) {
	t.Helper()
	resp, err := p.Validate(context.Background(), &configv1.ValidateRequest{
		HclConfiguration:  data,
		CoreConfiguration: &configv1.CoreConfiguration{TrustDomain: "example.org"},
	})
	if err != nil {
		t.Fatalf("%s: Validate: %v", name, err)
	}
	if !resp.GetValid() {
		t.Errorf("%s: plugin_data refused:\n%s\nnotes: %q", name, data, resp.GetNotes())
	} else if len(resp.GetNotes()) > 0 {
		// A deprecated key in an example would teach the old name.
		t.Errorf("%s: notes on a valid configuration: %q", name, resp.GetNotes())
	}
}

// checkPlugin validates conf's NodeAttestor "tpm" with the plugin its
// plugin_cmd names.
func checkPlugin(t *testing.T, name, conf string, paths *strings.Replacer) {
	t.Helper()
	data, cmd := tpmPluginData(t, name, conf)
	switch base := filepath.Base(cmd); base {
	case "tpmid-server-plugin":
		validate(t, name, serverplugin.New(), paths.Replace(data))
	case "tpmid-agent-plugin":
		validate(t, name, agentplugin.New(), paths.Replace(data))
	default:
		t.Errorf("%s: plugin_cmd %q is not a tpmid plugin", name, cmd)
	}
}

func TestSystemdConfigs(t *testing.T) {
	paths := trustFiles(t)
	for _, name := range []string{"systemd/server.conf", "systemd/agent.conf"} {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		checkPlugin(t, name, string(b), paths)
	}
}

// TestDocSamples checks the sample configurations of the plugin reference
// pages: every ```hcl block that holds a NodeAttestor "tpm".
func TestDocSamples(t *testing.T) {
	paths := trustFiles(t)
	n := 0
	for _, page := range []string{"../doc/plugin_server_nodeattestor_tpm.md", "../doc/plugin_agent_nodeattestor_tpm.md"} {
		b, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		for i, block := range fencedBlocks(string(b), "hcl") {
			if !strings.Contains(block, `NodeAttestor "tpm"`) {
				continue
			}
			n++
			// The pages show the block alone, as it sits in plugins {}.
			checkPlugin(t, filepath.Base(page)+" sample "+string(rune('1'+i)), "plugins {\n"+block+"\n}\n", paths)
		}
	}
	if n < 3 {
		t.Errorf("found %d sample configurations in the plugin pages, want at least 3", n)
	}
}

// fencedBlocks returns the contents of the ```lang blocks of a Markdown text.
func fencedBlocks(md, lang string) []string {
	var out []string
	var cur *strings.Builder
	sc := bufio.NewScanner(strings.NewReader(md))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case cur == nil && strings.TrimSpace(line) == "```"+lang:
			cur = &strings.Builder{}
		case cur != nil && strings.TrimSpace(line) == "```":
			out = append(out, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(line + "\n")
		}
	}
	return out
}

func TestKubernetes(t *testing.T) {
	paths := trustFiles(t)
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	kinds := map[string]bool{}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var doc map[string]any
			if err := dec.Decode(&doc); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				t.Fatalf("%s: YAML: %v", name, err)
			}
			kind, _ := doc["kind"].(string)
			if kind == "" || doc["apiVersion"] == nil {
				t.Errorf("%s: a document without kind or apiVersion", name)
			}
			kinds[kind] = true
			switch kind {
			case "ConfigMap":
				data, _ := doc["data"].(map[string]any)
				conf, ok := data["agent.conf"].(string)
				if !ok {
					t.Fatalf("%s: no data.agent.conf", name)
				}
				checkPlugin(t, name+" agent.conf", conf, paths)
			case "DaemonSet":
				checkDaemonSet(t, name, doc)
			}
		}
	}
	for _, k := range []string{"ConfigMap", "DaemonSet"} {
		if !kinds[k] {
			t.Errorf("no %s among the manifests", k)
		}
	}
}

// checkDaemonSet checks what the example is for: the TPM device and the
// event log mounted into spire-agent, and the plugins from an init
// container into a volume spire-agent mounts.
func checkDaemonSet(t *testing.T, name string, doc map[string]any) {
	t.Helper()
	var ds struct {
		Spec struct {
			Template struct {
				Spec struct {
					InitContainers []container `yaml:"initContainers"`
					Containers     []container `yaml:"containers"`
					Volumes        []struct {
						Name     string `yaml:"name"`
						HostPath *struct {
							Path string `yaml:"path"`
						} `yaml:"hostPath"`
					} `yaml:"volumes"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	b, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &ds); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	spec := ds.Spec.Template.Spec
	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	if len(spec.InitContainers) == 0 || len(spec.Containers) == 0 {
		t.Fatalf("%s: want an init container and spire-agent", name)
	}
	pluginVolume := ""
	for _, m := range spec.InitContainers[0].VolumeMounts {
		if m.MountPath == "/opt/spire/plugins" {
			pluginVolume = m.Name
		}
	}
	agent := spec.Containers[0]
	mounted := map[string]string{} // mount path -> host path or volume
	for _, m := range agent.VolumeMounts {
		if hp, ok := hostPaths[m.Name]; ok {
			mounted[m.MountPath] = hp
		} else {
			mounted[m.MountPath] = "volume:" + m.Name
		}
	}
	if mounted["/dev/tpmrm0"] != "/dev/tpmrm0" {
		t.Errorf("%s: /dev/tpmrm0 is not mounted from the host", name)
	}
	if mounted["/sys/kernel/security"] != "/sys/kernel/security" {
		t.Errorf("%s: the event log (securityfs) is not mounted from the host", name)
	}
	if pluginVolume == "" || mounted["/opt/spire/plugins"] != "volume:"+pluginVolume {
		t.Errorf("%s: the init container's plugin volume is not spire-agent's /opt/spire/plugins", name)
	}
}

type container struct {
	Name         string `yaml:"name"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

// TestSystemdUnits checks the units' shape: sections, the non-root user,
// the tss group and the deliberate event-log grant.
func TestSystemdUnits(t *testing.T) {
	units := map[string]map[string]map[string][]string{}
	for _, name := range []string{"systemd/spire-agent.service", "systemd/spire-server.service"} {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		u, err := parseUnit(string(b))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, s := range []string{"Unit", "Service", "Install"} {
			if u[s] == nil {
				t.Errorf("%s: no [%s] section", name, s)
			}
		}
		if user := u["Service"]["User"]; len(user) != 1 || user[0] == "root" {
			t.Errorf("%s: User=%q, want one non-root user", name, user)
		}
		units[name] = u
	}
	agent := units["systemd/spire-agent.service"]["Service"]
	if g := strings.Join(agent["SupplementaryGroups"], " "); !strings.Contains(" "+g+" ", " tss ") {
		t.Errorf("spire-agent.service: SupplementaryGroups=%q lacks tss", g)
	}
	if !slicesContain(agent["DeviceAllow"], "/dev/tpmrm0 rw") {
		t.Errorf("spire-agent.service: DeviceAllow=%q lacks /dev/tpmrm0 rw", agent["DeviceAllow"])
	}
	grant := false
	for _, c := range agent["ExecStartPre"] {
		if strings.HasPrefix(c, "+") && strings.Contains(c, "binary_bios_measurements") {
			grant = true
		}
	}
	if !grant {
		t.Error("spire-agent.service: no privileged ExecStartPre granting the event log")
	}
}

func slicesContain(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// parseUnit reads a systemd unit file: sections of Key=Value lines, with
// comments and blank lines; a key may repeat.
func parseUnit(text string) (map[string]map[string][]string, error) {
	out := map[string]map[string][]string{}
	var section map[string][]string
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = map[string][]string{}
			out[line[1:len(line)-1]] = section
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == nil || k == "" || strings.ContainsAny(k, " \t") {
				return nil, fmt.Errorf("line %d: not Key=Value: %s", i+1, line)
			}
			section[k] = append(section[k], v)
		}
	}
	return out, nil
}
