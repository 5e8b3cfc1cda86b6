// Command tpmid is the operator's tool: it inspects and verifies TPM evidence
// outside SPIRE (event logs, quotes, EK certificates). Each subcommand lives in
// its own file and registers itself on rootCmd.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

var rootCmd = &cobra.Command{
	Use:           "tpmid",
	Short:         "TPM-rooted machine identity: inspect and verify TPM evidence",
	SilenceUsage:  true,
	SilenceErrors: true,
}

func main() {
	if err := rootCmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "tpmid:", err)
		os.Exit(1)
	}
}
