package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"github.com/spiffe/spire-plugin-sdk/private"
	nodeattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/nodeattestor/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc"
)

// pluginType is the SPIRE plugin type the server plugin serves; the SDK uses
// it as go-plugin's magic cookie key and value, and as the name under
// which the plugin is dispensed.
const pluginType = "NodeAttestor"

// hostedPlugin is the server plugin process as spire-server hosts it:
// started by go-plugin with SPIRE's handshake, one gRPC connection, the SDK's
// private Init call, then Configure.
type hostedPlugin struct {
	client *goplugin.Client
	cmd    *exec.Cmd
	conn   *grpc.ClientConn
	na     nodeattestorv1.NodeAttestorClient
	cfg    configv1.ConfigClient
}

// grpcOnly is go-plugin's client side of the plugin: it hands back the raw
// connection, on which the SDK's service clients are made.
type grpcOnly struct {
	goplugin.NetRPCUnsupportedPlugin
}

func (grpcOnly) GRPCServer(*goplugin.GRPCBroker, *grpc.Server) error {
	return errors.New("the harness does not serve plugins")
}

func (grpcOnly) GRPCClient(_ context.Context, _ *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return c, nil
}

// startPlugin launches path with env added to the harness's environment.
// The plugin's log (JSON on its stderr, which go-plugin parses as SPIRE's
// catalog does) is kept at warnings and above.
func startPlugin(ctx context.Context, path string, env []string) (*hostedPlugin, error) {
	cmd := exec.Command(path)
	cmd.Env = append(os.Environ(), env...)
	client := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig: goplugin.HandshakeConfig{
			ProtocolVersion:  1,
			MagicCookieKey:   pluginType,
			MagicCookieValue: pluginType,
		},
		Plugins:          map[string]goplugin.Plugin{pluginType: grpcOnly{}},
		Cmd:              cmd,
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		Logger: hclog.New(&hclog.LoggerOptions{
			Name: "plugin", Level: hclog.Warn, Output: os.Stderr,
		}),
	})
	p := &hostedPlugin{client: client, cmd: cmd}
	rpc, err := client.Client()
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("starting %s: %w", path, err)
	}
	raw, err := rpc.Dispense(pluginType)
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("dispensing %s from %s: %w", pluginType, path, err)
	}
	p.conn = raw.(*grpc.ClientConn)
	// SPIRE's catalog calls the SDK's Init first (it wires the plugin's
	// logger) and offers its host services; the server NodeAttestor uses none.
	names, err := private.Init(ctx, p.conn, nil)
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("plugin Init: %w", err)
	}
	want := map[string]bool{"spire.plugin.server.nodeattestor.v1.NodeAttestor": false, "spire.service.common.config.v1.Config": false}
	for _, n := range names {
		if _, ok := want[n]; ok {
			want[n] = true
		}
	}
	for n, ok := range want {
		if !ok {
			client.Kill()
			return nil, fmt.Errorf("plugin does not serve %s (it serves %v)", n, names)
		}
	}
	p.na = nodeattestorv1.NewNodeAttestorClient(p.conn)
	p.cfg = configv1.NewConfigClient(p.conn)
	return p, nil
}

// configure sends plugin_data as spire-server does, with its trust domain.
func (p *hostedPlugin) configure(ctx context.Context, trustDomain, hcl string) error {
	_, err := p.cfg.Configure(ctx, &configv1.ConfigureRequest{
		CoreConfiguration: &configv1.CoreConfiguration{TrustDomain: trustDomain},
		HclConfiguration:  hcl,
	})
	return err
}

// pid is the plugin process's.
func (p *hostedPlugin) pid() int { return p.cmd.Process.Pid }

// stop unloads the plugin as SPIRE does: the SDK's Deinit (which closes the
// store), then go-plugin's graceful shutdown.
func (p *hostedPlugin) stop(ctx context.Context) {
	_ = private.Deinit(ctx, p.conn)
	p.client.Kill()
}
