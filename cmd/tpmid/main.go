// Command tpmid is the operator's tool. It inspects and verifies TPM evidence
// outside SPIRE (event logs, quotes, EK certificates), and manages the server
// plugin's store: hosts (enroll, revoke, approve), reference profiles
// (capture, assign, retire), offline appraisal and the attestation record.
// Each subcommand lives in its own file and registers itself on rootCmd.
//
// Errors are one line on stderr and exit status 1; so is a boot that
// tpmid appraise denies (errDenied), after its verdict is printed.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

var rootCmd = &cobra.Command{
	Use:           "tpmid",
	Short:         "TPM-rooted machine identity: inspect and verify TPM evidence, manage hosts and profiles",
	SilenceUsage:  true,
	SilenceErrors: true,
}

func init() { rootCmd.AddCommand(newCACmd()) }

// printJSON writes v as indented JSON, the --json form of every command.
func printJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := rootCmd.ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tpmid:", err)
		os.Exit(1)
	}
}
