// Command tpmid is the operator's tool: it inspects and verifies TPM evidence
// outside SPIRE (event logs, quotes, EK certificates). Each subcommand lives in
// its own file and registers itself on rootCmd.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

var rootCmd = &cobra.Command{
	Use:           "tpmid",
	Short:         "TPM-rooted machine identity: inspect and verify TPM evidence",
	SilenceUsage:  true,
	SilenceErrors: true,
}

// printJSON writes v as indented JSON, the --json form of every command.
func printJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func main() {
	if err := rootCmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "tpmid:", err)
		os.Exit(1)
	}
}
