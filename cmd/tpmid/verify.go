package main

import (
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tpmid/tpmid/pkg/common/boundedfile"
	"github.com/tpmid/tpmid/pkg/common/eventlog"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/server/appraise"
	"github.com/tpmid/tpmid/pkg/server/session"
	"github.com/tpmid/tpmid/pkg/server/trustfiles"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

func init() {
	rootCmd.AddCommand(newVerifyCmd())
}

func newVerifyCmd() *cobra.Command {
	v := &cobra.Command{Use: "verify", Short: "Verify TPM evidence: quotes and EK certificates"}
	v.AddCommand(newVerifyQuoteCmd(), newVerifyEKCertCmd())
	return v
}

// quoteReport is the --json output of verify quote.
type quoteReport struct {
	Bank            string           `json:"bank,omitempty"` // only when one bank is selected
	PCRs            []int            `json:"pcrs,omitempty"` // only when one bank is selected
	Selection       []quoteSelection `json:"selection"`      // every bank, in the quote's order
	SignatureHash   string           `json:"signature_hash"`
	ResetCount      uint32           `json:"reset_count"`
	RestartCount    uint32           `json:"restart_count"`
	Clock           uint64           `json:"clock"`
	Safe            bool             `json:"safe"`
	FirmwareVersion string           `json:"firmware_version"`
	QualifiedSigner string           `json:"qualified_signer"`
	AKName          string           `json:"ak_name,omitempty"`
	SecureBoot      string           `json:"secure_boot"`
	Weak            []string         `json:"weak"`
	EventLog        *quoteEventLog   `json:"eventlog,omitempty"`
}

type quoteSelection struct {
	Bank string `json:"bank"`
	PCRs []int  `json:"pcrs"`
}

// quoteEventLog is the event log's verdict on the quoted PCRs: for the one
// bank at the top level, for each bank of a multi-bank quote under banks.
type quoteEventLog struct {
	Verified    []int                          `json:"verified_pcrs,omitempty"`
	AtReset     []int                          `json:"at_reset_pcrs,omitempty"`
	Unexplained []int                          `json:"unexplained_pcrs,omitempty"`
	Banks       map[string]quoteEventLogByBank `json:"banks,omitempty"`
	Quirks      []eventlog.Quirk               `json:"quirks,omitempty"`
}

type quoteEventLogByBank struct {
	Verified    []int `json:"verified_pcrs"`
	AtReset     []int `json:"at_reset_pcrs,omitempty"`
	Unexplained []int `json:"unexplained_pcrs,omitempty"`
}

func newVerifyQuoteCmd() *cobra.Command {
	var akPath, quotePath, sigPath, nonceHex, pcrsPath, logPath string
	var asJSON, allowWeak bool
	cmd := &cobra.Command{
		Use:   "quote --ak FILE --quote FILE --signature FILE --nonce HEX [--pcrs FILE] [--eventlog FILE] [--allow-weak] [--json]",
		Short: "Verify a TPM2_Quote against its AK, a nonce, and PCR values or an event log",
		Long: `Verifies a TPM2_Quote: TPM_GENERATED magic, TPM_ST_ATTEST_QUOTE type, the
signature with the AK, extraData == nonce, the PCR selection (one or more banks,
each once), and the PCR digest over the quoted values bank by bank in the
quote's selection order. A quote signed with SHA-1 or by an RSA key under 2048
bits is refused (quote_weak) as the server refuses it, unless --allow-weak.

--ak      TPMT_PUBLIC, TPM2B_PUBLIC, or a PKIX public key (DER or PEM)
--quote   TPMS_ATTEST or TPM2B_ATTEST (tpm2_quote -m)
--signature TPMT_SIGNATURE (tpm2_quote -s)
--nonce   the expected extraData in hex ("" for none)
--pcrs    the quoted PCR values as JSON {"sha256": {"0": "<hex>", ...}}
--eventlog a TCG binary event log; without --pcrs the quoted values are
          replayed from it (then every quoted PCR must be extended by the log);
          with --pcrs, every quoted PCR the log extends must replay to its value.
--allow-weak accept a weak signature (SHA-1, RSA under 2048 bits); it is still
          reported under "weak".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			akBytes, err := boundedfile.Read(akPath, verify.MaxAKPublicSize)
			if err != nil {
				return err
			}
			ak, err := verify.ParseAKPublic(akBytes)
			if err != nil {
				return fmt.Errorf("%s: %w", akPath, err)
			}
			attest, err := boundedfile.Read(quotePath, verify.MaxAttestSize+2)
			if err != nil {
				return err
			}
			sig, err := boundedfile.Read(sigPath, verify.MaxSignatureSize)
			if err != nil {
				return err
			}
			nonce, err := hex.DecodeString(strings.TrimPrefix(strings.TrimSpace(nonceHex), "0x"))
			if err != nil {
				return fmt.Errorf("--nonce: not hex: %v", err)
			}

			var values pcrs.Values
			if pcrsPath != "" {
				b, err := boundedfile.Read(pcrsPath, 1<<16)
				if err != nil {
					return err
				}
				var j pcrs.JSON
				if err := json.Unmarshal(b, &j); err != nil {
					return fmt.Errorf("%s: %v", pcrsPath, err)
				}
				if values, err = pcrs.FromJSON(j); err != nil {
					return fmt.Errorf("%s: %v", pcrsPath, err)
				}
			}
			var log *eventlog.Log
			if logPath != "" {
				b, err := boundedfile.Read(logPath, int64(eventlog.DefaultLimits.MaxLogSize))
				if err != nil {
					return err
				}
				if log, err = eventlog.Parse(b); err != nil {
					return fmt.Errorf("eventlog_malformed: %s: %w", logPath, err)
				}
				if values == nil {
					if values, err = log.Replay(); err != nil {
						return fmt.Errorf("%s: replay: %w", logPath, err)
					}
				}
			}
			if values == nil {
				return errors.New("need --pcrs or --eventlog for the quoted PCR values")
			}

			facts, err := verify.VerifyQuoteMulti(ak.Public, verify.Quote{Attest: verify.UnwrapAttest(attest), Signature: sig}, nonce, values)
			if err != nil {
				if pcrsPath == "" && verify.ReasonOf(err) == verify.ReasonQuotePCRValues {
					return fmt.Errorf("%w: the event log does not extend it; pass --pcrs with the quoted values", err)
				}
				return err
			}
			if err := appraise.CheckQuoteStrength(facts.Weak); err != nil && !allowWeak {
				return &verify.Error{Reason: session.ReasonQuoteWeak, Err: fmt.Errorf("%w (the server refuses it too); pass --allow-weak to accept it", err)}
			}

			rep := quoteReport{
				SignatureHash: facts.SignatureHash.String(),
				ResetCount:    facts.ResetCount, RestartCount: facts.RestartCount, Clock: facts.Clock, Safe: facts.Safe,
				FirmwareVersion: fmt.Sprintf("0x%016x", facts.FirmwareVersion), QualifiedSigner: hex.EncodeToString(facts.QualifiedSigner),
				AKName: hex.EncodeToString(ak.Name), SecureBoot: "unknown", Weak: facts.Weak,
			}
			if rep.Weak == nil {
				rep.Weak = []string{}
			}
			var sel []string
			for _, bs := range facts.Selection {
				rep.Selection = append(rep.Selection, quoteSelection{Bank: bs.Bank.String(), PCRs: bs.PCRs})
				sel = append(sel, fmt.Sprintf("%s PCRs %v", bs.Bank, bs.PCRs))
			}
			if len(facts.Selection) == 1 {
				rep.Bank, rep.PCRs = facts.Bank.String(), facts.PCRs
			}
			if log != nil {
				quoted := pcrs.Values{}
				for _, bs := range facts.Selection {
					for _, i := range bs.PCRs {
						v, _ := values.Get(bs.Bank, i)
						quoted.Set(bs.Bank, i, v)
					}
				}
				r, err := eventlog.VerifyAgainst(log, quoted)
				if err != nil {
					return fmt.Errorf("eventlog_mismatch: %w", err)
				}
				rep.EventLog = &quoteEventLog{Quirks: r.Quirks}
				if len(facts.Selection) == 1 {
					b := facts.Bank
					rep.EventLog.Verified, rep.EventLog.AtReset, rep.EventLog.Unexplained = r.Verified[b], r.AtReset[b], r.Unexplained[b]
					if rep.EventLog.Verified == nil {
						rep.EventLog.Verified = []int{}
					}
				} else {
					rep.EventLog.Banks = map[string]quoteEventLogByBank{}
					for _, bs := range facts.Selection {
						b := bs.Bank
						v := quoteEventLogByBank{r.Verified[b], r.AtReset[b], r.Unexplained[b]}
						if v.Verified == nil {
							v.Verified = []int{}
						}
						rep.EventLog.Banks[b.String()] = v
					}
				}
				// Secure Boot is read from PCR7 events: it means something
				// only when PCR7 was quoted and replayed to the quote.
				if sb, err := eventlog.VerifiedSecureBoot(log, r); err != nil {
					rep.SecureBoot = "unknown (" + err.Error() + ")"
				} else {
					rep.SecureBoot = sb.Mode.String()
				}
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, rep)
			}
			what := "bank " + strings.Join(sel, ", ")
			if len(sel) > 1 {
				what = "banks " + strings.Join(sel, ", ")
			}
			fmt.Fprintf(out, "OK: quote verified: %s, signature hash %s, reset %d, restart %d, clock %d, safe %v, secure boot %s",
				what, rep.SignatureHash, rep.ResetCount, rep.RestartCount, rep.Clock, rep.Safe, rep.SecureBoot)
			if len(rep.Weak) > 0 {
				fmt.Fprintf(out, ", weak: %s", strings.Join(rep.Weak, ", "))
			}
			fmt.Fprintln(out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&akPath, "ak", "", "AK public key file")
	f.StringVar(&quotePath, "quote", "", "TPMS_ATTEST (or TPM2B_ATTEST) file")
	f.StringVar(&sigPath, "signature", "", "TPMT_SIGNATURE file")
	f.StringVar(&nonceHex, "nonce", "", "expected extraData, hex")
	f.StringVar(&pcrsPath, "pcrs", "", "quoted PCR values, JSON")
	f.StringVar(&logPath, "eventlog", "", "TCG binary event log")
	f.BoolVar(&allowWeak, "allow-weak", false, "accept a quote signed with SHA-1 or by an RSA key under 2048 bits")
	f.BoolVar(&asJSON, "json", false, "print facts as JSON")
	for _, n := range []string{"ak", "quote", "signature", "nonce"} {
		_ = cmd.MarkFlagRequired(n)
	}
	return cmd
}

type ekReport struct {
	Manufacturer string   `json:"manufacturer"`
	Model        string   `json:"model"`
	Version      string   `json:"version"`
	Issuer       string   `json:"issuer"`
	Quirk        string   `json:"ek_quirk,omitempty"` // the named EK profile quirk the certificate needed
	EKHash       string   `json:"ek_hash"`
	Chain        []string `json:"chain"`
}

func newVerifyEKCertCmd() *cobra.Command {
	var roots, inters, at string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ekcert --roots PATH [--intermediates PATH] [--at RFC3339] [--json] FILE",
		Short: "Verify an EK certificate (DER as read from NV, or PEM) against manufacturer roots",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := boundedfile.Read(args[0], verify.MaxEKCertSize)
			if err != nil {
				return err
			}
			cert, err := verify.ParseEKCert(b)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			trust, err := trustfiles.LoadEKTrust(roots)
			if err != nil {
				return err
			}
			var extra []*x509.Certificate
			if inters != "" {
				if extra, err = trustfiles.LoadCertificates(inters); err != nil {
					return err
				}
			}
			now := time.Now()
			if at != "" {
				if now, err = time.Parse(time.RFC3339, at); err != nil {
					return fmt.Errorf("--at: %v", err)
				}
			}
			facts, err := verify.VerifyEKCert(cert, extra, trust, now)
			if err != nil {
				return err
			}
			h, err := verify.EKHash(cert.PublicKey)
			if err != nil {
				return err
			}
			rep := ekReport{Manufacturer: facts.Manufacturer, Model: facts.Model, Version: facts.Version, Issuer: facts.Issuer, Quirk: facts.Quirk, EKHash: h}
			for _, c := range facts.Chain {
				rep.Chain = append(rep.Chain, c.Subject.String())
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, rep)
			}
			fmt.Fprintf(out, "OK: EK certificate chains to a trusted root\nmanufacturer: %s\nmodel: %s\nversion: %s\nissuer: %s\nek_hash: %s\n",
				rep.Manufacturer, rep.Model, rep.Version, rep.Issuer, rep.EKHash)
			if rep.Quirk != "" {
				fmt.Fprintf(out, "ek_quirk: %s\n", rep.Quirk)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&roots, "roots", "", "trust bundle: PEM file or directory of PEM/DER certificates")
	f.StringVar(&inters, "intermediates", "", "extra intermediates: PEM file or directory")
	f.StringVar(&at, "at", "", "verify at this time (RFC 3339) instead of now")
	f.BoolVar(&asJSON, "json", false, "print facts as JSON")
	_ = cmd.MarkFlagRequired("roots")
	return cmd
}
