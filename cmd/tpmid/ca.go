package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/tpmid/tpmid/ca/issuer"
	"github.com/tpmid/tpmid/ca/keys"
)

// newCACmd is `tpmid ca`: the attestation CA that certifies AKs.
func newCACmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "ca",
		Short: "The attestation CA: create it, rotate its intermediate, serve AK certificates",
		Long: `tpmid's attestation CA issues AK certificates bound to a TPM (its EK's
permanent identifier and TCG attributes) and to the agent's SPIFFE ID. Its
keys sit behind go.step.sm/crypto KMS URIs: files in the CA directory by
default (softkms), or PKCS#11, TPM and cloud KMS keys. See docs/ca.md.`,
		Args: cobra.NoArgs,
	}
	c.AddCommand(newCAInitCmd(), newCARotateCmd(), newCAServeCmd())
	return c
}

// durationFlag is an issuer.Duration flag ("10y", "30d", "24h").
type durationFlag struct{ d *issuer.Duration }

func (f durationFlag) String() string {
	if f.d == nil || *f.d == 0 {
		return ""
	}
	return f.d.String()
}
func (f durationFlag) Set(s string) error {
	v, err := issuer.ParseDuration(s)
	if err != nil {
		return err
	}
	if v <= 0 {
		return fmt.Errorf("duration %q must be positive", s)
	}
	*f.d = v
	return nil
}
func (durationFlag) Type() string { return "duration" }

func newCAInitCmd() *cobra.Command {
	var o issuer.InitOptions
	var alg string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "init --dir DIR [--kms URI] [--root-lifetime 10y] [--intermediate-lifetime 1y] [--name NAME]",
		Short: "Create the CA: a root and an intermediate, keys in a KMS",
		Long: `Creates a root and an intermediate (ECDSA P-256 by default) in DIR:
root.crt, the intermediate's certificate (also as intermediate.crt and in
the bundle intermediates.crt) and ca.json, which names the key URIs,
lifetimes and AK template. With the default KMS (softkms:) the keys are
files in DIR, mode 0600. Other KMSs take their URI in --kms, e.g.
  pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=tpmid?pin-source=/etc/tpmid/pin
  tpmkms:storage-directory=/var/lib/tpmid/tpmkms
  awskms:region=eu-west-1   (with --root-key and --intermediate-key)
An existing CA in DIR is refused unless --force, which moves its files to
DIR/replaced-<time>/. Give relying parties (and step-ca's attestationRoots)
root.crt.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Dir == "" {
				return fmt.Errorf("--dir is required")
			}
			a, err := keys.ParseAlgorithm(alg)
			if err != nil {
				return err
			}
			o.KeyAlgorithm = a
			if _, err := issuer.Init(cmd.Context(), o); err != nil {
				return err
			}
			return printCA(cmd.Context(), cmd.OutOrStdout(), o.Dir, "created", asJSON)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Dir, "dir", "", "the CA directory (created 0700 if absent)")
	f.StringVar(&o.KMS, "kms", keys.DefaultKMS, "KMS URI holding the CA keys (softkms:, pkcs11:..., tpmkms:..., awskms:/cloudkms:/azurekms: with -tags cloudkms)")
	f.StringVar(&o.RootKey, "root-key", "", "key URI of the root key (default: root.key in DIR for softkms, a new object for pkcs11/tpmkms)")
	f.StringVar(&o.IntermediateKey, "intermediate-key", "", "key URI of the intermediate key (default like --root-key)")
	f.StringVar(&alg, "key-algorithm", string(keys.ECDSAP256), fmt.Sprintf("CA key algorithm: %v", keys.Algorithms))
	f.StringVar(&o.Name, "name", issuer.DefaultName, "CA name: the root is \"NAME Root CA\", the intermediate \"NAME Intermediate CA\"")
	o.RootLifetime, o.IntermediateLifetime, o.AKLifetime = issuer.DefaultRootLifetime, issuer.DefaultIntermediateLifetime, issuer.DefaultAKLifetime
	f.Var(durationFlag{&o.RootLifetime}, "root-lifetime", "root certificate lifetime (y, d, h, m)")
	f.Var(durationFlag{&o.IntermediateLifetime}, "intermediate-lifetime", "intermediate certificate lifetime")
	f.Var(durationFlag{&o.AKLifetime}, "ak-lifetime", "default AK certificate lifetime")
	f.StringVar(&o.AKTemplate, "ak-template", "", "x509util template file for AK certificates (default: built in; see docs/ca.md)")
	f.BoolVar(&o.Force, "force", false, "replace an existing CA in DIR (its files are moved to DIR/replaced-<time>/)")
	f.BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func newCARotateCmd() *cobra.Command {
	var dir, key string
	var lifetime issuer.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "rotate-intermediate --dir DIR [--key URI] [--lifetime 1y]",
		Short: "Replace the issuing intermediate; the previous one stays in the bundle",
		Long: `Creates a new intermediate key and certificate under the same root (the
root key is used) and makes it the issuing one. The previous intermediate
stays in ca.json's previousIntermediates and in intermediates.crt, so AK
certificates it issued keep verifying until they expire; expired previous
intermediates are dropped. Servers use the new intermediate when they load
the CA again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return fmt.Errorf("--dir is required")
			}
			if _, err := issuer.RotateIntermediate(cmd.Context(), dir, issuer.RotateOptions{Key: key, Lifetime: lifetime}); err != nil {
				return err
			}
			return printCA(cmd.Context(), cmd.OutOrStdout(), dir, "rotated", asJSON)
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "the CA directory")
	f.StringVar(&key, "key", "", "key URI of the new intermediate key (default: a new name in the CA's KMS)")
	f.Var(durationFlag{&lifetime}, "lifetime", "lifetime of the new intermediate (default: the current one's)")
	f.BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

// caCertReport describes one CA certificate.
type caCertReport struct {
	Subject      string    `json:"subject"`
	File         string    `json:"file"`
	Key          string    `json:"key,omitempty"`
	SHA256       string    `json:"sha256"`
	KeyType      string    `json:"key_type"`
	NotBefore    time.Time `json:"not_before"`
	NotAfter     time.Time `json:"not_after"`
	SubjectKeyID string    `json:"subject_key_id"`
}

type caReport struct {
	Dir          string         `json:"dir"`
	KMS          string         `json:"kms"`
	Root         caCertReport   `json:"root"`
	Intermediate caCertReport   `json:"intermediate"`
	Previous     []caCertReport `json:"previous_intermediates"`
	AKLifetime   string         `json:"ak_lifetime"`
	AKTemplate   string         `json:"ak_template"`
	RootFile     string         `json:"root_file"`
	BundleFile   string         `json:"intermediates_file"`
}

// printCA loads the CA (which issues and verifies a test certificate) and
// describes it.
func printCA(ctx context.Context, out io.Writer, dir, verb string, asJSON bool) error {
	ca, err := issuer.Load(ctx, dir)
	if err != nil {
		return err
	}
	defer ca.Close()
	cfg := ca.Config()
	abs, _ := filepath.Abs(dir)
	certRep := func(c *x509.Certificate, ck issuer.CertKey) caCertReport {
		sum := sha256.Sum256(c.Raw)
		return caCertReport{
			Subject: c.Subject.String(), File: ck.Certificate, Key: keys.Redact(ck.Key),
			SHA256: hex.EncodeToString(sum[:]), KeyType: keyType(c.PublicKey),
			NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(),
			SubjectKeyID: hex.EncodeToString(c.SubjectKeyId),
		}
	}
	rep := caReport{
		Dir: abs, KMS: keys.Redact(cfg.KMS),
		Root:         certRep(ca.Root(), cfg.Root),
		Intermediate: certRep(ca.Intermediate(), cfg.Intermediate),
		Previous:     []caCertReport{},
		AKLifetime:   cfg.AK.Lifetime.String(),
		AKTemplate:   cfg.AK.Template,
		RootFile:     filepath.Join(abs, issuer.RootCertFile),
		BundleFile:   filepath.Join(abs, issuer.IntermediatesCertFile),
	}
	for i, p := range ca.Intermediates()[1:] {
		rep.Previous = append(rep.Previous, certRep(p, cfg.Previous[i]))
	}
	if asJSON {
		return printJSON(out, rep)
	}
	line := func(label string, r caCertReport) {
		fmt.Fprintf(out, "%-14s %s (%s), expires %s\n%-14s sha256 %s, key %s\n", label, r.Subject, r.KeyType,
			r.NotAfter.Format(time.RFC3339), "", r.SHA256, r.Key)
	}
	fmt.Fprintf(out, "CA %s in %s (KMS %s)\n", verb, rep.Dir, rep.KMS)
	line("root:", rep.Root)
	line("intermediate:", rep.Intermediate)
	for _, p := range rep.Previous {
		line("previous:", p)
	}
	tmpl := "built in"
	if rep.AKTemplate != "" {
		tmpl = rep.AKTemplate
	}
	fmt.Fprintf(out, "AK certificates: lifetime %s, template %s\n", rep.AKLifetime, tmpl)
	fmt.Fprintf(out, "trust anchor for relying parties (step-ca attestationRoots): %s\n", rep.RootFile)
	return nil
}

func keyType(pub any) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	}
	return fmt.Sprintf("%T", pub)
}
