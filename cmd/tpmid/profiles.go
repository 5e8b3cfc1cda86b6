package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/server/nodes"
	"github.com/tpmid/tpmid/pkg/server/profile"
	"github.com/tpmid/tpmid/pkg/server/store"
)

func init() { rootCmd.AddCommand(newProfilesCmd()) }

func newProfilesCmd() *cobra.Command {
	sf := &storeFlags{}
	c := &cobra.Command{
		Use:           "profiles",
		SilenceUsage:  true, // also when run on its own (tests); rootCmd silences both
		SilenceErrors: true,
		Short:         "Capture, list, show, assign and retire reference profiles (the plugin's store)",
	}
	sf.register(c, true)
	c.AddCommand(newProfilesCaptureCmd(sf), newProfilesListCmd(sf), newProfilesShowCmd(sf),
		newProfilesAssignCmd(sf, true), newProfilesAssignCmd(sf, false), newProfilesRetireCmd(sf))
	return c
}

func newProfilesCaptureCmd(sf *storeFlags) *cobra.Command {
	var logPath, name, pcrList, bank, outPath string
	var secureBoot, bootApps, kernels bool
	cmd := &cobra.Command{
		Use:   "capture --eventlog FILE --name NAME [--pcrs 0-7] [--bank sha256] [--secure-boot] [--boot-apps] [--kernels] [--out FILE]",
		Short: "Capture a reference profile from a known-good machine's event log",
		Long: `Builds a profile from an event log: for each selected PCR, every digest
the log extends into it in the bank (a PCR the log never extends is pinned to
its reset value). The log is trusted as it is: capture from a machine you
vouch for (its /sys/kernel/security/tpm0/binary_bios_measurements).

--secure-boot  require Secure Boot when the log says it was enabled
--boot-apps    only the log's PCR4 boot applications may run (PCR4 selected)
--kernels      only the log's kernels may boot

The profile is stored as a new version of NAME (printed as NAME@VERSION);
with --out it is written as JSON to FILE ("-": standard output) and no store
is opened.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if outPath != "" && (sf.dsn != "" || sf.config != "") {
				return errors.New("--out writes the profile to a file instead of the store: drop --store/--config")
			}
			list, err := parsePCRList(pcrList)
			if err != nil {
				return fmt.Errorf("--pcrs: %w", err)
			}
			alg, err := pcrs.ParseAlg(bank)
			if err != nil {
				return fmt.Errorf("--bank: %w", err)
			}
			l, err := readEventLog(logPath)
			if err != nil {
				return err
			}
			var opts []profile.Option
			if secureBoot {
				opts = append(opts, profile.RequireSecureBootIfEnabled())
			}
			if bootApps {
				opts = append(opts, profile.WithBootApplications())
			}
			if kernels {
				opts = append(opts, profile.WithKernels())
			}
			p, err := profile.Capture(l, name, alg, list, opts...)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if outPath != "" {
				b, err := json.MarshalIndent(p, "", "  ")
				if err != nil {
					return err
				}
				b = append(b, '\n')
				if outPath == "-" {
					_, err = out.Write(b)
					return err
				}
				if err := os.WriteFile(outPath, b, 0o644); err != nil {
					return err
				}
				fmt.Fprintf(out, "wrote profile %s to %s\n", p.Name, outPath)
				return nil
			}
			body, err := json.Marshal(p)
			if err != nil {
				return err
			}
			st, _, err := sf.open(cmd.Context(), true)
			if err != nil {
				return err
			}
			defer st.Close()
			var stored *store.Profile
			if err := st.Update(cmd.Context(), func(tx store.Tx) error {
				stored, err = tx.PutProfile(cmd.Context(), store.Profile{Name: p.Name, Body: body})
				return err
			}); err != nil {
				return err
			}
			fmt.Fprintf(out, "%s@%d\n", stored.Name, stored.Version)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&logPath, "eventlog", "", "the known-good machine's TCG binary event log")
	f.StringVar(&name, "name", "", "profile name ([A-Za-z0-9._-], at most 128 bytes)")
	f.StringVar(&pcrList, "pcrs", "0-7", "PCRs to capture: indices and ranges, e.g. 0-7 or 0,2,4-9")
	f.StringVar(&bank, "bank", "sha256", "PCR bank: sha1, sha256, sha384, sha512, sm3_256")
	f.BoolVar(&secureBoot, "secure-boot", false, "require Secure Boot if the log shows it enabled")
	f.BoolVar(&bootApps, "boot-apps", false, "add the rule: only these PCR4 boot applications")
	f.BoolVar(&kernels, "kernels", false, "add the rule: only these kernels")
	f.StringVar(&outPath, "out", "", "write the profile JSON here instead of storing it (- for stdout)")
	_ = cmd.MarkFlagRequired("eventlog")
	_ = cmd.MarkFlagRequired("name")
	return cmd
}

// profileJSON is one profile in profiles list --json and profiles show
// --json (see docs/cli.md): the newest version and who it applies to.
type profileJSON struct {
	Name      string    `json:"name"`
	Version   int       `json:"version"`
	CreatedAt time.Time `json:"created_at"`
	// Hosts it is assigned to: by assignment or in the host's own list.
	Hosts []string `json:"hosts"`
	// Groups it is assigned to.
	Groups []string `json:"groups"`
	// RetiredBy are the hosts that may no longer boot with it.
	RetiredBy []string `json:"retired_by"`
	// Body is the profile's JSON form (show only).
	Body json.RawMessage `json:"body,omitempty"`
}

// profileUse is who each profile name applies to.
type profileUse struct{ hosts, groups, retiredBy []string }

func profileUses(ctx context.Context, tx store.Tx) (map[string]*profileUse, error) {
	m := map[string]*profileUse{}
	get := func(n string) *profileUse {
		if m[n] == nil {
			m[n] = &profileUse{}
		}
		return m[n]
	}
	as, err := tx.Assignments(ctx)
	if err != nil {
		return nil, err
	}
	for _, a := range as {
		u := get(a.Profile)
		if a.Group != "" {
			u.groups = append(u.groups, a.Group)
		} else {
			u.hosts = append(u.hosts, a.Host)
		}
	}
	hs, err := tx.ListHosts(ctx)
	if err != nil {
		return nil, err
	}
	for _, h := range hs {
		for _, p := range h.Profiles {
			get(p).hosts = append(get(p).hosts, h.Hostname)
		}
		for _, p := range h.Retired {
			get(p).retiredBy = append(get(p).retiredBy, h.Hostname)
		}
	}
	for _, u := range m {
		for _, l := range []*[]string{&u.hosts, &u.groups, &u.retiredBy} {
			slices.Sort(*l)
			*l = slices.Compact(*l)
		}
	}
	return m, nil
}

func profileView(p *store.Profile, u *profileUse) profileJSON {
	v := profileJSON{Name: p.Name, Version: p.Version, CreatedAt: p.CreatedAt.UTC(), Hosts: []string{}, Groups: []string{}, RetiredBy: []string{}}
	if u != nil {
		v.Hosts, v.Groups, v.RetiredBy = orEmpty(u.hosts), orEmpty(u.groups), orEmpty(u.retiredBy)
	}
	return v
}

func newProfilesListCmd(sf *storeFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list [--json]",
		Short: "List profiles (newest version of each) and who they are assigned to",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			st, _, err := sf.open(ctx, false)
			if err != nil {
				return err
			}
			defer st.Close()
			var views []profileJSON
			if err := st.View(ctx, func(tx store.Tx) error {
				ps, err := tx.ListProfiles(ctx)
				if err != nil {
					return err
				}
				uses, err := profileUses(ctx, tx)
				if err != nil {
					return err
				}
				views = make([]profileJSON, 0, len(ps))
				for i := range ps {
					views = append(views, profileView(&ps[i], uses[ps[i].Name]))
				}
				return nil
			}); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, views)
			}
			if len(views) == 0 {
				fmt.Fprintln(out, "no profiles")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tVERSION\tCREATED\tHOSTS\tGROUPS\tRETIRED BY")
			for _, v := range views {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", v.Name, v.Version, fmtTime(v.CreatedAt),
					orDash(strings.Join(v.Hosts, ",")), orDash(strings.Join(v.Groups, ",")), orDash(strings.Join(v.RetiredBy, ",")))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array of profiles")
	return cmd
}

func newProfilesShowCmd(sf *storeFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show NAME [--json]",
		Short: "Show a profile's newest version, its assignments and its body",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			st, _, err := sf.open(ctx, false)
			if err != nil {
				return err
			}
			defer st.Close()
			var v profileJSON
			if err := st.View(ctx, func(tx store.Tx) error {
				p, err := tx.Profile(ctx, args[0])
				if errors.Is(err, store.ErrNotFound) {
					return fmt.Errorf("no profile %q in the store", args[0])
				}
				if err != nil {
					return err
				}
				uses, err := profileUses(ctx, tx)
				if err != nil {
					return err
				}
				v = profileView(p, uses[p.Name])
				v.Body = p.Body
				if !json.Valid(p.Body) {
					v.Body, _ = json.Marshal(string(p.Body))
				}
				return nil
			}); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, v)
			}
			fmt.Fprintf(out, "profile:    %s@%d (created %s)\n", v.Name, v.Version, fmtTime(v.CreatedAt))
			fmt.Fprintf(out, "hosts:      %s\n", orDash(strings.Join(v.Hosts, ", ")))
			fmt.Fprintf(out, "groups:     %s\n", orDash(strings.Join(v.Groups, ", ")))
			fmt.Fprintf(out, "retired by: %s\n", orDash(strings.Join(v.RetiredBy, ", ")))
			if _, err := profile.ParseProfile(v.Body); err != nil {
				fmt.Fprintf(out, "INVALID: %v (the server refuses hosts appraised against it: profile_invalid)\n", err)
			}
			var pretty any
			if err := json.Unmarshal(v.Body, &pretty); err == nil {
				return printJSON(out, pretty)
			}
			fmt.Fprintf(out, "%s\n", v.Body)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

// newProfilesAssignCmd is profiles assign (assign) or profiles unassign.
func newProfilesAssignCmd(sf *storeFlags, assign bool) *cobra.Command {
	var host, group string
	use, short := "assign", "Assign a profile to a host or a group: their boots must match one of their profiles"
	if !assign {
		use, short = "unassign", "Take a profile away from a host or a group"
	}
	cmd := &cobra.Command{
		Use:   use + " NAME (--host H | --group G)",
		Short: short,
		Long: short + `.

A host's profiles are its own (hosts approve), those assigned to its hostname
and those assigned to its groups, minus those retired for it. A host with no
profile at all is not appraised: every boot state is admitted.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			name := args[0]
			host = strings.ToLower(strings.TrimSpace(host))
			if (host == "") == (group == "") {
				return errors.New("give exactly one of --host, --group")
			}
			if host != "" && !nodes.ValidHostname(host) {
				return fmt.Errorf("--host %q is not a valid host name", host)
			}
			st, _, err := sf.open(ctx, false)
			if err != nil {
				return err
			}
			defer st.Close()
			var notes []string
			a := store.Assignment{Profile: name, Host: host, Group: group}
			err = st.Update(ctx, func(tx store.Tx) error {
				notes = nil
				var h *store.Host
				if host != "" {
					h, err = tx.HostByName(ctx, host)
					switch {
					case errors.Is(err, store.ErrNotFound):
						h = nil
					case err != nil:
						return err
					}
				}
				if assign {
					if err := tx.Assign(ctx, a); errors.Is(err, store.ErrNotFound) {
						return fmt.Errorf("no profile %q in the store", name)
					} else if err != nil {
						return err
					}
					if host != "" && h == nil {
						notes = append(notes, fmt.Sprintf("note: no host %s is enrolled yet; the assignment applies once one is", host))
					}
					if h != nil && slices.Contains(h.Retired, name) {
						notes = append(notes, fmt.Sprintf("note: %s has retired %s, so it still does not count for it", host, name))
					}
					return nil
				}
				removed := false
				if err := tx.Unassign(ctx, a); err == nil {
					removed = true
				} else if !errors.Is(err, store.ErrNotFound) {
					return err
				}
				if h != nil && slices.Contains(h.Profiles, name) {
					h.Profiles = slices.DeleteFunc(h.Profiles, func(p string) bool { return p == name })
					if err := tx.UpdateHost(ctx, h); err != nil {
						return err
					}
					removed = true
				}
				if !removed {
					return fmt.Errorf("profile %s is not assigned to %s", name, target(host, group))
				}
				if h != nil {
					left, err := tx.ProfilesFor(ctx, h)
					if err != nil {
						return err
					}
					if len(left) == 0 {
						notes = append(notes, fmt.Sprintf("warning: %s has no profile left: every boot state is admitted", host))
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if assign {
				fmt.Fprintf(out, "assigned %s to %s\n", name, target(host, group))
			} else {
				fmt.Fprintf(out, "unassigned %s from %s\n", name, target(host, group))
			}
			for _, n := range notes {
				fmt.Fprintln(out, n)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "hostname")
	cmd.Flags().StringVar(&group, "group", "", "group")
	return cmd
}

func target(host, group string) string {
	if host != "" {
		return "host " + host
	}
	return "group " + group
}

func newProfilesRetireCmd(sf *storeFlags) *cobra.Command {
	var host string
	cmd := &cobra.Command{
		Use:   "retire NAME --host H",
		Short: "Retire a profile for a host: it may no longer boot that way (blocks a downgrade)",
		Long: `Adds NAME to the host's retired profiles: however the profile is
assigned (to the host or to one of its groups), it no longer allows this
host's boot. Use it once a host attested with a newer profile, so that
booting the old one again is refused. A host left with no profile at all is
not appraised (every boot state is admitted), so tpmid warns then.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			name := args[0]
			if host == "" {
				return errors.New("--host is required")
			}
			st, _, err := sf.open(ctx, false)
			if err != nil {
				return err
			}
			defer st.Close()
			var h *store.Host
			var already, none bool
			err = st.Update(ctx, func(tx store.Tx) error {
				if h, err = lookupHost(ctx, tx, host); err != nil {
					return err
				}
				if _, err := tx.Profile(ctx, name); errors.Is(err, store.ErrNotFound) {
					return fmt.Errorf("no profile %q in the store", name)
				} else if err != nil {
					return err
				}
				already = slices.Contains(h.Retired, name)
				if !already {
					h.Retired = append(h.Retired, name)
					if err := tx.UpdateHost(ctx, h); err != nil {
						return err
					}
				}
				left, err := tx.ProfilesFor(ctx, h)
				none = len(left) == 0
				return err
			})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if already {
				fmt.Fprintf(out, "%s was already retired for %s\n", name, h.Hostname)
			} else {
				fmt.Fprintf(out, "retired %s for %s: a boot only it allows is refused\n", name, h.Hostname)
			}
			if none {
				fmt.Fprintf(out, "warning: %s has no profile left: every boot state is admitted until one is assigned\n", h.Hostname)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "hostname or EK hash")
	return cmd
}
