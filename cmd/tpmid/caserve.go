package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/tpmid/tpmid/ca/issuer"
	"github.com/tpmid/tpmid/ca/serve"
	"github.com/tpmid/tpmid/pkg/server/nodes"
)

func newCAServeCmd() *cobra.Command {
	var (
		dir, listen, trustDomain                 string
		ekBundle, ekPolicy, ekAllowlist, enrolls string
		tlsCert, tlsKey, serverName              string
		tlsNames                                 []string
		akLifetime, challengeTTL, grace          time.Duration
		maxPending                               int
		insecure                                 bool
		sf                                       storeFlags
	)
	cmd := &cobra.Command{
		Use: "serve --dir CADIR --listen ADDR --trust-domain TD (--store DSN | --config FILE) --ek-ca-bundle PATH\n" +
			"      [--ek-policy cert|allowlist|cert_or_allowlist|cert_and_allowlist] [--ek-hash-allowlist FILE]\n" +
			"      [--enrollment open|tofu|required] [--tls-cert FILE --tls-key FILE | --tls-name NAME...]",
		Short: "Serve AK certificates over HTTPS to machines outside SPIRE (go.step.sm/crypto's attestation protocol)",
		Long: `Runs an HTTPS API that certifies TPM attestation keys with the CA in
CADIR, speaking the protocol of go.step.sm/crypto/tpm/attestation's client
(step's attestation client; its base URL is https://ADDR):

  POST /attest  the EK (public key, certificate) and the AK's attestation
                parameters; answers a TPM2_MakeCredential challenge
  POST /secret  the activated secret; answers the AK certificate chain
                (the AK certificate, then the intermediate)
  GET /metrics  Prometheus metrics: tpmid_ca_issued_total,
                tpmid_ca_refused_total{reason}, tpmid_ca_request_duration_seconds

The EK is admitted as the server plugin admits it (--ek-policy,
--ek-ca-bundle, --ek-hash-allowlist: the plugin's ek_policy, ek_ca_bundle
and ek_hash_allowlist), the AK is checked as the plugin checks it, and the
plugin's store is consulted (--store, or --config with the plugin's
plugin_data or the whole spire-server config, which also gives the
enrollment, the EK settings and the trust domain; flags override it): a revoked EK is refused, with --enrollment
required only enrolled EKs get a certificate; open and tofu certify any
admitted EK (the protocol names no hostname, so nothing is bound). Every
outcome for an EK is recorded as an attempt with server "tpmid-ca" (see
tpmid attestations list). The certificate names the EK (urn:ek:sha256:...),
the TPM (from the verified EK certificate) and
spiffe://TD/spire/agent/tpm/<EK hash>.

TLS: with --tls-cert and --tls-key the server uses that certificate.
Without them it GENERATES a server certificate from the CA's current
intermediate for the listen host (for an unspecified host such as :8443,
for this machine's hostname, localhost, 127.0.0.1 and ::1; add names with
--tls-name), valid 7 days and renewed while running. Clients then trust
CADIR/root.crt, e.g. attestation.NewClient(url,
attestation.WithRootsFile("root.crt")).

SIGINT or SIGTERM stops accepting connections and lets requests in flight
finish (--shutdown-grace). See docs/ca.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			out := cmd.OutOrStdout()
			switch {
			case dir == "":
				return errors.New("--dir is required (the CA made by tpmid ca init)")
			case listen == "":
				return errors.New("--listen is required (e.g. :8443)")
			case (tlsCert == "") != (tlsKey == ""):
				return errors.New("give --tls-cert and --tls-key together")
			case insecure && (tlsCert != "" || len(tlsNames) > 0):
				return errors.New("--insecure serves plain HTTP: it takes no --tls-cert, --tls-key or --tls-name")
			case tlsCert != "" && len(tlsNames) > 0:
				return errors.New("--tls-name names a generated certificate; --tls-cert brings its own names")
			}
			_, fileCfg, err := sf.resolve()
			if err != nil {
				return err
			}
			if trustDomain == "" && fileCfg != nil {
				trustDomain = fileCfg.TrustDomain
			}
			if trustDomain == "" {
				return errors.New("--trust-domain is required (or --config with a spire-server config naming server { trust_domain })")
			}
			td, err := spiffeid.TrustDomainFromString(trustDomain)
			if err != nil {
				return fmt.Errorf("--trust-domain: %w", err)
			}
			enrollment := nodes.Open
			if fileCfg != nil {
				enrollment = fileCfg.Enrollment
			}
			if cmd.Flags().Changed("enrollment") {
				if enrollment, err = nodes.ParseEnrollment(enrolls); err != nil {
					return fmt.Errorf("--enrollment: %w", err)
				}
			}
			if fileCfg != nil {
				for _, v := range []struct {
					flag string
					dst  *string
					val  string
				}{{"ek-policy", &ekPolicy, fileCfg.EKPolicy}, {"ek-ca-bundle", &ekBundle, fileCfg.EKCABundle}, {"ek-hash-allowlist", &ekAllowlist, fileCfg.EKHashAllowlist}} {
					if !cmd.Flags().Changed(v.flag) && v.val != "" {
						*v.dst = v.val
					}
				}
			}
			ek, err := serve.LoadEKPolicy(ekPolicy, ekBundle, ekAllowlist)
			if err != nil {
				return err
			}
			ca, err := issuer.Load(ctx, dir)
			if err != nil {
				return fmt.Errorf("loading the CA: %w", err)
			}
			defer ca.Close()

			var tlsConfig *tls.Config
			var certNote string
			switch {
			case insecure:
				certNote = "plain HTTP (--insecure: for tests only, secrets and certificates travel in clear)"
			case tlsCert != "":
				pair, err := tls.LoadX509KeyPair(tlsCert, tlsKey)
				if err != nil {
					return fmt.Errorf("--tls-cert/--tls-key: %w", err)
				}
				tlsConfig = serve.TLSConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &pair, nil })
				certNote = "TLS certificate " + tlsCert
			default:
				names, err := serve.ListenNames(listen, tlsNames...)
				if err != nil {
					return err
				}
				sc, err := serve.NewServerCert(ctx, dir, ca, names, 0, nil)
				if err != nil {
					return fmt.Errorf("generating the server certificate: %w", err)
				}
				defer sc.Close()
				tlsConfig = serve.TLSConfig(sc.GetCertificate)
				root, _ := filepath.Abs(filepath.Join(dir, issuer.RootCertFile))
				certNote = fmt.Sprintf("generated TLS certificate for %v from %q (clients trust %s)", names, ca.Intermediate().Subject.CommonName, root)
			}

			st, _, err := sf.open(ctx, false)
			if err != nil {
				return err
			}
			defer st.Close()
			logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			srv, err := serve.New(serve.Config{
				CA: ca, Store: st, EK: ek, Enrollment: enrollment, TrustDomain: td, AKLifetime: akLifetime,
				ServerName: serverName, Logger: logger,
				Limits: serve.Limits{ChallengeTTL: challengeTTL, MaxPending: maxPending},
			})
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			scheme := "https"
			if insecure {
				scheme = "http"
			}
			fmt.Fprintf(out, "tpmid ca serve: listening on %s://%s (ek_policy %s, enrollment %s, trust domain %s, %s)\n",
				scheme, ln.Addr(), ek.Policy, enrollment, td, certNote)
			if err := srv.Serve(ctx, ln, tlsConfig, grace); err != nil {
				return err
			}
			fmt.Fprintln(out, "tpmid ca serve: stopped")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "the CA directory (tpmid ca init)")
	f.StringVar(&listen, "listen", "", "address to listen on, host:port (:8443 for every interface)")
	f.StringVar(&trustDomain, "trust-domain", "", "SPIFFE trust domain of the agent IDs in the certificates (spiffe://TD/spire/agent/tpm/<EK hash>)")
	sf.register(cmd, false)
	f.StringVar(&ekBundle, "ek-ca-bundle", "", "EK CA bundle: a PEM file or a directory of PEM/DER certificates (the plugin's ek_ca_bundle; default: --config's)")
	f.StringVar(&ekPolicy, "ek-policy", "cert", "EK admission: cert, allowlist, cert_or_allowlist or cert_and_allowlist (the plugin's ek_policy; default: --config's, else cert)")
	f.StringVar(&ekAllowlist, "ek-hash-allowlist", "", "file of allowed EK hashes, one hex SHA-256 a line (the plugin's ek_hash_allowlist; default: --config's)")
	f.StringVar(&enrolls, "enrollment", "open", "open, tofu or required (default: --config's enrollment, else open)")
	f.StringVar(&tlsCert, "tls-cert", "", "TLS server certificate chain, PEM (default: generate one from the CA's intermediate)")
	f.StringVar(&tlsKey, "tls-key", "", "TLS server key, PEM")
	f.StringSliceVar(&tlsNames, "tls-name", nil, "extra DNS name or IP address for the generated server certificate (repeatable)")
	f.DurationVar(&akLifetime, "ak-lifetime", 0, "AK certificate lifetime (default: the CA's ak.lifetime, 24h)")
	f.DurationVar(&challengeTTL, "challenge-ttl", serve.DefaultLimits.ChallengeTTL, "how long a challenge waits for its secret")
	f.IntVar(&maxPending, "max-pending", serve.DefaultLimits.MaxPending, "challenges waiting for their secret, at most (more are refused, 503)")
	f.StringVar(&serverName, "server-name", serve.DefaultServerName, "the server field of the attempts this server records")
	f.DurationVar(&grace, "shutdown-grace", serve.DefaultShutdownGrace, "on SIGINT/SIGTERM, how long requests in flight may take to finish")
	f.BoolVar(&insecure, "insecure", false, "FOR TESTS ONLY: serve plain HTTP (the secret and the certificates travel in clear)")
	return cmd
}
