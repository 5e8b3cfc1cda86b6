// Package integration runs tpmid end to end: real spire-server and
// spire-agent (v1.13.3, from scripts/ensure-spire.sh) with tpmid's plugins,
// against swtpm software TPMs whose EK certificates come from local CAs.
//
// The tests skip, saying why, when swtpm or the SPIRE binaries are missing;
// `make test` and .ci/run install both first. Every run's configs and logs
// are kept in out/integration/<test name>/ in the checkout; tpmid stores,
// agent sockets and the node store tests' TPM states go to temporary
// directories.
//
// nodestore_test.go and postgres_test.go show the node store (enrollment,
// revocation, profiles, reboot counters, a shared PostgreSQL, an outage);
// docs/demo.md says what each test shows and what it needs.
package integration

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tpmid/tpmid/internal/demo"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// The plugins are built once for all tests.
var (
	pluginsOnce  sync.Once
	pluginsBuilt *demo.Plugins
	pluginsErr   error
)

// newEnv prepares a harness whose logs go to out/integration/<test>. Its
// spire-servers keep their tpmid store in the test's temporary directory.
func newEnv(t *testing.T) (*testEnv, context.Context) {
	t.Helper()
	if m := demo.MissingSwtpm(); len(m) > 0 {
		t.Skipf("swtpm is needed (missing %s): apt-get install swtpm swtpm-tools, or run make deps", strings.Join(m, ", "))
	}
	root, err := demo.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := demo.FindSPIRE(root); err != nil {
		t.Skipf("SPIRE binaries are needed: %v", err)
	}
	pluginsOnce.Do(func() {
		pluginsBuilt, pluginsErr = demo.BuildPlugins(context.Background(), root,
			filepath.Join(root, "out", "integration", "bin"), filepath.Join(root, "out", "integration", "build.log"))
	})
	if pluginsErr != nil {
		t.Fatal(pluginsErr)
	}
	logDir := filepath.Join(root, "out", "integration", strings.ReplaceAll(t.Name(), "/", "_"))
	if err := os.RemoveAll(logDir); err != nil {
		t.Fatal(err)
	}
	// Made first, so removed last: after everything below has stopped.
	te := &testEnv{t: t, tmp: t.TempDir()}
	t.Cleanup(te.runLate)
	sockDir, err := os.MkdirTemp("", "tpmid-")
	if err != nil {
		t.Fatal(err)
	}
	te.sockDir = sockDir
	te.afterClose(func() { os.RemoveAll(sockDir) })
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	env, err := demo.New(ctx, demo.Config{
		Root: root, LogDir: logDir, Plugins: pluginsBuilt,
		Step: func(name string, d time.Duration, err error) {
			if err != nil {
				t.Logf("step %q failed after %s: %v", name, d.Round(time.Millisecond), err)
			} else {
				t.Logf("step %q: %s", name, d.Round(time.Millisecond))
			}
		},
	})
	if err != nil {
		cancel()
		if errors.Is(err, demo.ErrNoSPIRE) {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		env.Close()
		cancel()
		if t.Failed() {
			t.Logf("logs: %s", logDir)
		}
	})
	te.Env = env
	return te, ctx
}

var agentIDRe = regexp.MustCompile(`^spiffe://example\.org/spire/agent/tpm/([0-9a-f]{64})$`)

// certSelectors come from a verified EK certificate: only when the EK was
// admitted through ek_ca_bundle (under ek_policy = "allowlist" the
// certificate is not checked, so its attributes are not vouched for).
var certSelectors = []string{"manufacturer"}

// checkAttested asserts the agent ID shape and the selectors every tpmid
// agent gets (plus extra keys), and returns the selectors by key.
func checkAttested(t *testing.T, a *demo.Attestation, extra ...string) map[string]string {
	t.Helper()
	m := agentIDRe.FindStringSubmatch(a.SPIFFEID)
	if m == nil {
		t.Fatalf("agent ID %q is not spiffe://example.org/spire/agent/tpm/<hex sha256 of the EK>", a.SPIFFEID)
	}
	t.Logf("agent %s attested in %s (TPM commands: %q)", a.SPIFFEID, a.Duration.Round(time.Millisecond), a.TPMCommands)
	t.Logf("selectors: %s", strings.Join(a.Selectors, " "))
	sels := map[string]string{}
	for _, key := range append([]string{"pub_hash", "ek_hash", "secureboot"}, extra...) {
		v, ok := demo.Selector(a.Selectors, key)
		if !ok || v == "" {
			t.Errorf("selector tpm:%s:... missing from %v", key, a.Selectors)
		}
		sels[key] = v
	}
	if sels["pub_hash"] != "" && sels["pub_hash"] != m[1] {
		t.Errorf("pub_hash %s is not the agent ID's EK hash %s", sels["pub_hash"], m[1])
	}
	return sels
}

// TestEKTrust: an agent whose swtpm EK certificate chains to a CA the server
// trusts attests; an agent whose EK certificate comes from another CA is
// refused, and spire-server's log says why.
func TestEKTrust(t *testing.T) {
	env, ctx := newEnv(t)
	trustedCA := filepath.Join(env.LogDir, "trusted-ek-ca")
	good, err := env.NewNode(ctx, "trusted-node", demo.NodeOptions{CADir: trustedCA, Boot: demo.BootOptions{SecureBoot: true}})
	if err != nil {
		t.Fatal(err)
	}
	bad, err := env.NewNode(ctx, "untrusted-node", demo.NodeOptions{CADir: filepath.Join(env.LogDir, "untrusted-ek-ca"), Boot: demo.BootOptions{SecureBoot: true}})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := env.StartServer(ctx, "spire-server", demo.ServerOptions{EKCABundle: good.CABundle})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("trusted EK CA attests", func(t *testing.T) {
		a, err := env.Attest(ctx, srv, good, demo.AgentOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sels := checkAttested(t, a, certSelectors...)
		if want := "spiffe://example.org/spire/agent/tpm/" + good.EKHash; a.SPIFFEID != want {
			t.Errorf("agent ID %s, want %s (SHA-256 of the EK the harness read)", a.SPIFFEID, want)
		}
		if sels["secureboot"] != "enabled" {
			t.Errorf("secureboot selector %q, want enabled (SecureBoot=1 was measured)", sels["secureboot"])
		}
		recs, err := srv.Agents(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 1 || recs[0].ID != a.SPIFFEID || recs[0].AttestationType != demo.PluginName {
			t.Errorf("spire-server agent list: %+v", recs)
		}
	})

	t.Run("untrusted EK CA refused", func(t *testing.T) {
		a, err := env.Attest(ctx, srv, bad, demo.AgentOptions{Timeout: 30 * time.Second})
		var r *demo.RefusedError
		switch {
		case err == nil:
			t.Fatalf("agent with an EK certificate from an untrusted CA attested as %s", a.SPIFFEID)
		case !errors.As(err, &r):
			t.Fatalf("want a refusal in spire-server's log, got: %v", err)
		}
		t.Logf("refused: %s", r.Line)
		if !strings.Contains(r.Line, "ek_not_admitted") && !strings.Contains(strings.ToLower(r.Line), "unknown authority") {
			t.Errorf("refusal does not say the EK is not admitted: %s", r.Line)
		}
		recs, err := srv.Agents(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 1 {
			t.Errorf("spire-server agent list has %d agents, want only the trusted one: %+v", len(recs), recs)
		}
	})
}

// TestEKAllowlist: with ek_policy = "allowlist" an EK whose hash is listed
// attests although no CA is trusted at all; an unlisted one is refused.
func TestEKAllowlist(t *testing.T) {
	env, ctx := newEnv(t)
	listed, err := env.NewNode(ctx, "listed-node", demo.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	unlisted, err := env.NewNode(ctx, "unlisted-node", demo.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	allowlist := filepath.Join(env.LogDir, "ek-allowlist.txt")
	if err := os.WriteFile(allowlist, []byte("# EKs allowed to attest\n"+listed.EKHash+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv, err := env.StartServer(ctx, "spire-server", demo.ServerOptions{EKPolicy: "allowlist", EKHashAllowlist: allowlist})
	if err != nil {
		t.Fatal(err)
	}
	a, err := env.Attest(ctx, srv, listed, demo.AgentOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkAttested(t, a)
	if v, ok := demo.Selector(a.Selectors, "manufacturer"); ok {
		t.Logf("note: manufacturer selector %q without a verified EK certificate", v)
	}
	if !strings.HasSuffix(a.SPIFFEID, "/"+listed.EKHash) {
		t.Errorf("agent ID %s is not for the listed EK %s", a.SPIFFEID, listed.EKHash)
	}
	_, err = env.Attest(ctx, srv, unlisted, demo.AgentOptions{})
	var r *demo.RefusedError
	if !errors.As(err, &r) {
		t.Fatalf("unlisted EK: want a refusal, got %v", err)
	}
	if !strings.Contains(r.Line, "ek_not_admitted") {
		t.Errorf("refusal does not say the EK is not admitted: %s", r.Line)
	}
}

// TestRSAAK: an RSA attestation key (ak_algorithm = "rsa") on an RSA EK,
// booted with Secure Boot off.
func TestRSAAK(t *testing.T) {
	env, ctx := newEnv(t)
	node, err := env.NewNode(ctx, "node", demo.NodeOptions{Boot: demo.BootOptions{SecureBoot: false}})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := env.StartServer(ctx, "spire-server", demo.ServerOptions{EKCABundle: node.CABundle})
	if err != nil {
		t.Fatal(err)
	}
	a, err := env.Attest(ctx, srv, node, demo.AgentOptions{AKAlgorithm: "rsa"})
	if err != nil {
		t.Fatal(err)
	}
	if sels := checkAttested(t, a, certSelectors...); sels["secureboot"] != "disabled" {
		t.Errorf("secureboot selector %q, want disabled (SecureBoot=0 was measured)", sels["secureboot"])
	}
}

// TestECCEK: swtpm --ecc makes a P-384 EK of the TCG high range (template
// H-3, certificate at NV 0x01c00016, key at 0x81010016); the agent uses it
// (ek_algorithm p384) with a P-384 AK, whose quotes are signed with
// SHA-384, and the server makes the credential by the H-3 template
// (SHA-384, AES-256, ECDH seed).
func TestECCEK(t *testing.T) {
	env, ctx := newEnv(t)
	// swtpm's P-384 EK, a P-384 AK (ECDSA-SHA384 signatures) and quotes
	// over the SHA-384 bank as well as SHA-256.
	node, err := env.NewNode(ctx, "node", demo.NodeOptions{ECC: true,
		Boot: demo.BootOptions{SecureBoot: true, Banks: []pcrs.Alg{pcrs.SHA256, pcrs.SHA384}}})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := env.StartServer(ctx, "spire-server", demo.ServerOptions{EKCABundle: node.CABundle,
		PCRBanks: []string{"sha256", "sha384"}, PCRSelectors: true})
	if err != nil {
		t.Fatal(err)
	}
	a, err := env.Attest(ctx, srv, node, demo.AgentOptions{EKAlgorithm: "p384", AKAlgorithm: "p384"})
	if err != nil {
		t.Fatal(err)
	}
	checkAttested(t, a, certSelectors...)
	for _, bank := range []string{"sha256", "sha384"} {
		if v, ok := demo.Selector(a.Selectors, "pcr:"+bank+":7"); !ok || v == "" {
			t.Errorf("no quoted %s PCR7 selector in %v", bank, a.Selectors)
		}
	}
}
