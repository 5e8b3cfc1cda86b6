package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tpmid/tpmid/pkg/common/boundedfile"
	"github.com/tpmid/tpmid/pkg/common/eventlog"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/server/profile"
	"github.com/tpmid/tpmid/pkg/server/store"
)

func init() { rootCmd.AddCommand(newAppraiseCmd()) }

// errDenied is returned (wrapped) by tpmid appraise when no profile allows
// the boot, after the verdict is printed: main exits 1.
var errDenied = errors.New("boot denied")

// appraiseJSON is appraise --json (see docs/cli.md): what was compared and
// the verdict, whose allowed/profile/version/denials are profile.Verdict's.
type appraiseJSON struct {
	EventLog   string           `json:"eventlog"`
	Banks      []string         `json:"banks"`
	PCRs       []int            `json:"pcrs"`
	SecureBoot string           `json:"secure_boot"`
	Host       string           `json:"host,omitempty"`
	Profiles   []string         `json:"profiles"`
	Allowed    bool             `json:"allowed"`
	Profile    string           `json:"profile,omitempty"`
	Version    int              `json:"version,omitempty"`
	Denials    []profile.Denial `json:"denials"`
}

// offlineInput is the server's appraisal input for a log on its own: the
// log's replay stands in for the quote (every selected PCR of every bank,
// the reset value for one the log never extends), then the server's steps.
func offlineInput(l *eventlog.Log, banks []pcrs.Alg, list []int) (profile.Input, error) {
	replay, err := l.Replay()
	if err != nil {
		return profile.Input{}, fmt.Errorf("replay: %w", err)
	}
	quoted := pcrs.Values{}
	for _, bank := range banks {
		if !slices.Contains(l.Banks, bank) || slices.Contains(l.IncompleteBanks, bank) {
			return profile.Input{}, fmt.Errorf("the log has no complete %s bank (banks %v): the server refuses a quoted bank the log cannot explain", bank, l.Banks)
		}
		for _, i := range list {
			v, ok := replay.Get(bank, i)
			if !ok {
				v = bank.ResetValue(i)
			}
			quoted.Set(bank, i, v)
		}
	}
	r, err := eventlog.VerifyAgainst(l, quoted)
	switch {
	case errors.Is(err, eventlog.ErrEventTampered):
		return profile.Input{}, fmt.Errorf("eventlog_tampered: %w", err)
	case err != nil:
		return profile.Input{}, fmt.Errorf("eventlog: %w", err)
	}
	// eventlog.SecureBoot, read only when PCR7 is selected, as the server
	// reads it only from a quoted PCR7.
	sb, err := eventlog.VerifiedSecureBoot(l, r)
	if err != nil {
		return profile.Input{}, fmt.Errorf("eventlog_pcr7: %w", err)
	}
	return profile.Input{Log: l, Replayed: r, Quoted: quoted, SecureBoot: sb}, nil
}

func newAppraiseCmd() *cobra.Command {
	sf := &storeFlags{}
	var logPath, pcrList, host string
	var names, files, banks []string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "appraise --eventlog FILE (--profile NAME | --profile-file FILE | --host H) [--bank sha256] [--pcrs 0-7] [--json]",
		Short: "Appraise an event log against profiles, offline, as the server would",
		Long: `Runs the server's appraisal on an event log, offline: parse the log,
check every digest defined over event data, replay it, read the Secure Boot
state from PCR7 (when PCR7 is selected), and judge the boot against the
profiles (profile.Appraise): the first that allows it wins.

There is no TPM here: the log's own replay stands in for the quote, as if the
TPM had quoted exactly the values the log claims for --bank and --pcrs (set
them as the plugin's pcr_banks and pcrs). So this answers "would this boot be
allowed", not "did this machine boot so"; only a verified quote answers that.

Profiles: --profile NAME (the newest version in the store; repeatable),
--profile-file FILE (a profile's JSON form; repeatable), or --host H (the
profiles the server appraises host H against: its own, its hostname's and its
groups', minus those it retired). A host with no profile is not appraised by
the server: every boot is admitted, and so here.

Exit status 0: allowed. 1: denied (every unrecognised event is listed: PCR,
event number, type, digest, description) or an error.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if len(names) == 0 && len(files) == 0 && host == "" {
				return errors.New("give --profile, --profile-file or --host")
			}
			if host != "" && (len(names) > 0 || len(files) > 0) {
				return errors.New("--host appraises against the host's own profiles: drop --profile and --profile-file")
			}
			list, err := parsePCRList(pcrList)
			if err != nil {
				return fmt.Errorf("--pcrs: %w", err)
			}
			var algs []pcrs.Alg
			for _, b := range banks {
				a, err := pcrs.ParseAlg(b)
				if err != nil {
					return fmt.Errorf("--bank: %w", err)
				}
				if slices.Contains(algs, a) {
					return fmt.Errorf("--bank %s given twice", a)
				}
				algs = append(algs, a)
			}
			l, err := readEventLog(logPath)
			if err != nil {
				return err
			}
			in, err := offlineInput(l, algs, list)
			if err != nil {
				return fmt.Errorf("%s: %w", logPath, err)
			}

			var ps []profile.Profile
			var hostState store.HostState
			for _, f := range files {
				b, err := boundedfile.Read(f, profile.MaxSize)
				if err != nil {
					return err
				}
				p, err := profile.ParseProfile(b)
				if err != nil {
					return fmt.Errorf("--profile-file %s: %w", f, err)
				}
				ps = append(ps, *p)
			}
			if len(names) > 0 || host != "" {
				st, _, err := sf.open(ctx, false)
				if err != nil {
					return err
				}
				defer st.Close()
				var stored []store.Profile
				if err := st.View(ctx, func(tx store.Tx) error {
					stored = nil
					if host != "" {
						h, err := lookupHost(ctx, tx, host)
						if err != nil {
							return err
						}
						host, hostState = h.Hostname, h.State
						stored, err = tx.ProfilesFor(ctx, h)
						return err
					}
					for _, n := range names {
						p, err := tx.Profile(ctx, n)
						if errors.Is(err, store.ErrNotFound) {
							return fmt.Errorf("no profile %q in the store", n)
						}
						if err != nil {
							return err
						}
						stored = append(stored, *p)
					}
					return nil
				}); err != nil {
					return err
				}
				var sps []profile.Profile
				for _, sp := range stored {
					p, err := profile.ParseProfile(sp.Body)
					if err != nil {
						return fmt.Errorf("profile_invalid: profile %s version %d: %w", sp.Name, sp.Version, err)
					}
					p.Version = sp.Version
					sps = append(sps, *p)
				}
				ps = append(sps, ps...)
			}

			rep := appraiseJSON{EventLog: logPath, PCRs: list, SecureBoot: "unknown", Host: host, Profiles: []string{}, Denials: []profile.Denial{}}
			for _, a := range algs {
				rep.Banks = append(rep.Banks, a.String())
			}
			if in.SecureBoot != nil {
				rep.SecureBoot = in.SecureBoot.Mode.String()
			}
			for _, p := range ps {
				rep.Profiles = append(rep.Profiles, profileRef(p))
			}
			if len(ps) == 0 {
				// Only --host gets here: the server does not appraise a
				// host without profiles.
				rep.Allowed = true
			} else {
				v := profile.Appraise(in, ps)
				rep.Allowed, rep.Profile, rep.Version = v.Allowed, v.Profile, v.Version
				if v.Denials != nil {
					rep.Denials = v.Denials
				}
			}
			out := cmd.OutOrStdout()
			if asJSON {
				if err := printJSON(out, rep); err != nil {
					return err
				}
			} else {
				printVerdict(out, &rep, hostState)
			}
			if !rep.Allowed {
				n := 0
				for _, d := range rep.Denials {
					n += len(d.Unrecognised)
				}
				return fmt.Errorf("%w by %d profile(s): %d unrecognised event(s), %d failed check(s)", errDenied, len(rep.Denials), n, failedChecks(rep.Denials))
			}
			return nil
		},
	}
	f := cmd.Flags()
	sf.register(cmd, false)
	f.StringVar(&logPath, "eventlog", "", "the TCG binary event log to appraise")
	f.StringArrayVar(&names, "profile", nil, "a profile in the store, newest version (repeatable)")
	f.StringArrayVar(&files, "profile-file", nil, "a profile's JSON file (repeatable)")
	f.StringVar(&host, "host", "", "appraise against this host's profiles (hostname or EK hash)")
	f.StringSliceVar(&banks, "bank", []string{"sha256"}, "quoted PCR bank(s), as the plugin's pcr_banks")
	f.StringVar(&pcrList, "pcrs", "0-7", "quoted PCRs, as the plugin's pcrs: e.g. 0-7 or 0,2,4-9")
	f.BoolVar(&asJSON, "json", false, "print the verdict as JSON")
	_ = cmd.MarkFlagRequired("eventlog")
	return cmd
}

func profileRef(p profile.Profile) string {
	if p.Version == 0 {
		return p.Name // a file: not stored, no version
	}
	return fmt.Sprintf("%s@%d", p.Name, p.Version)
}

func failedChecks(ds []profile.Denial) int {
	n := 0
	for _, d := range ds {
		n += len(d.Failed)
	}
	return n
}

// printVerdict is appraise's text form: the verdict, then per denying
// profile every unrecognised event and every failed check, in full.
func printVerdict(out io.Writer, rep *appraiseJSON, state store.HostState) {
	fmt.Fprintf(out, "appraised %s: banks %s, PCRs %s, secure boot %s (the log's replay stands in for the quote)\n",
		rep.EventLog, strings.Join(rep.Banks, ","), pcrString(rep.PCRs), rep.SecureBoot)
	if state == store.HostRevoked {
		fmt.Fprintf(out, "note: host %s is revoked: the server refuses it whatever its boot\n", rep.Host)
	}
	switch {
	case rep.Allowed && rep.Profile == "":
		fmt.Fprintf(out, "ALLOWED: host %s has no profile, so the server does not appraise its boot\n", rep.Host)
		return
	case rep.Allowed:
		ref := rep.Profile
		if rep.Version > 0 {
			ref = fmt.Sprintf("%s@%d", rep.Profile, rep.Version)
		}
		fmt.Fprintf(out, "ALLOWED by profile %s\n", ref)
		return
	}
	fmt.Fprintf(out, "DENIED by %d profile(s)\n", len(rep.Denials))
	for _, d := range rep.Denials {
		ref := d.Profile
		if d.Version > 0 {
			ref = fmt.Sprintf("%s@%d", d.Profile, d.Version)
		}
		fmt.Fprintf(out, "\nprofile %s:\n", ref)
		if len(d.Unrecognised) > 0 {
			fmt.Fprintf(out, "  %d unrecognised event(s):\n", len(d.Unrecognised))
			printEventRefs(out, d.Unrecognised)
		}
		for _, f := range d.Failed {
			fmt.Fprintf(out, "  failed %s: %s\n", f.Rule, f.Reason)
			if len(f.Events) > 0 {
				printEventRefs(out, f.Events)
			}
		}
	}
}

func printEventRefs(out io.Writer, refs []profile.EventRef) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "    PCR\tEVENT\tTYPE\tDIGEST\tDESCRIPTION")
	for _, r := range refs {
		fmt.Fprintf(tw, "    %d\t#%d\t%s\t%s:%s\t%s\n", r.PCR, r.Event, r.Type, r.Bank, r.Digest, orDash(oneLine(r.Description)))
	}
	tw.Flush()
}

// pcrString renders a PCR list compactly: 0-7,9.
func pcrString(l []int) string {
	var parts []string
	for i := 0; i < len(l); {
		j := i
		for j+1 < len(l) && l[j+1] == l[j]+1 {
			j++
		}
		if j > i {
			parts = append(parts, fmt.Sprintf("%d-%d", l[i], l[j]))
		} else {
			parts = append(parts, fmt.Sprint(l[i]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}
