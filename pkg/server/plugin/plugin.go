// Package plugin is the SPIRE server NodeAttestor shell around package
// session: it moves the attestation stream's bytes, bounds how long the
// agent may take to answer, and maps rejections to gRPC codes
// (InvalidArgument for malformed input, PermissionDenied for failed
// verification, DeadlineExceeded and Canceled for a stream that ends early)
// with a reason a person can act on.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	nodeattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/nodeattestor/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tpmid/tpmid/ca/issuer"
	"github.com/tpmid/tpmid/internal/version"
	"github.com/tpmid/tpmid/pkg/common/pluginconf"
	"github.com/tpmid/tpmid/pkg/common/wire"
	"github.com/tpmid/tpmid/pkg/server/akissuer"
	"github.com/tpmid/tpmid/pkg/server/nodes"
	"github.com/tpmid/tpmid/pkg/server/session"
	"github.com/tpmid/tpmid/pkg/server/store"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// Plugin implements the server NodeAttestor and Config services.
type Plugin struct {
	nodeattestorv1.UnimplementedNodeAttestorServer
	configv1.UnimplementedConfigServer

	mu       sync.RWMutex
	cfg      *settings
	store    store.Store // open store of cfg, shared across reconfigurations with the same DSN
	storeDSN string
	ca       *issuer.CA // nil without ca_dir
	log      hclog.Logger
}

// New returns an unconfigured plugin.
func New() *Plugin { return &Plugin{log: hclog.NewNullLogger()} }

// SetLogger is called by the plugin framework.
func (p *Plugin) SetLogger(l hclog.Logger) { p.log = l }

// Configure parses the configuration, opens (or keeps) the store, and
// installs both atomically.
func (p *Plugin) Configure(ctx context.Context, req *configv1.ConfigureRequest) (*configv1.ConfigureResponse, error) {
	p.log.Info("Configuring", "plugin", "tpmid-server-plugin", "version", version.Short())
	cfg, err := buildConfig(req.GetCoreConfiguration().GetTrustDomain(), req.GetHclConfiguration())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "invalid configuration: %v", err)
	}
	for _, w := range cfg.warnings {
		p.log.Warn("Deprecated setting in plugin_data", "warning", w)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	st, old, opened := p.store, store.Store(nil), false
	if st == nil || p.storeDSN != cfg.storeDSN {
		opened = true
		if st, err = store.Open(ctx, cfg.storeDSN); err != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "tpmid store %s: %v (set store in plugin_data to a writable SQLite path or a postgres:// DSN)", store.RedactDSN(cfg.storeDSN), err)
		}
		old = p.store
	}
	var ca *issuer.CA
	if cfg.caDir != "" {
		if ca, err = issuer.Load(ctx, cfg.caDir); err != nil {
			if opened {
				st.Close()
			}
			return nil, status.Errorf(codes.FailedPrecondition, "tpmid CA %s: %v (create one with tpmid ca init --dir %s)", cfg.caDir, err, cfg.caDir)
		}
		cfg.session.Issuer = &akissuer.Issuer{CA: ca, Lifetime: cfg.akLifetime}
	}
	name := cfg.serverName
	if name == "" {
		name, _ = os.Hostname()
	}
	cfg.session.Nodes = &nodes.Nodes{
		Store: st, Enrollment: cfg.enrollment, Server: name,
		Security: func(msg string, kv ...any) { p.log.Error(msg, kv...) },
	}
	p.cfg, p.store, p.storeDSN = cfg, st, cfg.storeDSN
	if old != nil {
		old.Close()
	}
	if p.ca != nil {
		p.ca.Close()
	}
	p.ca = ca
	return &configv1.ConfigureResponse{}, nil
}

// Close closes the store when SPIRE unloads the plugin.
func (p *Plugin) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.store == nil {
		return nil
	}
	err := p.store.Close()
	if p.ca != nil {
		err = errors.Join(err, p.ca.Close())
	}
	p.store, p.cfg, p.ca = nil, nil, nil
	return err
}

// Validate reports every configuration error at once, without installing.
func (p *Plugin) Validate(_ context.Context, req *configv1.ValidateRequest) (*configv1.ValidateResponse, error) {
	cfg, err := buildConfig(req.GetCoreConfiguration().GetTrustDomain(), req.GetHclConfiguration())
	if err != nil {
		return &configv1.ValidateResponse{Valid: false, Notes: pluginconf.Notes(err)}, nil
	}
	return &configv1.ValidateResponse{Valid: true, Notes: cfg.warnings}, nil
}

// Attest runs one attestation: hello -> challenge -> evidence -> attributes.
func (p *Plugin) Attest(stream nodeattestorv1.NodeAttestor_AttestServer) error {
	p.mu.RLock()
	cfg := p.cfg
	p.mu.RUnlock()
	if cfg == nil {
		return status.Error(codes.FailedPrecondition, "not configured")
	}

	ctx := stream.Context()
	req, err := stream.Recv()
	if err != nil {
		return p.rejected(streamEnded(err, "hello"))
	}
	msg := req.GetPayload()
	if len(msg) == 0 {
		return status.Error(codes.InvalidArgument, "missing attestation payload (hello)")
	}
	sess := session.New(cfg.session)
	// The session's steps decide how many round trips there are; the
	// shell relays until it has a verdict. The log says where the time
	// went: the server's own work, and waiting for the agent's answers
	// (its TPM, and both hops through SPIRE).
	var t timing
	for {
		start := time.Now()
		reply, result, err := sess.Next(ctx, msg)
		t.busy += time.Since(start)
		if err != nil {
			return p.rejected(err)
		}
		if result != nil {
			return p.admitted(stream, result, t)
		}
		start = time.Now()
		if err := stream.Send(&nodeattestorv1.AttestResponse{
			Response: &nodeattestorv1.AttestResponse_Challenge{Challenge: reply},
		}); err != nil {
			return p.rejected(fmt.Errorf("sending the challenge: %w", err))
		}
		msg, err = recvEvidence(stream, cfg.evidenceTimeout)
		t.wait += time.Since(start)
		t.rounds++
		if err != nil {
			sess.End(ctx, err)
			return p.rejected(err)
		}
	}
}

// timing is where one attestation's time went, for the log.
type timing struct {
	busy, wait time.Duration
	rounds     int
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// admitted logs an admission and returns the agent's attributes to SPIRE.
func (p *Plugin) admitted(stream nodeattestorv1.NodeAttestor_AttestServer, result *session.Result, t timing) error {
	p.log.Info("Agent attested", "agent_id", result.AgentID.String(), "ek_hash", result.Facts.EKHash,
		"fast_path", result.FastPath, "ak_certificate_delivered", result.AKCertChain != nil,
		"server_busy_ms", ms(t.busy), "agent_wait_ms", ms(t.wait), "round_trips", t.rounds)
	if f := result.Facts; f != nil && f.EK != nil && len(f.EK.ChainQuirks) > 0 {
		// Admitted only because the operator accepts these defects of a
		// vendor intermediate (ek_chain_quirks); the selectors say so too.
		p.log.Info("EK certificate chain needed ek_chain_quirks", "agent_id", result.AgentID.String(), "ek_chain_quirks", f.EK.ChainQuirks, "ek_issuer", f.EK.Issuer)
	}
	if result.AKCertError != nil {
		p.log.Warn("No AK certificate issued", "agent_id", result.AgentID.String(), "error", result.AKCertError.Error())
	}
	return stream.Send(&nodeattestorv1.AttestResponse{
		Response: &nodeattestorv1.AttestResponse_AgentAttributes{
			AgentAttributes: &nodeattestorv1.AgentAttributes{
				SpiffeId:       result.AgentID.String(),
				SelectorValues: result.Selectors,
				// The agent can prove itself again with the same TPM, so
				// SPIRE lets it re-attest instead of renewing its SVID.
				CanReattest: true,
			},
		},
	})
}

// Reasons the shell reports for what is not a verification failure
// (session and verify name theirs).
const (
	ReasonMalformed          verify.Reason = "malformed"
	ReasonTooLarge           verify.Reason = "too_large"
	ReasonVersionUnsupported verify.Reason = "version_unsupported"
	ReasonStreamClosed       verify.Reason = "stream_closed"
	ReasonEvidenceTimeout    verify.Reason = "evidence_timeout"
	ReasonCanceled           verify.Reason = "canceled"
	ReasonDeadline           verify.Reason = "deadline"
	ReasonInternal           verify.Reason = "internal"
)

// Ends of the stream that are the agent's doing.
var (
	errStreamClosed    = errors.New("agent closed the stream")
	errEvidenceTimeout = errors.New("evidence_timeout passed")
)

// streamEnded says which message the agent had not sent when its stream
// ended: io.EOF is a half-close, anything else (a cancelled or expired
// context) is a gRPC status that keeps its code.
func streamEnded(err error, message string) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%w before sending its %s", errStreamClosed, message)
	}
	return fmt.Errorf("receiving the %s: %w", message, err)
}

// recvEvidence waits at most timeout for the agent's answer to the
// challenge. stream.Recv cannot be given a deadline, so it runs in a
// goroutine; when the wait ends first, Attest returns, gRPC cancels the
// stream's context, Recv returns with it and the goroutine ends.
func recvEvidence(stream nodeattestorv1.NodeAttestor_AttestServer, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeoutCause(stream.Context(), timeout,
		fmt.Errorf("%w: the agent sent no evidence within %s of the challenge", errEvidenceTimeout, timeout))
	defer cancel()
	type received struct {
		req *nodeattestorv1.AttestRequest
		err error
	}
	done := make(chan received, 1) // buffered, so the goroutine never waits for a reader
	go func() {
		req, err := stream.Recv()
		done <- received{req, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, streamEnded(r.err, "evidence")
		}
		return r.req.GetChallengeResponse(), nil
	case <-ctx.Done():
		// The timeout's cause, or the stream's own end (context.Canceled,
		// context.DeadlineExceeded).
		return nil, fmt.Errorf("waiting for the evidence: %w", context.Cause(ctx))
	}
}

// rejected logs a rejection and turns it into a gRPC status.
func (p *Plugin) rejected(err error) error {
	reason := Reason(err)
	p.log.Warn("Attestation refused", "reason", reason, "error", err.Error())
	return status.Errorf(Code(err), "tpmid: attestation refused (%s): %v", reason, err)
}

// Code maps an attestation error to its gRPC code.
func Code(err error) codes.Code {
	var ve *verify.Error
	switch {
	case errors.Is(err, errEvidenceTimeout):
		return codes.DeadlineExceeded
	case errors.Is(err, errStreamClosed), errors.Is(err, wire.ErrMalformed), errors.Is(err, wire.ErrTooLarge), errors.Is(err, wire.ErrVersion):
		return codes.InvalidArgument
	case errors.As(err, &ve):
		switch {
		case ve.Reason == nodes.ReasonStoreUnavailable:
			return codes.Unavailable
		case ve.Reason == nodes.ReasonStore:
			return codes.Internal
		case strings.HasSuffix(string(ve.Reason), "_malformed"):
			return codes.InvalidArgument
		}
		return codes.PermissionDenied
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	}
	// A status from the stream (Canceled, DeadlineExceeded, ...) keeps its code.
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		return s.Code()
	}
	return codes.Internal
}

// Reason names an attestation error for the log and the status message.
func Reason(err error) verify.Reason {
	var ve *verify.Error
	switch {
	case errors.As(err, &ve):
		return ve.Reason
	case errors.Is(err, errEvidenceTimeout):
		return ReasonEvidenceTimeout
	case errors.Is(err, errStreamClosed):
		return ReasonStreamClosed
	case errors.Is(err, wire.ErrVersion):
		return ReasonVersionUnsupported
	case errors.Is(err, wire.ErrTooLarge):
		return ReasonTooLarge
	case errors.Is(err, wire.ErrMalformed):
		return ReasonMalformed
	}
	switch Code(err) {
	case codes.Canceled:
		return ReasonCanceled
	case codes.DeadlineExceeded:
		return ReasonDeadline
	}
	return ReasonInternal
}
