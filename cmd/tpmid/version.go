package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tpmid/tpmid/internal/version"
)

// `tpmid version` and `tpmid --version`, from the build info.
func init() {
	rootCmd.Version = version.Get().String()
	rootCmd.SetVersionTemplate("tpmid {{.Version}}\n")
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, VCS revision and Go version this binary was built from",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if asJSON {
				return printJSON(cmd.OutOrStdout(), version.Get())
			}
			fmt.Fprintln(cmd.OutOrStdout(), version.Line("tpmid"))
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	rootCmd.AddCommand(cmd)
}
