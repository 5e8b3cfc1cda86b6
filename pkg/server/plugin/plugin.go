// Package plugin is the SPIRE server NodeAttestor shell around package
// session: it moves the attestation stream's bytes, and maps rejections to
// gRPC codes (InvalidArgument for malformed input, PermissionDenied for
// failed verification) with a reason a person can act on.
package plugin

import (
	"context"
	"errors"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
	nodeattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/nodeattestor/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tpmid/tpmid/pkg/common/pluginconf"
	"github.com/tpmid/tpmid/pkg/common/wire"
	"github.com/tpmid/tpmid/pkg/server/session"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// Plugin implements the server NodeAttestor and Config services.
type Plugin struct {
	nodeattestorv1.UnimplementedNodeAttestorServer
	configv1.UnimplementedConfigServer

	mu     sync.RWMutex
	policy *session.Policy
	log    hclog.Logger
}

// New returns an unconfigured plugin.
func New() *Plugin { return &Plugin{log: hclog.NewNullLogger()} }

// SetLogger is called by the plugin framework.
func (p *Plugin) SetLogger(l hclog.Logger) { p.log = l }

// Configure parses and installs the configuration atomically.
func (p *Plugin) Configure(_ context.Context, req *configv1.ConfigureRequest) (*configv1.ConfigureResponse, error) {
	policy, err := buildPolicy(req.GetCoreConfiguration().GetTrustDomain(), req.GetHclConfiguration())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "invalid configuration: %v", err)
	}
	p.mu.Lock()
	p.policy = policy
	p.mu.Unlock()
	return &configv1.ConfigureResponse{}, nil
}

// Validate reports every configuration error at once, without installing.
func (p *Plugin) Validate(_ context.Context, req *configv1.ValidateRequest) (*configv1.ValidateResponse, error) {
	_, err := buildPolicy(req.GetCoreConfiguration().GetTrustDomain(), req.GetHclConfiguration())
	if err != nil {
		return &configv1.ValidateResponse{Valid: false, Notes: pluginconf.Notes(err)}, nil
	}
	return &configv1.ValidateResponse{Valid: true}, nil
}

// Attest runs one attestation: hello -> challenge -> evidence -> attributes.
func (p *Plugin) Attest(stream nodeattestorv1.NodeAttestor_AttestServer) error {
	p.mu.RLock()
	policy := p.policy
	p.mu.RUnlock()
	if policy == nil {
		return status.Error(codes.FailedPrecondition, "not configured")
	}

	req, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := req.GetPayload()
	if len(hello) == 0 {
		return status.Error(codes.InvalidArgument, "missing attestation payload (hello)")
	}
	sess, challenge, err := session.Start(policy, hello)
	if err != nil {
		return p.rejected(err)
	}
	if err := stream.Send(&nodeattestorv1.AttestResponse{
		Response: &nodeattestorv1.AttestResponse_Challenge{Challenge: challenge},
	}); err != nil {
		return err
	}

	req, err = stream.Recv()
	if err != nil {
		return err
	}
	result, err := sess.Finish(req.GetChallengeResponse())
	if err != nil {
		return p.rejected(err)
	}
	p.log.Info("Agent attested", "agent_id", result.AgentID.String(), "ek_hash", result.Facts.EKHash)
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

// rejected logs a rejection and turns it into a gRPC status.
func (p *Plugin) rejected(err error) error {
	code := Code(err)
	reason := "internal"
	var ve *verify.Error
	if errors.As(err, &ve) {
		reason = string(ve.Reason)
	} else if code == codes.InvalidArgument {
		reason = "malformed"
	}
	p.log.Warn("Attestation refused", "reason", reason, "error", err.Error())
	return status.Errorf(code, "tpmid: attestation refused (%s): %v", reason, err)
}

// Code maps a session error to its gRPC code.
func Code(err error) codes.Code {
	var ve *verify.Error
	switch {
	case errors.Is(err, wire.ErrMalformed), errors.Is(err, wire.ErrTooLarge), errors.Is(err, wire.ErrVersion):
		return codes.InvalidArgument
	case errors.As(err, &ve):
		if strings.HasSuffix(string(ve.Reason), "_malformed") {
			return codes.InvalidArgument
		}
		return codes.PermissionDenied
	}
	return codes.Internal
}
