// Package plugin is the SPIRE agent NodeAttestor shell around package agent.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	nodeattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/nodeattestor/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tpmid/tpmid/internal/version"
	"github.com/tpmid/tpmid/pkg/agent"
	"github.com/tpmid/tpmid/pkg/common/boundedfile"
	"github.com/tpmid/tpmid/pkg/common/eventlog"
	"github.com/tpmid/tpmid/pkg/common/pluginconf"
	"github.com/tpmid/tpmid/pkg/common/tpm"
)

// Config is the agent plugin's plugin_data.
type Config struct {
	// TPMDevice: a device path (default: autodetect /dev/tpmrm0, then
	// /dev/tpm0), tcp://host:port or unix:///path for swtpm.
	TPMDevice string `hcl:"tpm_device"`
	// EKAlgorithm: rsa (= rsa2048), rsa3072, rsa4096, ecc (= p256), p384,
	// p521, or empty for the RSA-2048 EK when it has a certificate
	// (spire-tpm-plugin's EK), else the ECC P-256 EK with one, else any
	// other EK with one, else the RSA-2048 EK without certificate.
	EKAlgorithm string `hcl:"ek_algorithm"`
	// AKAlgorithm: ecdsa (= p256, default), p384, rsa (= rsa2048) or
	// rsa3072.
	AKAlgorithm string `hcl:"ak_algorithm"`
	// EventLogPath defaults to the kernel's binary_bios_measurements.
	EventLogPath string `hcl:"event_log_path"`
	// DataDir keeps the TPM-wrapped AK between attestations.
	DataDir string `hcl:"data_dir"`
	// EKCertificatePath: a DER or PEM EK certificate for TPMs without one
	// in NV.
	EKCertificatePath string `hcl:"ek_certificate_path"`
	// Hostname is the name the agent claims (enrollment = "tofu" binds it);
	// default the machine's hostname. The server never believes it under
	// enrollment = "required".
	Hostname string `hcl:"hostname"`
}

// Plugin implements the agent NodeAttestor and Config services.
type Plugin struct {
	nodeattestorv1.UnimplementedNodeAttestorServer
	configv1.UnimplementedConfigServer

	mu  sync.RWMutex
	cfg *agent.Config
	log hclog.Logger
}

// New returns an unconfigured plugin.
func New() *Plugin { return &Plugin{log: hclog.NewNullLogger()} }

// SetLogger is called by the plugin framework.
func (p *Plugin) SetLogger(l hclog.Logger) { p.log = l }

func buildConfig(hclText string) (*agent.Config, error) {
	var c Config
	unknown, err := pluginconf.Decode(hclText, &c)
	if err != nil {
		return nil, err
	}
	errs := unknown
	if err := tpm.ParseDevice(c.TPMDevice); err != nil {
		errs = append(errs, fmt.Errorf("tpm_device: %w", err))
	}
	// The in-process simulator forgets its state with the process: as an
	// agent's TPM it would prove nothing.
	if c.TPMDevice == "simulator" {
		errs = append(errs, errors.New(`tpm_device: "simulator" is for tests only`))
	}
	if !tpm.EKAlg(c.EKAlgorithm).Valid() {
		errs = append(errs, fmt.Errorf("ek_algorithm %q is not one of %v (or empty)", c.EKAlgorithm, tpm.EKAlgs))
	}
	if c.AKAlgorithm != "" && !slices.Contains(tpm.AKAlgs, tpm.AKAlg(c.AKAlgorithm)) {
		errs = append(errs, fmt.Errorf("ak_algorithm %q is not one of %v (or empty)", c.AKAlgorithm, tpm.AKAlgs))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	host := c.Hostname
	if host == "" {
		host, _ = os.Hostname()
	}
	if len(host) > 253 {
		return nil, fmt.Errorf("hostname is %d bytes, limit 253", len(host))
	}
	return &agent.Config{
		TPM:               tpm.Config{Device: c.TPMDevice, EventLogPath: c.EventLogPath},
		EKAlgorithm:       tpm.EKAlg(c.EKAlgorithm),
		AKAlgorithm:       tpm.AKAlg(c.AKAlgorithm),
		DataDir:           c.DataDir,
		EKCertificatePath: c.EKCertificatePath,
		Hostname:          host,
	}, nil
}

// checkTimeout bounds how long Configure waits for the TPM to answer.
const checkTimeout = 30 * time.Second

// Configure installs the configuration after checking that the TPM answers
// (TPM2_GetCapability) and that the event log is readable, so spire-agent
// refuses to start on a missing device, an unreachable swtpm address or an
// unreadable event_log_path instead of retrying attestation forever.
func (p *Plugin) Configure(ctx context.Context, req *configv1.ConfigureRequest) (*configv1.ConfigureResponse, error) {
	p.log.Info("Configuring", "plugin", "tpmid-agent-plugin", "version", version.Short())
	cfg, err := buildConfig(req.GetHclConfiguration())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "invalid configuration: %v", err)
	}
	if err := checkTPM(ctx, cfg.TPM); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "%v", err)
	}
	if err := p.checkEventLog(cfg.TPM.EventLogPath); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "%v", err)
	}
	p.mu.Lock()
	p.cfg = cfg
	p.mu.Unlock()
	return &configv1.ConfigureResponse{}, nil
}

// deviceName names the configured TPM for messages.
func deviceName(dev string) string {
	if dev == "" {
		return "tpm_device (autodetected /dev/tpmrm0 or /dev/tpm0)"
	}
	return fmt.Sprintf("tpm_device %q", dev)
}

// checkTPM opens the TPM and sends one TPM2_GetCapability, bounded by ctx
// and checkTimeout (a socket that accepts but never answers must not hang
// Configure).
func checkTPM(ctx context.Context, cfg tpm.Config) error {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		t, err := tpm.Open(cfg)
		if err == nil {
			err = t.Check()
			t.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("%s: the TPM cannot be used: %v", deviceName(cfg.Device), err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: the TPM did not answer TPM2_GetCapability: %v", deviceName(cfg.Device), ctx.Err())
	}
}

// checkEventLog reads the event log: a configured event_log_path must be
// readable and a TCG event log; the kernel's default is read when it
// exists, and a failure there is only a warning, because the agent cannot
// know whether the server requires the log (require_event_log).
func (p *Plugin) checkEventLog(path string) error {
	configured := path != ""
	if !configured {
		path = tpm.DefaultEventLogPath
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return nil
		}
	}
	err := readEventLog(path)
	switch {
	case err == nil:
		return nil
	case configured:
		return fmt.Errorf("event_log_path %q: %v", path, err)
	}
	p.log.Warn("The firmware event log is not readable; servers with require_event_log (the default) will refuse this agent",
		"event_log_path", path, "error", err.Error())
	return nil
}

// readEventLog reads and parses a binary TCG event log, bounded as the
// agent reads it when attesting.
func readEventLog(path string) error {
	b, err := boundedfile.Read(path, tpm.DefaultMaxEventLog)
	if err != nil {
		return err
	}
	if _, err := eventlog.Parse(b); err != nil {
		return fmt.Errorf("not a TCG binary event log: %v", err)
	}
	return nil
}

// Validate reports every configuration error at once. It checks the
// configuration only: the TPM and the event log are checked by Configure.
func (p *Plugin) Validate(_ context.Context, req *configv1.ValidateRequest) (*configv1.ValidateResponse, error) {
	if _, err := buildConfig(req.GetHclConfiguration()); err != nil {
		return &configv1.ValidateResponse{Valid: false, Notes: pluginconf.Notes(err)}, nil
	}
	return &configv1.ValidateResponse{Valid: true}, nil
}

// AidAttestation sends the hello, answers the challenge with evidence.
func (p *Plugin) AidAttestation(stream nodeattestorv1.NodeAttestor_AidAttestationServer) error {
	p.mu.RLock()
	cfg := p.cfg
	p.mu.RUnlock()
	if cfg == nil {
		return status.Error(codes.FailedPrecondition, "not configured")
	}
	start := time.Now()
	sess, hello, err := agent.BeginContext(stream.Context(), *cfg)
	if err != nil {
		return status.Errorf(codes.Internal, "tpmid: preparing attestation: %v", err)
	}
	// busy is the plugin's own time (TPM work and encoding), without the
	// waits for the server: what the fast path saves.
	var busy time.Duration
	mark := start
	defer func() {
		p.log.Debug("TPM session done", "tpm_commands", sess.Commands(), "tpm_command_codes", sess.CommandCodes(),
			"ak_certificate_presented", sess.FastPath(), "plugin_busy_ms", fmt.Sprintf("%.1f", float64(busy.Microseconds())/1000))
		if err := sess.Close(); err != nil {
			p.log.Warn("Closing the TPM session", "error", err.Error())
		}
	}()
	busy += time.Since(mark)
	if err := stream.Send(&nodeattestorv1.PayloadOrChallengeResponse{
		Data: &nodeattestorv1.PayloadOrChallengeResponse_Payload{Payload: hello},
	}); err != nil {
		return err
	}
	// The server decides the number of rounds: a challenge, and with
	// tpmid's CA a delivery of the AK certificate after it.
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		mark = time.Now()
		answer, err := sess.Next(msg.GetChallenge())
		busy += time.Since(mark)
		if err != nil {
			return status.Errorf(codes.Internal, "tpmid: answering the server: %v", err)
		}
		if err := stream.Send(&nodeattestorv1.PayloadOrChallengeResponse{
			Data: &nodeattestorv1.PayloadOrChallengeResponse_ChallengeResponse{ChallengeResponse: answer},
		}); err != nil {
			return err
		}
	}
}
