package plugin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	servernav1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/nodeattestor/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tpmid/tpmid/internal/testmachine"
	"github.com/tpmid/tpmid/pkg/agent"
	"github.com/tpmid/tpmid/pkg/common/wire"
)

// These tests play a hand-made agent against the server plugin served over
// the plugin SDK's real gRPC transport: the agent's TPM is the in-process
// simulator (so these tests must not run in parallel), its messages are
// real, and the test decides when to send what, or not to.

// hostile is one agent machine and the server plugin it talks to.
type hostile struct {
	m      *testmachine.Machine
	cfg    agent.Config
	server *servernav1.NodeAttestorPluginClient
	log    *syncBuffer
}

func newHostile(t *testing.T, m *testmachine.Machine, extraHCL string) *hostile {
	t.Helper()
	log := &syncBuffer{}
	logger := hclog.New(&hclog.LoggerOptions{Output: log, Level: hclog.Info, JSONFormat: true})
	return &hostile{
		m:      m,
		cfg:    agent.Config{EKCertificatePath: m.EKCertPath, Hostname: "node-1"},
		server: serveServer(t, fmt.Sprintf("ek_ca_bundle = %q\n%s", m.TrustDir, extraHCL), logger),
		log:    log,
	}
}

// attempt is one attestation stream in progress.
type attempt struct {
	agent  *agent.Session
	hello  []byte
	stream servernav1.NodeAttestor_AttestClient
	cancel context.CancelFunc
}

// open begins an agent session on the machine's TPM and opens a stream to
// the server, without sending anything.
func (h *hostile) open(t *testing.T) *attempt {
	t.Helper()
	as, hello, err := agent.BeginWith(h.m.TPM, h.cfg)
	if err != nil {
		t.Fatalf("agent begin: %v", err)
	}
	t.Cleanup(func() { as.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ss, err := h.server.Attest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &attempt{agent: as, hello: hello, stream: ss, cancel: cancel}
}

func (a *attempt) sendHello(t *testing.T, hello []byte) {
	t.Helper()
	if err := a.stream.Send(&servernav1.AttestRequest{Request: &servernav1.AttestRequest_Payload{Payload: hello}}); err != nil {
		t.Fatalf("sending hello: %v", err)
	}
}

// challenge sends the agent's hello and returns the server's challenge.
func (a *attempt) challenge(t *testing.T) []byte {
	t.Helper()
	a.sendHello(t, a.hello)
	resp, err := a.stream.Recv()
	if err != nil {
		t.Fatalf("no challenge: %v", err)
	}
	if resp.GetChallenge() == nil {
		t.Fatalf("server answered the hello with %v, want a challenge", resp)
	}
	return resp.GetChallenge()
}

// evidence answers the challenge with the agent's real evidence.
func (a *attempt) evidence(t *testing.T, challenge []byte) []byte {
	t.Helper()
	ev, err := a.agent.Respond(challenge)
	if err != nil {
		t.Fatalf("agent respond: %v", err)
	}
	return ev
}

// verdict sends the evidence and returns the server's answer.
func (a *attempt) verdict(t *testing.T, evidence []byte) (*servernav1.AgentAttributes, error) {
	t.Helper()
	if err := a.stream.Send(&servernav1.AttestRequest{Request: &servernav1.AttestRequest_ChallengeResponse{ChallengeResponse: evidence}}); err != nil {
		return nil, err
	}
	return a.end()
}

// end reads the server's last message: the attributes or the refusal.
func (a *attempt) end() (*servernav1.AgentAttributes, error) {
	resp, err := a.stream.Recv()
	if err != nil {
		return nil, err
	}
	if attrs := resp.GetAgentAttributes(); attrs != nil {
		return attrs, nil
	}
	return nil, fmt.Errorf("unexpected message %v", resp)
}

// padded appends JSON whitespace to evidence up to size bytes: the same
// evidence, as large as the test wants.
// padded grows evidence to size bytes with trailing zeros. The version 2
// envelope has no room for padding, so padded evidence is judged and refused
// as malformed ("trailing data") when it gets past gRPC and the size bound.
func padded(t *testing.T, evidence []byte, size int) []byte {
	t.Helper()
	if len(evidence) > size {
		t.Fatalf("evidence is %d bytes, more than %d", len(evidence), size)
	}
	return append(bytes.Clone(evidence), make([]byte, size-len(evidence))...)
}

func wantRefusal(t *testing.T, err error, code codes.Code, fragments ...string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("err = %v, want %s", err, code)
	}
	for _, f := range fragments {
		if !strings.Contains(status.Convert(err).Message(), f) {
			t.Errorf("message %q does not say %q", status.Convert(err).Message(), f)
		}
	}
}

// TestEvidenceSizeOverGRPC: evidence up to max_evidence_size gets through
// gRPC and is judged (padded, it is refused as malformed for its trailing
// data, not for its size); one byte more is refused by tpmid with the size
// and the limit, not by gRPC. At the configurable ceiling
// (wire.MaxTransported) the last byte gRPC carries is still judged, and the
// next is gRPC's refusal: that is the transport limit the ceiling stands for.
func TestEvidenceSizeOverGRPC(t *testing.T) {
	m := testmachine.New(t)

	for _, tc := range []struct {
		name  string
		hcl   string
		limit int
		over  codes.Code
		says  []string
	}{
		{
			name: "default limit", limit: wire.DefaultMaxEvidence, over: codes.InvalidArgument,
			says: []string{"(too_large)", fmt.Sprintf("evidence too large (%d bytes, limit %d)", wire.DefaultMaxEvidence+1, wire.DefaultMaxEvidence)},
		},
		{
			name: "small configured limit", hcl: "max_evidence_size = 20000", limit: 20000, over: codes.InvalidArgument,
			says: []string{"evidence too large (20001 bytes, limit 20000)"},
		},
		{
			name: "transport ceiling", hcl: fmt.Sprintf("max_evidence_size = %d", wire.MaxTransported), limit: wire.MaxTransported,
			over: codes.ResourceExhausted, says: []string{"larger than max"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHostile(t, m, tc.hcl)

			a := h.open(t)
			_, err := a.verdict(t, padded(t, a.evidence(t, a.challenge(t)), tc.limit))
			wantRefusal(t, err, codes.InvalidArgument, "(malformed)", "trailing data")

			a = h.open(t)
			_, err = a.verdict(t, padded(t, a.evidence(t, a.challenge(t)), tc.limit+1))
			wantRefusal(t, err, tc.over, tc.says...)
		})
	}
}

// TestEvidenceTimeout: an agent that takes the challenge and never answers
// is refused when evidence_timeout passes, and the goroutine that waited
// for its evidence ends with the attestation.
func TestEvidenceTimeout(t *testing.T) {
	m := testmachine.New(t)
	h := newHostile(t, m, `evidence_timeout = "300ms"`)
	a := h.open(t)
	a.challenge(t)
	start := time.Now()
	_, err := a.end()
	wantRefusal(t, err, codes.DeadlineExceeded, "(evidence_timeout)", "no evidence within 300ms of the challenge")
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("refused after %s", d)
	}
	waitNoRecvGoroutine(t)
	h.log.wantLine(t, `"reason":"evidence_timeout"`)
}

// TestStreamEndsEarly: an agent that half-closes its stream before the
// hello, after the hello or after the challenge is told what it did not
// send (InvalidArgument, never Unknown "EOF"); one that cancels its stream
// ends the attestation as Canceled.
func TestStreamEndsEarly(t *testing.T) {
	m := testmachine.New(t)
	h := newHostile(t, m, "")

	t.Run("closed before the hello", func(t *testing.T) {
		a := h.open(t)
		if err := a.stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		_, err := a.end()
		wantRefusal(t, err, codes.InvalidArgument, "(stream_closed)", "agent closed the stream before sending its hello")
	})

	t.Run("closed after the hello", func(t *testing.T) {
		a := h.open(t)
		a.sendHello(t, a.hello)
		if err := a.stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		// The challenge was sent before the server saw the close.
		resp, err := a.stream.Recv()
		if err != nil || resp.GetChallenge() == nil {
			t.Fatalf("got %v, %v; want the challenge first", resp, err)
		}
		_, err = a.end()
		wantRefusal(t, err, codes.InvalidArgument, "(stream_closed)", "agent closed the stream before sending its evidence")
	})

	t.Run("closed after the challenge", func(t *testing.T) {
		a := h.open(t)
		a.challenge(t)
		if err := a.stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		_, err := a.end()
		wantRefusal(t, err, codes.InvalidArgument, "(stream_closed)", "agent closed the stream before sending its evidence")
		waitNoRecvGoroutine(t)
	})

	t.Run("canceled after the challenge", func(t *testing.T) {
		a := h.open(t)
		a.challenge(t)
		a.cancel()
		// The agent no longer hears the server; the server's log says
		// how the attestation ended.
		h.log.wantLine(t, `"reason":"canceled"`)
		waitNoRecvGoroutine(t)
	})
}

// TestProtocolVersion: a hello or evidence of another protocol version is
// refused with its own reason, version_unsupported.
func TestProtocolVersion(t *testing.T) {
	m := testmachine.New(t)
	h := newHostile(t, m, "")

	t.Run("hello version 3", func(t *testing.T) {
		a := h.open(t)
		var hello wire.Hello
		if err := json.Unmarshal(a.hello, &hello); err != nil {
			t.Fatal(err)
		}
		hello.Version = 3
		raw, _ := wire.Encode(hello)
		a.sendHello(t, raw)
		_, err := a.end()
		wantRefusal(t, err, codes.InvalidArgument, "(version_unsupported)", "hello has unsupported protocol version 3")
	})

	t.Run("evidence version 3", func(t *testing.T) {
		a := h.open(t)
		ev, err := wire.DecodeEvidence(a.evidence(t, a.challenge(t)), 0)
		if err != nil {
			t.Fatal(err)
		}
		ev.Version = 3
		raw, err := wire.EncodeEvidence(ev)
		if err != nil {
			t.Fatal(err)
		}
		_, err = a.verdict(t, raw)
		wantRefusal(t, err, codes.InvalidArgument, "(version_unsupported)", "evidence has unsupported protocol version 3")
	})

	t.Run("version 1 evidence in a version 2 session", func(t *testing.T) {
		a := h.open(t)
		ev, err := wire.DecodeEvidence(a.evidence(t, a.challenge(t)), 0)
		if err != nil {
			t.Fatal(err)
		}
		ev.Version = wire.Version1
		raw, err := wire.EncodeEvidence(ev)
		if err != nil {
			t.Fatal(err)
		}
		_, err = a.verdict(t, raw)
		wantRefusal(t, err, codes.InvalidArgument, "(version_unsupported)", "in a version 2 session")
	})
}

// waitNoRecvGoroutine waits until no goroutine is left in the plugin's
// evidence wait (the plugin runs in this process under plugintest).
func waitNoRecvGoroutine(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		if !strings.Contains(stacks, "plugin.recvEvidence") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a goroutine is still waiting for evidence:\n%s", stacks)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncBuffer collects the plugin's log lines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// wantLine waits for a log line containing fragment.
func (s *syncBuffer) wantLine(t *testing.T, fragment string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(s.String(), fragment) {
		if time.Now().After(deadline) {
			t.Fatalf("the plugin never logged %s; log:\n%s", fragment, s.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
