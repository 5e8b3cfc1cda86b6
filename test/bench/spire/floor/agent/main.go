// Command agent is bench-spire's no-op agent NodeAttestor (package floor):
// one random payload, no TPM, no key.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"

	"github.com/spiffe/spire-plugin-sdk/pluginmain"
	nodeattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/nodeattestor/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
)

type plugin struct {
	nodeattestorv1.UnimplementedNodeAttestorServer
	configv1.UnimplementedConfigServer
}

func (plugin) AidAttestation(stream nodeattestorv1.NodeAttestor_AidAttestationServer) error {
	id := make([]byte, 16)
	rand.Read(id)
	return stream.Send(&nodeattestorv1.PayloadOrChallengeResponse{
		Data: &nodeattestorv1.PayloadOrChallengeResponse_Payload{Payload: []byte(hex.EncodeToString(id))},
	})
}

func (plugin) Configure(context.Context, *configv1.ConfigureRequest) (*configv1.ConfigureResponse, error) {
	return &configv1.ConfigureResponse{}, nil
}

func main() {
	p := plugin{}
	pluginmain.Serve(nodeattestorv1.NodeAttestorPluginServer(p), configv1.ConfigServiceServer(p))
}
