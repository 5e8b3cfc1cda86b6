package main

import (
	"encoding/pem"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tpmid/tpmid/pkg/common/tpm"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

func init() { rootCmd.AddCommand(newEKCmd()) }

// ekReportLocal is what `tpmid ek` prints: what an operator needs to enroll
// this machine (ek_hash_allowlist line, expected agent ID) or to check its
// EK certificate with `tpmid verify ekcert`.
type ekReportLocal struct {
	Algorithm   string `json:"algorithm"`
	EKHash      string `json:"ek_hash"`
	AgentIDPath string `json:"agent_id_path"`
	Certificate string `json:"certificate_pem,omitempty"`
}

func newEKCmd() *cobra.Command {
	var device, alg string
	var asJSON, withCert bool
	cmd := &cobra.Command{
		Use:   "ek [--tpm DEVICE] [--alg rsa2048|rsa3072|rsa4096|p256|p384|p521] [--cert] [--json]",
		Short: "Show this machine's endorsement key: the hash to allowlist and the agent ID it gets",
		Long: `Reads the EK the agent plugin would use (same device and algorithm
settings) and prints its hash: the line for ek_hash_allowlist, and the last
segment of the agent ID spiffe://<td>/spire/agent/tpm/<hash>. --cert adds the
EK certificate (PEM), trimmed of NV padding, for tpmid verify ekcert.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := tpm.Open(tpm.Config{Device: device})
			if err != nil {
				return err
			}
			defer t.Close()
			ek, err := t.EK(tpm.EKAlg(alg))
			if err != nil {
				return err
			}
			hash, err := verify.EKHash(ek.Public)
			if err != nil {
				return err
			}
			rep := ekReportLocal{Algorithm: string(ek.Alg), EKHash: hash, AgentIDPath: "/spire/agent/tpm/" + hash}
			if withCert {
				if len(ek.CertDER) == 0 {
					return fmt.Errorf("the TPM has no certificate for its %s EK", ek.Alg)
				}
				rep.Certificate = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ek.CertDER}))
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, rep)
			}
			certState := "no EK certificate in NV"
			if len(ek.CertDER) > 0 {
				certState = "EK certificate in NV"
			}
			fmt.Fprintf(out, "ek_hash: %s\nalgorithm: %s (%s)\nagent ID: spiffe://<trust domain>%s\n%s", rep.EKHash, rep.Algorithm, certState, rep.AgentIDPath, rep.Certificate)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&device, "tpm", "", "TPM device: a path (default /dev/tpmrm0, then /dev/tpm0), tcp://host:port or unix:///path (swtpm)")
	f.StringVar(&alg, "alg", "", "EK algorithm as the agent plugin's ek_algorithm: rsa (rsa2048), rsa3072, rsa4096, ecc (p256), p384, p521, or empty for its default (docs/tpm-access.md)")
	f.BoolVar(&withCert, "cert", false, "print the EK certificate as PEM")
	f.BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}
