// Command tpmid-agent-plugin is the SPIRE agent NodeAttestor "tpm":
// configure it in spire-agent's plugins block with plugin_cmd.
package main

import (
	"github.com/spiffe/spire-plugin-sdk/pluginmain"
	nodeattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/nodeattestor/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"

	"github.com/tpmid/tpmid/pkg/agent/plugin"
)

func main() {
	p := plugin.New()
	pluginmain.Serve(
		nodeattestorv1.NodeAttestorPluginServer(p),
		configv1.ConfigServiceServer(p),
	)
}
