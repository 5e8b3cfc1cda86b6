package plugin_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/spiffe/spire-plugin-sdk/pluginsdk"
	"github.com/spiffe/spire-plugin-sdk/plugintest"
	agentnav1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/nodeattestor/v1"
	servernav1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/nodeattestor/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tpmid/tpmid/internal/swtpm"
	"github.com/tpmid/tpmid/internal/testmachine"
	agentplugin "github.com/tpmid/tpmid/pkg/agent/plugin"
	serverplugin "github.com/tpmid/tpmid/pkg/server/plugin"
)

// pair serves the agent and server plugins over the plugin SDK's real gRPC
// transport, as spire-agent and spire-server would load them.
type pair struct {
	agent  *agentnav1.NodeAttestorPluginClient
	server *servernav1.NodeAttestorPluginClient
}

func servePair(t *testing.T, agentHCL, serverHCL string) *pair {
	t.Helper()
	return servePairLog(t, agentHCL, serverHCL, nil)
}

// servePairLog is servePair with the server plugin's log going to log.
func servePairLog(t *testing.T, agentHCL, serverHCL string, log hclog.Logger) *pair {
	t.Helper()
	p := &pair{agent: new(agentnav1.NodeAttestorPluginClient)}
	agentCfg := new(configv1.ConfigServiceClient)
	ap := agentplugin.New()
	plugintest.ServeInBackground(t, plugintest.Config{
		PluginServer:   agentnav1.NodeAttestorPluginServer(ap),
		PluginClient:   p.agent,
		ServiceServers: []pluginsdk.ServiceServer{configv1.ConfigServiceServer(ap)},
		ServiceClients: []pluginsdk.ServiceClient{agentCfg},
	})
	core := &configv1.CoreConfiguration{TrustDomain: "example.org"}
	if _, err := agentCfg.Configure(context.Background(), &configv1.ConfigureRequest{CoreConfiguration: core, HclConfiguration: agentHCL}); err != nil {
		t.Fatalf("configure agent plugin: %v", err)
	}
	p.server = serveServer(t, serverHCL, log)
	return p
}

// serveServer serves the server plugin alone over the plugin SDK's real
// gRPC transport, as spire-server loads it, and configures it; log, when
// not nil, receives the plugin's log.
func serveServer(t *testing.T, serverHCL string, log hclog.Logger) *servernav1.NodeAttestorPluginClient {
	t.Helper()
	client, serverCfg := new(servernav1.NodeAttestorPluginClient), new(configv1.ConfigServiceClient)
	sp := serverplugin.New()
	plugintest.ServeInBackground(t, plugintest.Config{
		PluginServer:   servernav1.NodeAttestorPluginServer(sp),
		PluginClient:   client,
		ServiceServers: []pluginsdk.ServiceServer{configv1.ConfigServiceServer(sp)},
		ServiceClients: []pluginsdk.ServiceClient{serverCfg},
		Logger:         log,
	})
	core := &configv1.CoreConfiguration{TrustDomain: "example.org"}
	if !strings.Contains(serverHCL, "store") {
		// Each test has its own store, never the default path.
		serverHCL += fmt.Sprintf("\nstore = %q\n", filepath.Join(t.TempDir(), "tpmid.db"))
	}
	t.Cleanup(func() { sp.Close() })
	if _, err := serverCfg.Configure(context.Background(), &configv1.ConfigureRequest{CoreConfiguration: core, HclConfiguration: serverHCL}); err != nil {
		t.Fatalf("configure server plugin: %v", err)
	}
	return client
}

// attest relays messages between the two plugins, as SPIRE does between
// agent and server, and returns the server's verdict.
func (p *pair) attest(t *testing.T) (*servernav1.AgentAttributes, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	as, err := p.agent.AidAttestation(ctx)
	if err != nil {
		return nil, err
	}
	ss, err := p.server.Attest(ctx)
	if err != nil {
		return nil, err
	}
	msg, err := as.Recv()
	if err != nil {
		return nil, fmt.Errorf("agent hello: %w", err)
	}
	if err := ss.Send(&servernav1.AttestRequest{Request: &servernav1.AttestRequest_Payload{Payload: msg.GetPayload()}}); err != nil {
		return nil, err
	}
	for {
		resp, err := ss.Recv()
		if err != nil {
			return nil, err
		}
		if attrs := resp.GetAgentAttributes(); attrs != nil {
			return attrs, nil
		}
		if err := as.Send(&agentnav1.Challenge{Challenge: resp.GetChallenge()}); err != nil {
			return nil, err
		}
		msg, err := as.Recv()
		if err != nil {
			return nil, fmt.Errorf("agent answer: %w", err)
		}
		if err := ss.Send(&servernav1.AttestRequest{Request: &servernav1.AttestRequest_ChallengeResponse{ChallengeResponse: msg.GetChallengeResponse()}}); err != nil {
			return nil, err
		}
	}
}

func TestPluginsOverGRPC(t *testing.T) {
	// The agent plugin opens its TPM itself at every attestation, as on a
	// real machine, so this test needs a TPM reachable by address: swtpm.
	m := testmachine.NewSwtpm(t, swtpm.Options{})
	device := m.Device
	agentHCL := fmt.Sprintf(`tpm_device = %q
event_log_path = %q
data_dir = %q`, device, m.LogPath, t.TempDir())

	t.Run("admitted", func(t *testing.T) {
		p := servePair(t, agentHCL, fmt.Sprintf(`ek_ca_bundle = %q`, m.TrustDir))
		attrs, err := p.attest(t)
		if err != nil {
			t.Fatalf("attestation refused: %v", err)
		}
		if want := "spiffe://example.org/spire/agent/tpm/" + m.EKHash; attrs.SpiffeId != want {
			t.Errorf("agent ID %s, want %s", attrs.SpiffeId, want)
		}
		if !attrs.CanReattest {
			t.Error("CanReattest is false")
		}
		if !strings.Contains(strings.Join(attrs.SelectorValues, " "), "ek_hash:"+m.EKHash) {
			t.Errorf("selectors %v lack ek_hash", attrs.SelectorValues)
		}
		// A second attestation reuses the AK kept in data_dir.
		if _, err := p.attest(t); err != nil {
			t.Fatalf("re-attestation refused: %v", err)
		}
	})

	t.Run("untrusted EK is PermissionDenied with the reason", func(t *testing.T) {
		p := servePair(t, agentHCL, fmt.Sprintf(`ek_ca_bundle = %q`, m.OtherDir))
		_, err := p.attest(t)
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "ek_not_admitted") {
			t.Fatalf("err = %v, want PermissionDenied naming ek_not_admitted", err)
		}
	})

	t.Run("oversized hello is InvalidArgument", func(t *testing.T) {
		p := servePair(t, agentHCL, fmt.Sprintf("ek_ca_bundle = %q\nmax_hello_size = 100", m.TrustDir))
		_, err := p.attest(t)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "too large") {
			t.Fatalf("err = %v, want InvalidArgument naming the size", err)
		}
	})
}
