// Command tpmid-agent-plugin is the SPIRE agent NodeAttestor "tpm":
// configure it in spire-agent's plugins block with plugin_cmd.
package main

import (
	"fmt"
	"os"

	"github.com/spiffe/spire-plugin-sdk/pluginmain"
	nodeattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/nodeattestor/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"

	"github.com/tpmid/tpmid/internal/grpcbuffers"
	"github.com/tpmid/tpmid/internal/version"
	"github.com/tpmid/tpmid/pkg/agent/plugin"
)

// Messages get buffers of their own size, not 1 MiB (package grpcbuffers).
func init() { grpcbuffers.Install() }

func main() {
	// --version works outside SPIRE; pluginmain.Serve refuses to run there.
	if version.Requested(os.Args[1:]) {
		fmt.Println(version.Line("tpmid-agent-plugin"))
		return
	}
	p := plugin.New()
	pluginmain.Serve(
		nodeattestorv1.NodeAttestorPluginServer(p),
		configv1.ConfigServiceServer(p),
	)
}
