// Command tpmid is the operator's tool. It inspects and verifies TPM evidence
// outside SPIRE (event logs, quotes, EK certificates), and manages the server
// plugin's store: hosts (enroll, revoke, approve), reference profiles
// (capture, assign, retire), offline appraisal and the attestation record.
// Each subcommand lives in its own file and registers itself on rootCmd.
//
// Errors are one line on stderr and exit status 1; so is a boot that
// tpmid appraise denies (errDenied), after its verdict is printed. Usage
// errors (an unknown command or flag, a missing or malformed argument)
// exit 2. With --json, the error is a JSON object on stderr (see
// docs/cli.md).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tpmid/tpmid/pkg/server/verify"
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

// Exit statuses.
const (
	exitFailed = 1 // the check failed, or the command could not do its work
	exitUsage  = 2 // the command line is wrong
)

// usageError marks a command-line mistake (exit 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// markUsageErrors makes flag and argument errors of every command usage
// errors.
func markUsageErrors(c *cobra.Command) {
	c.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	if c.HasParent() && !c.Runnable() && c.HasSubCommands() {
		// cobra prints help and exits 0 for "tpmid hosts bogus".
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unknown command %q for %q", args[0], cmd.CommandPath())}
			}
			return cmd.Help()
		}
	}
	if a := c.Args; a != nil {
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := a(cmd, args); err != nil {
				return usageError{err}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		markUsageErrors(sub)
	}
}

// isUsage reports whether err is a command-line mistake, including those
// cobra returns without a hook (unknown command, required flag not set).
func isUsage(err error) bool {
	var u usageError
	if errors.As(err, &u) {
		return true
	}
	msg := err.Error()
	return strings.HasPrefix(msg, "unknown command ") || strings.HasPrefix(msg, "required flag(s) ") ||
		strings.HasPrefix(msg, "unknown flag: ") || strings.HasPrefix(msg, "unknown shorthand flag: ")
}

// errorJSON is the --json form of an error.
type errorJSON struct {
	Error  string `json:"error"`
	Reason string `json:"reason"`
}

// reasonOf is the stable reason code of err: "usage", "denied" (tpmid
// appraise), a verification reason (ek_untrusted, quote_extra_data, ...),
// or "error".
func reasonOf(err error) string {
	switch {
	case isUsage(err):
		return "usage"
	case errors.Is(err, errDenied):
		return "denied"
	}
	if r := verify.ReasonOf(err); r != "" {
		return string(r)
	}
	return "error"
}

// wantsJSON reports whether the command ran (or was asked to run) with --json.
func wantsJSON(cmd *cobra.Command, args []string) bool {
	if cmd != nil {
		if f := cmd.Flags().Lookup("json"); f != nil && f.Changed {
			return f.Value.String() == "true"
		}
	}
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "--json" || a == "--json=true" {
			return true
		}
	}
	return false
}

// report prints err the way the command line asked (one line, or JSON on
// stderr) and returns the exit status.
func report(stderr io.Writer, cmd *cobra.Command, args []string, err error) int {
	code := exitFailed
	if isUsage(err) {
		code = exitUsage
	}
	if wantsJSON(cmd, args) {
		b, _ := json.Marshal(errorJSON{Error: err.Error(), Reason: reasonOf(err)})
		fmt.Fprintln(stderr, string(b))
	} else {
		fmt.Fprintln(stderr, "tpmid:", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return code
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	markUsageErrors(rootCmd)
	cmd, err := rootCmd.ExecuteContextC(ctx)
	stop()
	if err != nil {
		os.Exit(report(os.Stderr, cmd, os.Args[1:], err))
	}
}
