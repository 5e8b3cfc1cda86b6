package plugin

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tpmid/tpmid/pkg/common/eventlog"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/common/tpm"
	"github.com/tpmid/tpmid/pkg/common/wire"
)

// TestEvidenceBoundsFit: the largest evidence an honest agent can send (the
// largest event log either side reads, eight quotes of the largest size,
// every PCR of every bank, the proof) fits the default evidence bound, and
// that bound leaves room under what gRPC carries for tpmid to refuse one
// byte more itself.
func TestEvidenceBoundsFit(t *testing.T) {
	if tpm.DefaultMaxEventLog != eventlog.DefaultLimits.MaxLogSize {
		t.Errorf("the agent reads event logs up to %d bytes, the server parses up to %d", tpm.DefaultMaxEventLog, eventlog.DefaultLimits.MaxLogSize)
	}
	ev := wire.Evidence{
		Version:         wire.Version,
		PCRs:            map[string]map[int][]byte{},
		EventLog:        bytes.Repeat([]byte{0xff}, eventlog.DefaultLimits.MaxLogSize),
		ActivationProof: make([]byte, 32),
	}
	for range 8 {
		ev.Quotes = append(ev.Quotes, wire.Quote{Bank: "sha512", Attest: make([]byte, 2<<10), Signature: make([]byte, 1<<10)})
	}
	for _, a := range []pcrs.Alg{pcrs.SHA1, pcrs.SHA256, pcrs.SHA384, pcrs.SHA512} {
		bank := map[int][]byte{}
		for i := 0; i <= pcrs.MaxIndex; i++ {
			bank[i] = bytes.Repeat([]byte{0xff}, a.Size())
		}
		ev.PCRs[a.String()] = bank
	}
	b, err := wire.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > wire.DefaultMaxEvidence {
		t.Errorf("the largest honest evidence is %d bytes, more than the default bound %d", len(b), wire.DefaultMaxEvidence)
	}
	if wire.DefaultMaxEvidence >= wire.MaxTransported {
		t.Errorf("default evidence bound %d leaves no room under the transport limit %d", wire.DefaultMaxEvidence, wire.MaxTransported)
	}
	t.Logf("largest honest evidence %d bytes; default bound %d; transport limit %d", len(b), wire.DefaultMaxEvidence, wire.MaxTransported)
}

func TestBuildConfigLimits(t *testing.T) {
	bundle := writeBundle(t)
	base := fmt.Sprintf("ek_ca_bundle = %q\n", bundle)
	for _, tc := range []struct {
		name        string
		hcl         string
		maxEvidence int
		maxHello    int
		timeout     time.Duration
		errs        []string
	}{
		{name: "defaults", maxEvidence: wire.DefaultMaxEvidence, maxHello: wire.DefaultMaxHello, timeout: 60 * time.Second},
		{
			name: "at the ceilings", hcl: fmt.Sprintf("max_evidence_size = %d\nmax_hello_size = %d\nevidence_timeout = \"2m30s\"", wire.MaxTransported, 1<<20),
			maxEvidence: wire.MaxTransported, maxHello: 1 << 20, timeout: 150 * time.Second,
		},
		{
			name: "over the ceilings", hcl: fmt.Sprintf("max_evidence_size = %d\nmax_hello_size = %d", wire.MaxTransported+1, 1<<20+1),
			errs: []string{
				fmt.Sprintf("max_evidence_size %d is more than the %d bytes a gRPC message can carry", wire.MaxTransported+1, wire.MaxTransported),
				fmt.Sprintf("max_hello_size %d is more than %d bytes", 1<<20+1, 1<<20),
			},
		},
		{name: "old 4 MiB default", hcl: "max_evidence_size = 4194304", errs: []string{"max_evidence_size 4194304"}},
		{name: "timeout not a duration", hcl: `evidence_timeout = "60"`, errs: []string{"evidence_timeout: time: missing unit"}},
		{name: "timeout zero", hcl: `evidence_timeout = "0s"`, errs: []string{"evidence_timeout 0s must be positive"}},
		{name: "timeout negative", hcl: `evidence_timeout = "-1s"`, errs: []string{"evidence_timeout -1s must be positive"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := buildConfig("example.org", base+tc.hcl)
			if len(tc.errs) > 0 {
				if err == nil {
					t.Fatal("config accepted")
				}
				for _, want := range tc.errs {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not report %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.session.MaxEvidence != tc.maxEvidence || s.session.MaxHello != tc.maxHello || s.evidenceTimeout != tc.timeout {
				t.Errorf("got evidence %d, hello %d, timeout %s; want %d, %d, %s",
					s.session.MaxEvidence, s.session.MaxHello, s.evidenceTimeout, tc.maxEvidence, tc.maxHello, tc.timeout)
			}
		})
	}
}

// TestCodeAndReason pins the boundary mapping of the errors the shell
// itself makes (the session's are covered by the tests that drive it).
func TestCodeAndReason(t *testing.T) {
	for _, tc := range []struct {
		err    error
		code   codes.Code
		reason string
	}{
		{streamEnded(io.EOF, "evidence"), codes.InvalidArgument, "stream_closed"},
		{streamEnded(status.Error(codes.Canceled, "context canceled"), "evidence"), codes.Canceled, "canceled"},
		{streamEnded(status.Error(codes.DeadlineExceeded, "context deadline exceeded"), "hello"), codes.DeadlineExceeded, "deadline"},
		{fmt.Errorf("waiting for the evidence: %w", fmt.Errorf("%w: x", errEvidenceTimeout)), codes.DeadlineExceeded, "evidence_timeout"},
		{fmt.Errorf("sending the challenge: %w", status.Error(codes.Unavailable, "transport is closing")), codes.Unavailable, "internal"},
		{fmt.Errorf("%w: 2", wire.ErrVersion), codes.InvalidArgument, "version_unsupported"},
		{fmt.Errorf("%w", wire.ErrTooLarge), codes.InvalidArgument, "too_large"},
		{fmt.Errorf("%w: x", wire.ErrMalformed), codes.InvalidArgument, "malformed"},
		{errors.New("something else"), codes.Internal, "internal"},
	} {
		if got := Code(tc.err); got != tc.code {
			t.Errorf("Code(%v) = %s, want %s", tc.err, got, tc.code)
		}
		if got := string(Reason(tc.err)); got != tc.reason {
			t.Errorf("Reason(%v) = %s, want %s", tc.err, got, tc.reason)
		}
	}
}
