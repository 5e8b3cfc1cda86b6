// Command server is bench-spire's no-op server NodeAttestor (package
// floor): it admits every agent, named by the payload it sends. Bench only.
package main

import (
	"context"
	"regexp"
	"sync"

	"github.com/spiffe/spire-plugin-sdk/pluginmain"
	nodeattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/nodeattestor/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// payloadRe is what the floor agent sends: 16 random bytes in hex.
var payloadRe = regexp.MustCompile(`^[0-9a-f]{32}$`)

type plugin struct {
	nodeattestorv1.UnimplementedNodeAttestorServer
	configv1.UnimplementedConfigServer

	mu sync.Mutex
	td string
}

func (p *plugin) Attest(stream nodeattestorv1.NodeAttestor_AttestServer) error {
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	id := string(req.GetPayload())
	if !payloadRe.MatchString(id) {
		return status.Error(codes.InvalidArgument, "floor: payload is not 32 hex digits")
	}
	p.mu.Lock()
	td := p.td
	p.mu.Unlock()
	return stream.Send(&nodeattestorv1.AttestResponse{
		Response: &nodeattestorv1.AttestResponse_AgentAttributes{AgentAttributes: &nodeattestorv1.AgentAttributes{
			SpiffeId:       "spiffe://" + td + "/spire/agent/floor/" + id,
			SelectorValues: []string{"id:" + id},
		}},
	})
}

func (p *plugin) Configure(_ context.Context, req *configv1.ConfigureRequest) (*configv1.ConfigureResponse, error) {
	td := req.GetCoreConfiguration().GetTrustDomain()
	if td == "" {
		return nil, status.Error(codes.InvalidArgument, "floor: no trust domain")
	}
	p.mu.Lock()
	p.td = td
	p.mu.Unlock()
	return &configv1.ConfigureResponse{}, nil
}

func main() {
	p := &plugin{}
	pluginmain.Serve(nodeattestorv1.NodeAttestorPluginServer(p), configv1.ConfigServiceServer(p))
}
