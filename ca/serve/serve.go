// Package serve is `tpmid ca serve`: an HTTPS API that certifies the AKs of
// machines outside SPIRE with tpmid's CA, speaking the protocol of
// go.step.sm/crypto/tpm/attestation's client (POST /attest, POST /secret).
// It admits an EK exactly as the server plugin does (session.EKPolicy over
// the same EK CA bundle and allowlist), checks the AK as the plugin does
// (verify.ParseAKPublic, CheckAKAttributes, CheckAKStrength, and
// go-attestation's CheckAKParameters inside ActivationParameters.Generate),
// consults the plugin's store for enrollment and revocation, records an
// attempt for every outcome that names an EK, and issues with
// pkg/server/akissuer over a loaded ca/issuer CA. Prometheus metrics are at
// /metrics.
package serve

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-attestation/attest"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/tpmid/tpmid/ca/issuer"
	"github.com/tpmid/tpmid/pkg/server/akissuer"
	"github.com/tpmid/tpmid/pkg/server/nodes"
	"github.com/tpmid/tpmid/pkg/server/session"
	"github.com/tpmid/tpmid/pkg/server/store"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// DefaultServerName is the Server field of the attempts this server
// records.
const DefaultServerName = "tpmid-ca"

// Endpoints, relative to the base URL the client is given.
const (
	PathAttest  = "/attest"
	PathSecret  = "/secret"
	PathMetrics = "/metrics"

	endpointAttest = "attest"
	endpointSecret = "secret"
)

// Limits bound what one request and the pending challenges may take.
type Limits struct {
	// MaxAttestBody and MaxSecretBody bound request bodies in bytes.
	MaxAttestBody int64
	MaxSecretBody int64
	// MaxEKCerts bounds AttestRequest.EKCerts (the EK certificate and
	// its intermediates).
	MaxEKCerts int
	// MaxPending bounds the challenges waiting for their secret, in count
	// and in (estimated) bytes; MaxPendingPerEK bounds them per EK. A new
	// challenge past a bound is refused (busy, 503; too_many_challenges,
	// 429), nothing is evicted.
	MaxPending      int
	MaxPendingBytes int
	MaxPendingPerEK int
	// ChallengeTTL is how long a challenge waits for its secret.
	ChallengeTTL time.Duration
	// MaxInFlight bounds the /attest and /secret requests handled at once;
	// more are refused (busy, 503) rather than queued.
	MaxInFlight int
	// RequestTimeout bounds the work on one request (EK chain, store,
	// issuance).
	RequestTimeout time.Duration
}

// DefaultLimits are the limits used for zero fields.
var DefaultLimits = Limits{
	MaxAttestBody:   64 << 10,
	MaxSecretBody:   4 << 10,
	MaxEKCerts:      4,
	MaxPending:      1024,
	MaxPendingBytes: 8 << 20,
	MaxPendingPerEK: 4,
	ChallengeTTL:    60 * time.Second,
	MaxInFlight:     64,
	RequestTimeout:  30 * time.Second,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	set := func(v *int64, def int64) {
		if *v <= 0 {
			*v = def
		}
	}
	seti := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&l.MaxAttestBody, d.MaxAttestBody)
	set(&l.MaxSecretBody, d.MaxSecretBody)
	seti(&l.MaxEKCerts, d.MaxEKCerts)
	seti(&l.MaxPending, d.MaxPending)
	seti(&l.MaxPendingBytes, d.MaxPendingBytes)
	seti(&l.MaxPendingPerEK, d.MaxPendingPerEK)
	seti(&l.MaxInFlight, d.MaxInFlight)
	if l.ChallengeTTL <= 0 {
		l.ChallengeTTL = d.ChallengeTTL
	}
	if l.RequestTimeout <= 0 {
		l.RequestTimeout = d.RequestTimeout
	}
	return l
}

// Config configures a Server.
type Config struct {
	CA    *issuer.CA
	Store store.Store
	// EK is the EK admission, as the server plugin's ek_policy,
	// ek_ca_bundle and ek_hash_allowlist make it (LoadEKPolicy).
	EK         *session.EKPolicy
	Enrollment nodes.Enrollment
	// TrustDomain names the agents: spiffe://<td>/spire/agent/tpm/<EK hash>.
	TrustDomain spiffeid.TrustDomain
	// AKLifetime overrides the CA's ak.lifetime; zero keeps it.
	AKLifetime time.Duration
	// ServerName is the Server field of attempt records (DefaultServerName).
	ServerName string
	Limits     Limits
	Logger     *slog.Logger     // nil: discard
	Now        func() time.Time // nil: time.Now
	Rand       io.Reader        // nil: crypto/rand
}

// Server answers the attestation protocol. Create it with New.
type Server struct {
	cfg      Config
	limits   Limits
	log      *slog.Logger
	now      func() time.Time
	issuer   *akissuer.Issuer
	table    *table
	metrics  *metrics
	inFlight chan struct{}
}

// New checks cfg and makes a Server.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.CA == nil:
		return nil, errors.New("serve: no CA")
	case cfg.Store == nil:
		return nil, errors.New("serve: no store")
	case cfg.EK == nil:
		return nil, errors.New("serve: no EK policy")
	case cfg.TrustDomain.IsZero():
		return nil, errors.New("serve: no trust domain")
	case cfg.AKLifetime < 0:
		return nil, fmt.Errorf("serve: negative AK lifetime %s", cfg.AKLifetime)
	}
	if cfg.Enrollment == "" {
		cfg.Enrollment = nodes.Open
	}
	if _, err := nodes.ParseEnrollment(string(cfg.Enrollment)); err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	if cfg.ServerName == "" {
		cfg.ServerName = DefaultServerName
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	s := &Server{cfg: cfg, limits: cfg.Limits.withDefaults(), log: cfg.Logger, now: cfg.Now}
	s.issuer = &akissuer.Issuer{CA: cfg.CA, Lifetime: cfg.AKLifetime, Now: cfg.Now}
	s.inFlight = make(chan struct{}, s.limits.MaxInFlight)
	s.metrics = newMetrics(func() float64 { return float64(s.table.len()) })
	s.table = newTable(s.limits, cfg.Now, s.metrics.expired.Inc)
	return s, nil
}

// Handler serves POST /attest, POST /secret and GET /metrics; anything
// else is a JSON 404 (or 405 for a wrong method).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(PathAttest, s.endpoint(endpointAttest, s.limits.MaxAttestBody, s.attest))
	mux.Handle(PathSecret, s.endpoint(endpointSecret, s.limits.MaxSecretBody, s.secret))
	mux.Handle(PathMetrics, promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.refuseHTTP(w, r, "", &refusal{reason: ReasonNotFound, msg: fmt.Sprintf("no such endpoint %s: the attestation API is POST %s and POST %s", r.URL.Path, PathAttest, PathSecret)})
	})
	return mux
}

// refusal is a refused request: its reason and a message for the client.
// Internal errors keep their detail in err (logged) and show msg only.
type refusal struct {
	reason verify.Reason
	msg    string
	err    error
}

func refuseErr(err error) *refusal {
	r := verify.ReasonOf(err)
	if r == "" {
		r = ReasonInternal
	}
	if status(r) >= 500 {
		return &refusal{reason: r, msg: "internal error", err: err}
	}
	return &refusal{reason: r, msg: err.Error(), err: err}
}

// endpoint wraps a POST handler: the method, the in-flight bound, the
// body bound, the JSON answer, the metrics and the log.
func (s *Server) endpoint(name string, maxBody int64, fn func(context.Context, *http.Request, []byte) (any, *refusal)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		reqID := requestID(r)
		if reqID != "" {
			w.Header().Set("X-Request-Id", reqID)
		}
		outcome := "refused"
		defer func() {
			s.metrics.duration.WithLabelValues(name, outcome).Observe(time.Since(start).Seconds())
		}()
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			s.refuseHTTP(w, r, reqID, &refusal{reason: ReasonMethod, msg: fmt.Sprintf("%s %s: use POST", r.Method, r.URL.Path)})
			return
		}
		select {
		case s.inFlight <- struct{}{}:
			defer func() { <-s.inFlight }()
		default:
			w.Header().Set("Retry-After", "1")
			s.refuseHTTP(w, r, reqID, &refusal{reason: ReasonBusy, msg: "too many requests in flight; retry"})
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				s.refuseHTTP(w, r, reqID, &refusal{reason: ReasonTooLarge, msg: fmt.Sprintf("request body over %d bytes", maxBody)})
				return
			}
			s.refuseHTTP(w, r, reqID, &refusal{reason: ReasonMalformed, msg: "reading the request body: " + err.Error()})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), s.limits.RequestTimeout)
		defer cancel()
		resp, ref := fn(ctx, r, body)
		if ref != nil {
			if ref.reason == ReasonBusy || ref.reason == ReasonTooManyChallenges || ref.reason == nodes.ReasonStoreUnavailable {
				w.Header().Set("Retry-After", "5")
			}
			s.refuseHTTP(w, r, reqID, ref)
			return
		}
		outcome = "ok"
		writeJSON(w, http.StatusOK, resp)
	})
}

// refuseHTTP answers a refusal as JSON, counts and logs it.
func (s *Server) refuseHTTP(w http.ResponseWriter, r *http.Request, reqID string, ref *refusal) {
	s.metrics.refused.WithLabelValues(string(metricReason(ref.reason))).Inc()
	attrs := []any{"path", r.URL.Path, "remote", r.RemoteAddr, "reason", string(ref.reason), "message", ref.msg}
	if reqID != "" {
		attrs = append(attrs, "request_id", reqID)
	}
	if ref.err != nil && ref.err.Error() != ref.msg {
		attrs = append(attrs, "error", ref.err.Error())
	}
	s.log.Info("refused", attrs...)
	writeJSON(w, status(ref.reason), ErrorResponse{Error: string(ref.reason), Message: ref.msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"internal","message":"encoding the answer"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// requestID is the client's X-Request-Id, if it is short and printable
// (it is echoed and logged, never used to find a challenge).
func requestID(r *http.Request) string {
	id := r.Header.Get("X-Request-Id")
	if len(id) > 128 || strings.IndexFunc(id, func(c rune) bool { return c < 0x21 || c > 0x7e }) >= 0 {
		return ""
	}
	return id
}

// decode reads a JSON body strictly: one object, nothing after it.
// Unknown fields are ignored, so a newer client's additions do not break
// it.
func decode(body []byte, v any) *refusal {
	if err := json.Unmarshal(body, v); err != nil {
		return &refusal{reason: ReasonMalformed, msg: "request body is not the expected JSON: " + err.Error()}
	}
	return nil
}

// attest answers POST /attest: it admits the EK, checks the AK, consults
// the store, and answers TPM2_MakeCredential output for (EK, AK name),
// keeping the secret until /secret.
func (s *Server) attest(ctx context.Context, r *http.Request, body []byte) (any, *refusal) {
	var req AttestRequest
	if ref := decode(body, &req); ref != nil {
		return nil, ref
	}
	if v := req.TPMInfo.Version; v != 0 && v != uint8(tpmVersion20) {
		return nil, &refusal{reason: ReasonTPMVersion, msg: fmt.Sprintf("tpmInfo.version %d: only TPM 2.0 (2) is supported", v)}
	}
	if req.Params.UseTCSDActivationFormat {
		return nil, &refusal{reason: ReasonTPMVersion, msg: "params.useTCSDActivationFormat is TPM 1.2's activation format: only TPM 2.0 is supported"}
	}
	claim, ref := s.ekClaim(&req)
	if claim == nil {
		return nil, ref // no EK to record the refusal under
	}
	// From here the EK is known: every refusal is recorded under it.
	refuse := func(ref *refusal) (any, *refusal) {
		s.recordRefusal(ctx, claim.Hash, "", ref)
		return nil, ref
	}
	if ref != nil {
		return refuse(ref)
	}
	facts, err := s.cfg.EK.AdmitEK(ctx, claim)
	if err != nil {
		return refuse(refuseErr(err))
	}
	// The store before any AK work: a revoked or (with required) unknown
	// EK gets no challenge.
	host, err := s.checkHost(ctx, claim.Hash)
	if err != nil {
		return refuse(refuseErr(err))
	}
	if facts == nil || facts.Manufacturer == "" || facts.Model == "" || facts.Version == "" {
		return refuse(&refusal{reason: ReasonTPMUnknown, msg: fmt.Sprintf("EK %s was admitted, but no trusted EK certificate gives the TPM's manufacturer, model and firmware version, "+
			"which an AK certificate must carry (an EK admitted by allowlist alone, or a certificate without the TCG subjectAltName)", claim.Hash)})
	}
	ak, err := verify.ParseAKPublic(req.Params.Public)
	if err == nil {
		err = verify.CheckAKAttributes(ak)
	}
	if err == nil {
		err = verify.CheckAKStrength(ak)
	}
	if err != nil {
		return refuse(refuseErr(err))
	}
	ekDER, _ := x509.MarshalPKIXPublicKey(claim.Public)
	params := attest.ActivationParameters{
		EK: claim.Public,
		AK: attest.AttestationParameters{
			Public:            req.Params.Public,
			CreateData:        req.Params.CreateData,
			CreateAttestation: req.Params.CreateAttestation,
			CreateSignature:   req.Params.CreateSignature,
		},
		Rand: s.cfg.Rand,
	}
	// Generate runs go-attestation's CheckAKParameters (creation data
	// digest, TPM_GENERATED creation attestation signed by the AK, name
	// match) before TPM2_MakeCredential. The plugin's sessions check no
	// creation attestation (activation proves more; docs/verification.md),
	// but step-ca clients send one and go-attestation requires it.
	secret, cred, err := params.Generate()
	if err != nil {
		return refuse(&refusal{reason: session.ReasonAKCreation, msg: "AK attestation parameters: " + err.Error(), err: err})
	}
	p := &pending{secret: secret, ekHash: claim.Hash, ekPublic: ekDER, ekFacts: facts, akPublic: ak.Public, requestID: requestID(r)}
	switch err := s.table.put(p); {
	case errors.Is(err, errTableFull):
		return refuse(&refusal{reason: ReasonBusy, msg: fmt.Sprintf("%v (bound %d, %d bytes); retry later", err, s.limits.MaxPending, s.limits.MaxPendingBytes)})
	case errors.Is(err, errEKBusy):
		return refuse(&refusal{reason: ReasonTooManyChallenges, msg: fmt.Sprintf("EK %s already has %d challenges waiting for their secret; answer one or wait %s", claim.Hash, s.limits.MaxPendingPerEK, s.limits.ChallengeTTL)})
	case err != nil:
		return refuse(&refusal{reason: ReasonInternal, msg: "internal error", err: err})
	}
	s.log.Info("challenge", "ek_hash", claim.Hash, "host", hostName(host), "remote", r.RemoteAddr, "request_id", p.requestID)
	return AttestResponse{Credential: cred.Credential, Secret: cred.Secret}, nil
}

// tpmVersion20 is go-attestation's TPMVersion20 (attest.TPMVersion in the
// smallstep fork the step client uses; google's v0.6.4 dropped the type).
const tpmVersion20 = 2

// ekClaim decodes the request's EK as the plugin's hello does: the public
// key (whose hash names the agent), and the certificate and intermediates
// when sent, the certificate for the same key. A refusal comes with the
// claim when the EK's hash is known (to record it under), without when
// not.
func (s *Server) ekClaim(req *AttestRequest) (*session.EKClaim, *refusal) {
	if len(req.EK) == 0 {
		return nil, &refusal{reason: session.ReasonEKMalformed, msg: "no EK public key (ek)"}
	}
	pub, err := x509.ParsePKIXPublicKey(req.EK)
	if err != nil {
		return nil, &refusal{reason: session.ReasonEKMalformed, msg: "EK public key is not PKIX DER: " + err.Error()}
	}
	hash, err := verify.EKHash(pub)
	if err != nil {
		return nil, &refusal{reason: session.ReasonEKMalformed, msg: "EK public key: " + err.Error()}
	}
	c := &session.EKClaim{Public: pub, Hash: hash}
	if len(req.EKCerts) > s.limits.MaxEKCerts {
		return c, &refusal{reason: session.ReasonEKMalformed, msg: fmt.Sprintf("%d EK certificates, at most %d", len(req.EKCerts), s.limits.MaxEKCerts)}
	}
	if len(req.EKCerts) == 0 {
		return c, nil
	}
	if c.Certificate, err = verify.ParseEKCert(req.EKCerts[0]); err != nil {
		return c, refuseErr(err)
	}
	if eq, ok := c.Certificate.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(pub) {
		return c, &refusal{reason: session.ReasonEKMismatch, msg: "the EK certificate is for another key than the EK public key sent"}
	}
	for i, der := range req.EKCerts[1:] {
		ic, err := x509.ParseCertificate(der)
		if err != nil {
			return c, &refusal{reason: session.ReasonEKMalformed, msg: fmt.Sprintf("EK certificate %d: %v", i+1, err)}
		}
		c.Intermediates = append(c.Intermediates, ic)
	}
	return c, nil
}

// secret answers POST /secret: the secret redeems its challenge once, the
// store is consulted again (a revocation since /attest counts), the AK is
// certified, the attempt recorded, and the chain returned.
func (s *Server) secret(ctx context.Context, _ *http.Request, body []byte) (any, *refusal) {
	var req SecretRequest
	if ref := decode(body, &req); ref != nil {
		return nil, ref
	}
	if len(req.Secret) == 0 {
		return nil, &refusal{reason: ReasonMalformed, msg: "no secret"}
	}
	p := s.table.take(req.Secret)
	if p == nil {
		// Not attributable: the step protocol's /secret carries only the
		// secret, so a wrong one names no EK. Counted and logged; no
		// attempt record (there is no EK to file it under).
		return nil, &refusal{reason: ReasonSecretUnknown, msg: "the secret answers no pending challenge: wrong, expired (challenges live " + s.limits.ChallengeTTL.String() + ") or already used"}
	}
	id, err := spiffeid.FromSegments(s.cfg.TrustDomain, "spire", "agent", "tpm", p.ekHash)
	if err != nil {
		ref := &refusal{reason: ReasonInternal, msg: "internal error", err: err}
		s.recordRefusal(ctx, p.ekHash, "", ref)
		return nil, ref
	}
	// Issue first (no side effect), then check the host again and record
	// the admission in one transaction: a certificate is returned only
	// once its attempt is recorded, and never to an EK revoked meanwhile.
	chain, err := s.issuer.IssueAK(ctx, &session.Facts{EKHash: p.ekHash, EKPublic: p.ekPublic, EK: p.ekFacts, AKPublic: p.akPublic}, id)
	if err != nil {
		ref := &refusal{reason: ReasonIssue, msg: "the CA could not issue the AK certificate", err: err}
		s.recordRefusal(ctx, p.ekHash, "", ref)
		return nil, ref
	}
	var hostname string
	err = s.cfg.Store.Update(ctx, func(tx store.Tx) error {
		h, err := s.hostIn(ctx, tx, p.ekHash)
		if err != nil {
			return err
		}
		hostname = hostName(h)
		return tx.AppendAttempt(ctx, &store.Attempt{
			Time: s.now(), EKHash: p.ekHash, Hostname: hostname, Server: s.cfg.ServerName,
			Outcome: store.OutcomeAdmitted,
		})
	})
	if err != nil {
		ref := refuseErr(storeError(err))
		s.recordRefusal(ctx, p.ekHash, hostname, ref)
		return nil, ref
	}
	s.metrics.issued.Inc()
	s.log.Info("issued", "ek_hash", p.ekHash, "host", hostname, "spiffe_id", id.String(), "serial", serialOf(chain), "request_id", p.requestID)
	return SecretResponse{Chain: chain}, nil
}

func serialOf(chain [][]byte) string {
	if len(chain) == 0 {
		return ""
	}
	c, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%x", c.SerialNumber)
}

// checkHost reads the EK's host and applies enrollment and revocation.
func (s *Server) checkHost(ctx context.Context, ekHash string) (*store.Host, error) {
	var h *store.Host
	err := s.cfg.Store.View(ctx, func(tx store.Tx) (err error) {
		h, err = s.hostIn(ctx, tx, ekHash)
		return err
	})
	if err != nil {
		return nil, storeError(err)
	}
	return h, nil
}

// hostIn is the enrollment decision of pkg/server/nodes without what needs
// a quote (counters, profiles) or a hostname claim (TOFU binding):
//   - a revoked EK is refused in every mode (ek_revoked);
//   - required: only an enrolled EK (ek_not_enrolled otherwise);
//   - open and tofu: an unknown EK passes and nothing is written: the step
//     protocol names no hostname to bind, so a TOFU binding is left to the
//     EK's first attestation through SPIRE.
func (s *Server) hostIn(ctx context.Context, tx store.Tx, ekHash string) (*store.Host, error) {
	h, err := tx.HostByEK(ctx, ekHash)
	switch {
	case errors.Is(err, store.ErrNotFound):
		h = nil
	case err != nil:
		return nil, err
	}
	if h != nil {
		if h.State == store.HostRevoked {
			return nil, &verify.Error{Reason: nodes.ReasonRevoked, Err: fmt.Errorf("EK %s (host %s) is revoked", ekHash, h.Hostname)}
		}
		return h, nil
	}
	if s.cfg.Enrollment == nodes.Required {
		return nil, &verify.Error{Reason: nodes.ReasonNotEnrolled, Err: fmt.Errorf("EK %s is not enrolled (enrollment = required); enroll it with tpmid hosts enroll", ekHash)}
	}
	return nil, nil
}

func hostName(h *store.Host) string {
	if h == nil {
		return ""
	}
	return h.Hostname
}

// storeError is nodes.StoreError, with a request that ran out of time in
// the store counted as the store being unavailable (503, retry).
func storeError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return &verify.Error{Reason: nodes.ReasonStoreUnavailable, Err: err}
	}
	return nodes.StoreError(err)
}

// recordRefusal appends a refused attempt for an EK (with its host's name
// when the store knows the EK), in its own transaction, which outlives a
// client that went away (up to recordTimeout). A store failure is logged:
// the refusal stands either way.
func (s *Server) recordRefusal(ctx context.Context, ekHash, hostname string, ref *refusal) {
	line := string(ref.reason) + ": " + ref.msg
	if ref.err != nil && status(ref.reason) >= 500 {
		// The client saw a short message; the operator's record has why.
		line = string(ref.reason) + ": " + ref.err.Error()
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	err := s.cfg.Store.Update(ctx, func(tx store.Tx) error {
		name := hostname
		if h, err := tx.HostByEK(ctx, ekHash); err == nil && name == "" {
			name = h.Hostname
		}
		return tx.AppendAttempt(ctx, &store.Attempt{
			Time: s.now(), EKHash: ekHash, Hostname: name, Server: s.cfg.ServerName,
			Outcome: store.OutcomeRefused, Reasons: []string{line},
		})
	})
	if err != nil {
		s.log.Error("recording a refused attempt", "ek_hash", ekHash, "error", err.Error())
	}
}

// recordTimeout bounds writing a refused attempt.
const recordTimeout = 10 * time.Second
