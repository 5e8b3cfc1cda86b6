package main

import (
	"encoding/hex"
	"fmt"
	"io"
	"slices"

	"github.com/spf13/cobra"

	"github.com/tpmid/tpmid/pkg/common/boundedfile"
	"github.com/tpmid/tpmid/pkg/common/eventlog"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

func init() {
	el := &cobra.Command{Use: "eventlog", Short: "Inspect TCG binary event logs (UEFI measured boot)"}
	el.AddCommand(newEventlogReplayCmd(), newEventlogShowCmd())
	rootCmd.AddCommand(el)
}

// readEventLog reads at most the parser's size limit (+1 to detect more), so
// a huge file is refused without reading it all.
func readEventLog(path string) (*eventlog.Log, error) {
	data, err := boundedfile.Read(path, int64(eventlog.DefaultLimits.MaxLogSize))
	if err != nil {
		return nil, err
	}
	l, err := eventlog.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return l, nil
}

func newEventlogReplayCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "replay [--json] FILE",
		Short: "Replay an event log and print the PCR values it produces, per bank",
		Long: `Replays every PCR the log extends in every bank, as the TPM would
(StartupLocality and H-CRTM honoured, EV_NO_ACTION never extended). The values
are what the log claims; they mean something only once they match a verified quote.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := readEventLog(args[0])
			if err != nil {
				return err
			}
			vals, err := l.Replay()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, struct {
					Banks  pcrs.JSON `json:"banks"`
					Events int       `json:"events"`
				}{vals.ToJSON(), len(l.Events)})
			}
			fmt.Fprintf(out, "format: %s, %d events\n", l.Format, len(l.Events))
			for _, a := range vals.Banks() {
				fmt.Fprintf(out, "%s:\n", a)
				for _, i := range vals.Indices(a) {
					v, _ := vals.Get(a, i)
					fmt.Fprintf(out, "  %2d: %x\n", i, v)
				}
			}
			for _, a := range l.IncompleteBanks {
				fmt.Fprintf(out, "%s: not replayable (records without a %s digest)\n", a, a)
			}
			printQuirks(out, l.Quirks)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"banks": {...}, "events": N}`)
	return cmd
}

func printQuirks(out io.Writer, qs []eventlog.Quirk) {
	for _, q := range qs {
		fmt.Fprintf(out, "quirk: %s\n", q)
	}
}

type showEvent struct {
	Index   int               `json:"index"`
	PCR     uint32            `json:"pcr"`
	Type    string            `json:"type"`
	Digests map[string]string `json:"digests"`
	Size    int               `json:"size"`
	Summary string            `json:"summary,omitempty"`
	Decoded *eventlog.Decoded `json:"decoded,omitempty"`
	Error   string            `json:"decode_error,omitempty"`
}

type showOutput struct {
	Format     string                    `json:"format"`
	Banks      []string                  `json:"banks"`
	Events     []showEvent               `json:"events"`
	SecureBoot *eventlog.SecureBootState `json:"secure_boot,omitempty"`
	SBError    string                    `json:"secure_boot_error,omitempty"`
	// DigestError names a record whose digest is not the hash of its data
	// (eventlog.CheckDigests): the log contradicts itself.
	DigestError string           `json:"digest_error,omitempty"`
	Quirks      []eventlog.Quirk `json:"quirks"`
}

func newEventlogShowCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show [--json] FILE",
		Short: "Show an event log's records decoded, its Secure Boot state and quirks",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := readEventLog(args[0])
			if err != nil {
				return err
			}
			o := showOutput{Format: l.Format.String(), Quirks: append([]eventlog.Quirk{}, l.Quirks...)}
			for _, a := range l.Banks {
				o.Banks = append(o.Banks, a.String())
			}
			for i := range l.Events {
				e := &l.Events[i]
				se := showEvent{Index: e.Index, PCR: e.PCR, Type: e.Type.String(), Size: len(e.Data), Digests: map[string]string{}}
				for a, d := range e.Digests {
					se.Digests[a.String()] = hex.EncodeToString(d)
				}
				d, err := l.Decode(e)
				if err != nil {
					se.Error = err.Error()
				} else if d != nil {
					se.Decoded, se.Summary = d, d.Summary()
				}
				o.Events = append(o.Events, se)
			}
			dq, err := eventlog.CheckDigests(l)
			if err != nil {
				o.DigestError = err.Error()
			}
			o.Quirks = append(o.Quirks, dq...)
			sb, err := eventlog.SecureBoot(l)
			if err != nil {
				o.SBError = err.Error()
			} else {
				o.SecureBoot = sb
				for _, q := range sb.Quirks {
					if !slices.Contains(o.Quirks, q) {
						o.Quirks = append(o.Quirks, q)
					}
				}
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, o)
			}
			fmt.Fprintf(out, "format: %s, banks %v, %d events\n", o.Format, o.Banks, len(o.Events))
			for _, e := range o.Events {
				desc := e.Summary
				if e.Error != "" {
					desc = "(" + e.Error + ")"
				}
				pcr := fmt.Sprint(e.PCR)
				if e.PCR == eventlog.TrailerPCR {
					pcr = "-"
				}
				fmt.Fprintf(out, "%4d PCR%-2s %-34s %6dB %s\n", e.Index, pcr, e.Type, e.Size, desc)
			}
			if sb != nil {
				fmt.Fprintf(out, "secure boot: %s", sb.Mode)
				if sb.Why != "" {
					fmt.Fprintf(out, " (%s)", sb.Why)
				}
				fmt.Fprintln(out)
				if len(sb.Authorities) > 0 {
					fmt.Fprintf(out, "  PCR7 authority records: %v\n", sb.Authorities)
				}
			} else {
				fmt.Fprintf(out, "secure boot: error: %s\n", o.SBError)
			}
			if o.DigestError != "" {
				fmt.Fprintf(out, "TAMPERED: %s\n", o.DigestError)
			}
			printQuirks(out, o.Quirks)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
