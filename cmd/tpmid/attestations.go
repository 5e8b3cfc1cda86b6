package main

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tpmid/tpmid/pkg/server/store"
)

func init() { rootCmd.AddCommand(newAttestationsCmd()) }

func newAttestationsCmd() *cobra.Command {
	sf := &storeFlags{}
	c := &cobra.Command{
		Use:           "attestations",
		SilenceUsage:  true, // also when run on its own (tests); rootCmd silences both
		SilenceErrors: true,
		Short:         "Read the record of attestation attempts (the plugin's store)",
	}
	sf.register(c, true)
	c.AddCommand(newAttestationsListCmd(sf))
	return c
}

// attemptJSON is one attestation attempt in attestations list --json and
// hosts show --json (see docs/cli.md).
type attemptJSON struct {
	ID       int64     `json:"id"`
	Time     time.Time `json:"time"`
	EKHash   string    `json:"ek_hash"`
	Hostname string    `json:"hostname"`
	Server   string    `json:"server"`
	Outcome  string    `json:"outcome"`
	Reasons  []string  `json:"reasons"`
	Profile  string    `json:"profile"`
}

func attemptView(a *store.Attempt) attemptJSON {
	return attemptJSON{ID: a.ID, Time: a.Time.UTC(), EKHash: a.EKHash, Hostname: a.Hostname, Server: a.Server,
		Outcome: a.Outcome, Reasons: orEmpty(a.Reasons), Profile: a.Profile}
}

// defaultAttemptLimit is --limit's default: the newest attempts, not a
// server's whole history.
const defaultAttemptLimit = 50

func newAttestationsListCmd(sf *storeFlags) *cobra.Command {
	var host, ek, since string
	var limit int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list [--host H] [--ek EKHASH] [--since T] [--limit N] [--json]",
		Short: "List attestation attempts, newest first",
		Long: `Lists attestation attempts, newest first: time, outcome, hostname (the
enrolled one, or the agent's claim when none), EK hash, the spire-server that
judged it, and the profile that allowed the boot or the reason it was refused.

--since takes an RFC 3339 time (2026-11-25T08:00:00Z) or a duration back from
now (24h, 90m, 7d). --limit 0 lists every match.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := store.AttemptFilter{Hostname: strings.ToLower(strings.TrimSpace(host)), Limit: limit}
			if ek != "" {
				f.EKHash = strings.ToLower(strings.TrimSpace(ek))
				if !isEKHash(f.EKHash) {
					return fmt.Errorf("--ek %q is not an EK hash (64 hex digits)", ek)
				}
			}
			if limit < 0 {
				return errors.New("--limit must be 0 (no limit) or more")
			}
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return err
				}
				f.Since = t
			}
			st, _, err := sf.open(cmd.Context(), false)
			if err != nil {
				return err
			}
			defer st.Close()
			var as []store.Attempt
			if err := st.View(cmd.Context(), func(tx store.Tx) error {
				as, err = tx.Attempts(cmd.Context(), f)
				return err
			}); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				views := make([]attemptJSON, 0, len(as))
				for i := range as {
					views = append(views, attemptView(&as[i]))
				}
				return printJSON(out, views)
			}
			if len(as) == 0 {
				fmt.Fprintln(out, "no attestation attempts match")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTIME\tOUTCOME\tHOSTNAME\tEK HASH\tSERVER\tPROFILE / REASON")
			for _, a := range as {
				detail := a.Profile
				if len(a.Reasons) > 0 {
					detail = strings.Join(a.Reasons, "; ")
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, fmtTime(a.Time), a.Outcome, orDash(a.Hostname),
					orDash(a.EKHash), orDash(a.Server), orDash(oneLine(detail)))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if limit > 0 && len(as) == limit {
				fmt.Fprintf(out, "(the newest %d; --limit 0 for all)\n", limit)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&host, "host", "", "only attempts for this hostname")
	fl.StringVar(&ek, "ek", "", "only attempts by this EK hash")
	fl.StringVar(&since, "since", "", "only attempts at or after this RFC 3339 time, or this long ago (24h, 7d)")
	fl.IntVar(&limit, "limit", defaultAttemptLimit, "at most this many, the newest (0: no limit)")
	fl.BoolVar(&asJSON, "json", false, "print a JSON array of attempts")
	return cmd
}

// oneLine keeps a stored text on one line of the table.
func oneLine(s string) string {
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' || r == '\t' }), " ")
}
