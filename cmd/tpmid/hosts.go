package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/tpmid/tpmid/pkg/common/boundedfile"
	"github.com/tpmid/tpmid/pkg/server/nodes"
	"github.com/tpmid/tpmid/pkg/server/profile"
	"github.com/tpmid/tpmid/pkg/server/store"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

func init() { rootCmd.AddCommand(newHostsCmd()) }

func newHostsCmd() *cobra.Command {
	sf := &storeFlags{}
	c := &cobra.Command{
		Use:           "hosts",
		SilenceUsage:  true, // also when run on its own (tests); rootCmd silences both
		SilenceErrors: true,
		Short:         "Enroll, list, show, revoke hosts and approve their proposed boot states (the plugin's store)",
	}
	sf.register(c, true)
	c.AddCommand(newHostsEnrollCmd(sf), newHostsListCmd(sf), newHostsShowCmd(sf), newHostsRevokeCmd(sf), newHostsApproveCmd(sf))
	return c
}

// agentIDPath is the path of the agent ID SPIRE gives the host's agent.
func agentIDPath(ekHash string) string { return "/spire/agent/tpm/" + ekHash }

// isEKHash: 64 lowercase hex digits. A hostname label has at most 63
// characters, so a hostname can never be mistaken for one.
func isEKHash(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// lookupHost finds a host by hostname, EK hash, or agent ID
// (spiffe://<td>/spire/agent/tpm/<ek hash>).
func lookupHost(ctx context.Context, tx store.Tx, arg string) (*store.Host, error) {
	key := strings.ToLower(strings.TrimSpace(arg))
	if strings.HasPrefix(key, "spiffe://") {
		if i := strings.LastIndex(key, "/spire/agent/tpm/"); i >= 0 {
			key = key[i+len("/spire/agent/tpm/"):]
		}
	}
	var h *store.Host
	var err error
	switch {
	case isEKHash(key):
		h, err = tx.HostByEK(ctx, key)
	case nodes.ValidHostname(key):
		h, err = tx.HostByName(ctx, key)
	default:
		return nil, fmt.Errorf("%q is neither a hostname nor an EK hash (64 hex digits)", arg)
	}
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("no host %s in the store", key)
	}
	return h, err
}

// countersJSON are the TPM clock facts of the host's last admitted quote.
type countersJSON struct {
	ResetCount   uint32 `json:"reset_count"`
	RestartCount uint32 `json:"restart_count"`
	Clock        uint64 `json:"clock"`
	Safe         bool   `json:"safe"`
}

// hostJSON is one host in hosts list --json and hosts show --json (see
// docs/cli.md). Lists are [] when empty and times null when never.
type hostJSON struct {
	Hostname        string        `json:"hostname"`
	EKHash          string        `json:"ek_hash"`
	AgentIDPath     string        `json:"agent_id_path"`
	State           string        `json:"state"`
	Groups          []string      `json:"groups"`
	Profiles        []string      `json:"profiles"`
	Retired         []string      `json:"retired"`
	EKCert          bool          `json:"ek_cert"`
	Counters        *countersJSON `json:"counters"`
	LastAttestation *time.Time    `json:"last_attestation"`
	LastOutcome     string        `json:"last_outcome"`
	LastProfile     string        `json:"last_profile"`
	Proposed        bool          `json:"proposed"`
	ProposedAt      *time.Time    `json:"proposed_at"`
	CreatedAt       time.Time     `json:"created_at"`
	UpdatedAt       time.Time     `json:"updated_at"`
}

func hostView(h *store.Host) hostJSON {
	v := hostJSON{
		Hostname: h.Hostname, EKHash: h.EKHash, AgentIDPath: agentIDPath(h.EKHash), State: string(h.State),
		Groups: orEmpty(h.Groups), Profiles: orEmpty(h.Profiles), Retired: orEmpty(h.Retired),
		EKCert: len(h.EKCert) > 0, LastAttestation: timePtr(h.LastAttestation), LastOutcome: h.LastOutcome,
		LastProfile: h.LastProfile, Proposed: len(h.Proposed) > 0, ProposedAt: timePtr(h.ProposedAt),
		CreatedAt: h.CreatedAt.UTC(), UpdatedAt: h.UpdatedAt.UTC(),
	}
	if c := h.Counters; c != nil {
		v.Counters = &countersJSON{c.ResetCount, c.RestartCount, c.Clock, c.Safe}
	}
	return v
}

// hostShowJSON is hosts show --json: the host, the profiles its next
// attestation is appraised against, its last attempt and the proposed
// state (a profile body) waiting for approval.
type hostShowJSON struct {
	hostJSON
	Appraised       []string        `json:"appraised_profiles"`
	LastAttempt     *attemptJSON    `json:"last_attempt"`
	ProposedProfile json.RawMessage `json:"proposed_profile"`
}

// readEKPublic reads the EK from --ek-cert (DER, NV-padded DER or PEM) or
// --ek-pub (PEM or DER PKIX, PEM PKCS#1, or a TPM2B_PUBLIC/TPMT_PUBLIC as
// tpm2_createek -u writes it).
func readEKPublic(certPath, pubPath string) (pub crypto.PublicKey, certDER []byte, err error) {
	if certPath != "" {
		b, err := boundedfile.Read(certPath, verify.MaxEKCertSize)
		if err != nil {
			return nil, nil, err
		}
		cert, err := verify.ParseEKCert(b)
		if err != nil {
			return nil, nil, fmt.Errorf("--ek-cert %s: %w", certPath, err)
		}
		return cert.PublicKey, cert.Raw, nil
	}
	b, err := boundedfile.Read(pubPath, verify.MaxAKPublicSize)
	if err != nil {
		return nil, nil, err
	}
	if t := bytes.TrimSpace(b); bytes.HasPrefix(t, []byte("-----BEGIN")) {
		blk, rest := pem.Decode(t)
		if blk == nil || len(bytes.TrimSpace(rest)) != 0 {
			return nil, nil, fmt.Errorf("--ek-pub %s: want exactly one PEM block", pubPath)
		}
		switch blk.Type {
		case "PUBLIC KEY":
			pub, err = x509.ParsePKIXPublicKey(blk.Bytes)
		case "RSA PUBLIC KEY":
			pub, err = x509.ParsePKCS1PublicKey(blk.Bytes)
		default:
			return nil, nil, fmt.Errorf("--ek-pub %s: PEM block %q, want PUBLIC KEY (an EK certificate goes in --ek-cert)", pubPath, blk.Type)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("--ek-pub %s: %v", pubPath, err)
		}
		return pub, nil, nil
	}
	k, err := verify.ParseAKPublic(b) // PKIX DER, TPM2B_PUBLIC or TPMT_PUBLIC: any RSA/ECC key
	if err != nil {
		return nil, nil, fmt.Errorf("--ek-pub %s: not a PEM or DER public key nor a TPM2B_PUBLIC", pubPath)
	}
	return k.Public, nil, nil
}

func newHostsEnrollCmd(sf *storeFlags) *cobra.Command {
	var hostname, certPath, pubPath, ekHash string
	var groups []string
	cmd := &cobra.Command{
		Use:   "enroll --hostname NAME (--ek-cert FILE | --ek-pub FILE | --ek-hash HEX) [--group G]...",
		Short: "Bind an EK to a hostname: the host may attest (enrollment = required admits only such hosts)",
		Long: `Binds an endorsement key to a hostname in the store. The EK is named by
its certificate (DER as read from NV, or PEM), its public key (PEM, DER, or a
TPM2B_PUBLIC from tpm2_createek -u) or its hash (the last segment of the
agent ID; "tpmid ek" prints it). The hostname is lowercased and must be an
RFC 1123 host name. An EK or hostname already bound is refused, except that
a revoked EK may be enrolled again: the same host row becomes enrolled with
the given hostname and groups, its TPM counters and proposed state cleared
(after TPM2_Clear reset its counters, for instance); its profiles, retired
profiles and attempt history stay.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			name := strings.ToLower(strings.TrimSpace(hostname))
			if !nodes.ValidHostname(name) {
				return fmt.Errorf("--hostname %q is not a valid host name (RFC 1123: letters, digits, '-', labels of at most 63 characters)", hostname)
			}
			n := 0
			for _, s := range []string{certPath, pubPath, ekHash} {
				if s != "" {
					n++
				}
			}
			if n != 1 {
				return errors.New("name the EK by exactly one of --ek-cert, --ek-pub, --ek-hash")
			}
			h := &store.Host{Hostname: name, Groups: groups, State: store.HostEnrolled}
			if ekHash != "" {
				h.EKHash = strings.ToLower(strings.TrimSpace(ekHash))
				if !isEKHash(h.EKHash) {
					return fmt.Errorf("--ek-hash %q is not 64 hex digits (the SHA-256 of the EK's PKIX encoding)", ekHash)
				}
			} else {
				pub, certDER, err := readEKPublic(certPath, pubPath)
				if err != nil {
					return err
				}
				if h.EKHash, err = verify.EKHash(pub); err != nil {
					return err
				}
				if h.EKPublic, err = x509.MarshalPKIXPublicKey(pub); err != nil {
					return err
				}
				h.EKCert = certDER
			}
			st, cfg, err := sf.open(cmd.Context(), true)
			if err != nil {
				return err
			}
			defer st.Close()
			var reenrolled bool
			err = st.Update(cmd.Context(), func(tx store.Tx) error {
				reenrolled = false
				old, err := tx.HostByEK(cmd.Context(), h.EKHash)
				switch {
				case err == nil && old.State != store.HostRevoked:
					return fmt.Errorf("EK %s is already enrolled as host %s (%s); revoke it first to enroll it again", h.EKHash, old.Hostname, old.State)
				case err != nil && !errors.Is(err, store.ErrNotFound):
					return err
				}
				if other, err := tx.HostByName(cmd.Context(), h.Hostname); err == nil && (old == nil || other.EKHash != old.EKHash) {
					return fmt.Errorf("hostname %s is already bound to EK %s (%s)", h.Hostname, other.EKHash, other.State)
				} else if err != nil && !errors.Is(err, store.ErrNotFound) {
					return err
				}
				if old == nil {
					return tx.CreateHost(cmd.Context(), h)
				}
				// A revoked EK enrolled again (e.g. after TPM2_Clear reset
				// its counters): a fresh enrollment of the same row. Its
				// profiles, retired profiles and history stay.
				reenrolled = true
				old.Hostname, old.Groups, old.State = h.Hostname, h.Groups, store.HostEnrolled
				old.Counters, old.Proposed, old.ProposedAt = nil, nil, time.Time{}
				if len(h.EKPublic) > 0 {
					old.EKPublic = h.EKPublic
				}
				if len(h.EKCert) > 0 {
					old.EKCert = h.EKCert
				}
				return tx.UpdateHost(cmd.Context(), old)
			})
			if errors.Is(err, store.ErrConflict) {
				return fmt.Errorf("EK %s or hostname %s was bound concurrently: %w", h.EKHash, h.Hostname, err)
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			verb := "enrolled"
			if reenrolled {
				verb = "re-enrolled (was revoked; TPM counters reset)"
			}
			fmt.Fprintf(out, "%s %s: EK %s (agent ID spiffe://<trust domain>%s)\n", verb, h.Hostname, h.EKHash, agentIDPath(h.EKHash))
			if cfg != nil && cfg.Enrollment == nodes.Open {
				fmt.Fprintln(out, "note: enrollment is open in this config: unenrolled EKs join too; set enrollment = \"required\" to admit only enrolled hosts")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&hostname, "hostname", "", "the host's name (lowercased; RFC 1123)")
	f.StringVar(&certPath, "ek-cert", "", "the EK certificate: DER (NV padding allowed) or PEM")
	f.StringVar(&pubPath, "ek-pub", "", "the EK public key: PEM or DER PKIX, or TPM2B_PUBLIC")
	f.StringVar(&ekHash, "ek-hash", "", "the EK hash: 64 hex digits (tpmid ek prints it)")
	f.StringArrayVar(&groups, "group", nil, "a group the host belongs to (repeatable); profiles may be assigned to groups")
	_ = cmd.MarkFlagRequired("hostname")
	return cmd
}

func newHostsListCmd(sf *storeFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list [--json]",
		Short: "List the hosts in the store",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, _, err := sf.open(cmd.Context(), false)
			if err != nil {
				return err
			}
			defer st.Close()
			var hs []store.Host
			if err := st.View(cmd.Context(), func(tx store.Tx) error {
				hs, err = tx.ListHosts(cmd.Context())
				return err
			}); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				views := make([]hostJSON, 0, len(hs))
				for i := range hs {
					views = append(views, hostView(&hs[i]))
				}
				return printJSON(out, views)
			}
			if len(hs) == 0 {
				fmt.Fprintln(out, "no hosts")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "HOSTNAME\tSTATE\tEK HASH\tGROUPS\tLAST ATTESTATION\tOUTCOME\tPROPOSED")
			for _, h := range hs {
				proposed := "-"
				if len(h.Proposed) > 0 {
					proposed = "yes"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Hostname, h.State, h.EKHash, orDash(strings.Join(h.Groups, ",")),
					fmtTime(h.LastAttestation), orDash(h.LastOutcome), proposed)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array of hosts")
	return cmd
}

func newHostsShowCmd(sf *storeFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show (HOSTNAME | EKHASH) [--json]",
		Short: "Show one host: state, counters, last attempt, groups, profiles, retired, proposed state",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			st, _, err := sf.open(ctx, false)
			if err != nil {
				return err
			}
			defer st.Close()
			var v hostShowJSON
			var h *store.Host
			if err := st.View(ctx, func(tx store.Tx) error {
				if h, err = lookupHost(ctx, tx, args[0]); err != nil {
					return err
				}
				v = hostShowJSON{hostJSON: hostView(h), Appraised: []string{}, ProposedProfile: json.RawMessage("null")}
				ps, err := tx.ProfilesFor(ctx, h)
				if err != nil {
					return err
				}
				for _, p := range ps {
					v.Appraised = append(v.Appraised, fmt.Sprintf("%s@%d", p.Name, p.Version))
				}
				as, err := tx.Attempts(ctx, store.AttemptFilter{EKHash: h.EKHash, Limit: 1})
				if err != nil {
					return err
				}
				if len(as) > 0 {
					a := attemptView(&as[0])
					v.LastAttempt = &a
				}
				return nil
			}); err != nil {
				return err
			}
			if len(h.Proposed) > 0 {
				if json.Valid(h.Proposed) {
					v.ProposedProfile = json.RawMessage(h.Proposed)
				} else {
					v.ProposedProfile, _ = json.Marshal(string(h.Proposed))
				}
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, v)
			}
			fmt.Fprintf(out, "hostname:          %s\n", v.Hostname)
			fmt.Fprintf(out, "EK hash:           %s\n", v.EKHash)
			fmt.Fprintf(out, "agent ID:          spiffe://<trust domain>%s\n", v.AgentIDPath)
			fmt.Fprintf(out, "state:             %s\n", v.State)
			fmt.Fprintf(out, "groups:            %s\n", orDash(strings.Join(v.Groups, ", ")))
			fmt.Fprintf(out, "profiles:          %s\n", orDash(strings.Join(v.Profiles, ", ")))
			fmt.Fprintf(out, "retired:           %s\n", orDash(strings.Join(v.Retired, ", ")))
			appraised := strings.Join(v.Appraised, ", ")
			if appraised == "" {
				appraised = "none (every boot state is admitted)"
			}
			fmt.Fprintf(out, "appraised against: %s\n", appraised)
			if c := v.Counters; c != nil {
				fmt.Fprintf(out, "counters:          reset %d, restart %d, clock %d, safe %v\n", c.ResetCount, c.RestartCount, c.Clock, c.Safe)
			} else {
				fmt.Fprintf(out, "counters:          - (no admitted quote yet)\n")
			}
			if h.LastAttestation.IsZero() {
				fmt.Fprintf(out, "last attestation:  -\n")
			} else {
				fmt.Fprintf(out, "last attestation:  %s %s", fmtTime(h.LastAttestation), v.LastOutcome)
				if v.LastProfile != "" {
					fmt.Fprintf(out, " (profile %s)", v.LastProfile)
				}
				fmt.Fprintln(out)
			}
			if a := v.LastAttempt; a != nil {
				fmt.Fprintf(out, "last attempt:      #%d %s %s", a.ID, a.Time.Format(time.RFC3339), a.Outcome)
				if a.Server != "" {
					fmt.Fprintf(out, " on %s", a.Server)
				}
				fmt.Fprintln(out)
				for _, r := range a.Reasons {
					fmt.Fprintf(out, "  reason: %s\n", r)
				}
			}
			if v.Proposed {
				fmt.Fprintf(out, "proposed:          a boot state refused at %s is waiting: review it with --json (proposed_profile), approve it with tpmid hosts approve %s\n",
					fmtTime(h.ProposedAt), v.Hostname)
			} else {
				fmt.Fprintf(out, "proposed:          -\n")
			}
			fmt.Fprintf(out, "enrolled:          %s (updated %s)\n", fmtTime(h.CreatedAt), fmtTime(h.UpdatedAt))
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

// evictTimeout bounds spire-server agent evict.
const evictTimeout = 30 * time.Second

func newHostsRevokeCmd(sf *storeFlags) *cobra.Command {
	var socket, spireBin, trustDomain string
	cmd := &cobra.Command{
		Use:   "revoke (HOSTNAME | EKHASH) [--spire-socket PATH --trust-domain TD] [--spire-server BIN]",
		Short: "Revoke a host: its EK is refused at its next attestation; with --spire-socket, evict its agent now",
		Long: `Sets the host's state to revoked: the server plugin refuses its EK
(ek_revoked) at the next attestation, in every enrollment mode.

The agent keeps its current SVID until then. With --spire-socket, tpmid also
runs

  spire-server agent evict -socketPath PATH -spiffeID spiffe://<td>/spire/agent/tpm/<ek hash>

so SPIRE drops the agent at once. The trust domain is --trust-domain, or
server { trust_domain } of a spire-server config given with --config. If the
eviction fails, the revocation still stands and takes effect at the agent's
next attestation; tpmid says so and exits non-zero.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var td spiffeid.TrustDomain
			if socket != "" {
				_, cfg, err := sf.resolve()
				if err != nil {
					return err
				}
				if trustDomain == "" && cfg != nil {
					trustDomain = cfg.TrustDomain
				}
				if trustDomain == "" {
					return errors.New("--spire-socket needs --trust-domain (or --config with a spire-server config naming trust_domain)")
				}
				if td, err = spiffeid.TrustDomainFromString(trustDomain); err != nil {
					return fmt.Errorf("--trust-domain: %w", err)
				}
				if spireBin == "" {
					spireBin = "spire-server"
				}
				if spireBin, err = exec.LookPath(spireBin); err != nil {
					return fmt.Errorf("--spire-server: %w", err)
				}
			} else if spireBin != "" || trustDomain != "" {
				return errors.New("--spire-server and --trust-domain are for eviction: give --spire-socket too")
			}
			st, _, err := sf.open(ctx, false)
			if err != nil {
				return err
			}
			defer st.Close()
			var h *store.Host
			var already bool
			if err := st.Update(ctx, func(tx store.Tx) error {
				if h, err = lookupHost(ctx, tx, args[0]); err != nil {
					return err
				}
				already = h.State == store.HostRevoked
				h.State = store.HostRevoked
				return tx.UpdateHost(ctx, h)
			}); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if already {
				fmt.Fprintf(out, "%s (EK %s) was already revoked\n", h.Hostname, h.EKHash)
			} else {
				fmt.Fprintf(out, "revoked %s (EK %s): refused at its next attestation\n", h.Hostname, h.EKHash)
			}
			if socket == "" {
				return nil
			}
			id := "spiffe://" + td.Name() + agentIDPath(h.EKHash)
			ectx, cancel := context.WithTimeout(ctx, evictTimeout)
			defer cancel()
			res, err := exec.CommandContext(ectx, spireBin, "agent", "evict", "-socketPath", socket, "-spiffeID", id).CombinedOutput()
			if err != nil {
				msg := strings.Join(strings.Fields(string(res)), " ")
				if len(msg) > 300 {
					msg = msg[:300] + "..."
				}
				if msg != "" {
					msg = " (" + msg + ")"
				}
				return fmt.Errorf("%s is revoked, but evicting %s from SPIRE failed: %v%s; the revocation stands and takes effect at the agent's next attestation", h.Hostname, id, err, msg)
			}
			fmt.Fprintf(out, "evicted %s from SPIRE\n", id)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&socket, "spire-socket", "", "spire-server's API socket: also evict the agent from SPIRE now")
	f.StringVar(&spireBin, "spire-server", "", "the spire-server binary (default: spire-server on PATH)")
	f.StringVar(&trustDomain, "trust-domain", "", "the SPIRE trust domain of the agent ID (with --spire-socket)")
	return cmd
}

// defaultApprovedName is the profile name approve uses for host h.
func defaultApprovedName(hostname string) string { return "host-" + hostname }

func newHostsApproveCmd(sf *storeFlags) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "approve (HOSTNAME | EKHASH) [--name PROFILE]",
		Short: "Turn a host's proposed boot state into a profile assigned to it",
		Long: `When no profile of a host allows its boot, the server refuses it and keeps
what it saw (only what the quote bound) as the host's proposed state. approve
stores that state as a new version of profile PROFILE (default
host-<hostname>), assigns the profile to the host itself, and clears the
proposal. Its next attestation is then appraised against it too.

Only the newest version of a profile counts: approving again under the same
name replaces the boot state approved before (which is what an upgrade wants;
give another --name to allow both). A name that other hosts or groups use is
refused, since the new version would change what they may boot.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			st, _, err := sf.open(ctx, false)
			if err != nil {
				return err
			}
			defer st.Close()
			var h *store.Host
			var stored *store.Profile
			var proposedAt time.Time
			err = st.Update(ctx, func(tx store.Tx) error {
				if h, err = lookupHost(ctx, tx, args[0]); err != nil {
					return err
				}
				if len(h.Proposed) == 0 {
					return fmt.Errorf("host %s has no proposed boot state: none of its profiles refused a boot since the last approval", h.Hostname)
				}
				pname := name
				if pname == "" {
					pname = defaultApprovedName(h.Hostname)
				}
				if slices.Contains(h.Retired, pname) {
					return fmt.Errorf("profile %s is retired for host %s: give another --name", pname, h.Hostname)
				}
				p, err := profile.ParseProfile(h.Proposed)
				if err != nil {
					return fmt.Errorf("host %s: the proposed state is not a valid profile: %w", h.Hostname, err)
				}
				p.Name = pname
				if err := p.Validate(); err != nil {
					if name == "" {
						return fmt.Errorf("%w; give a profile name with --name", err)
					}
					return fmt.Errorf("--name: %w", err)
				}
				body, err := json.Marshal(p)
				if err != nil {
					return err
				}
				if err := checkNameUnshared(ctx, tx, pname, h); err != nil {
					return err
				}
				if stored, err = tx.PutProfile(ctx, store.Profile{Name: pname, Body: body}); err != nil {
					return err
				}
				if !slices.Contains(h.Profiles, pname) {
					h.Profiles = append(h.Profiles, pname)
				}
				proposedAt = h.ProposedAt
				h.Proposed, h.ProposedAt = nil, time.Time{}
				return tx.UpdateHost(ctx, h)
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "approved the boot state proposed at %s: profile %s@%d, assigned to %s\n",
				fmtTime(proposedAt), stored.Name, stored.Version, h.Hostname)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "profile name (default host-<hostname>)")
	return cmd
}

// checkNameUnshared refuses a profile name that is assigned to anything but
// host h: a new version would change what those hosts may boot.
func checkNameUnshared(ctx context.Context, tx store.Tx, name string, h *store.Host) error {
	as, err := tx.Assignments(ctx)
	if err != nil {
		return err
	}
	var others []string
	for _, a := range as {
		switch {
		case a.Profile != name || a.Host == h.Hostname:
		case a.Group != "":
			others = append(others, "group "+a.Group)
		default:
			others = append(others, "host "+a.Host)
		}
	}
	hs, err := tx.ListHosts(ctx)
	if err != nil {
		return err
	}
	for _, o := range hs {
		if o.EKHash != h.EKHash && slices.Contains(o.Profiles, name) && !slices.Contains(others, "host "+o.Hostname) {
			others = append(others, "host "+o.Hostname)
		}
	}
	if len(others) > 0 {
		return fmt.Errorf("profile %s is also assigned to %s: a new version would change their boot state too; give another --name", name, strings.Join(others, ", "))
	}
	return nil
}
