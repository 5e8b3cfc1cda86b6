// Command profplugin is the tpmid server plugin (the same plugin.New and
// pluginmain.Serve as cmd/tpmid-server-plugin) with a CPU profile around
// its whole life, written to $TPMID_BENCH_CPUPROFILE when the host unloads
// it. It is built only by the load harness's -cpuprofile; the shipped
// plugin has no profiling hook.
package main

import (
	"fmt"
	"os"
	"runtime/pprof"

	"github.com/spiffe/spire-plugin-sdk/pluginmain"
	nodeattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/nodeattestor/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"

	"github.com/tpmid/tpmid/internal/grpcbuffers"
	"github.com/tpmid/tpmid/pkg/server/plugin"
)

// As cmd/tpmid-server-plugin.
func init() { grpcbuffers.Install() }

func main() {
	if path := os.Getenv("TPMID_BENCH_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "profplugin:", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "profplugin:", err)
			os.Exit(1)
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	p := plugin.New()
	// go-plugin's Serve returns when the host shuts the plugin down
	// gracefully, so the profile is flushed.
	pluginmain.Serve(
		nodeattestorv1.NodeAttestorPluginServer(p),
		configv1.ConfigServiceServer(p),
	)
}
