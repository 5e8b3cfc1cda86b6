package session_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"io"
	"math/big"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	legacy "github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/legacy/tpm2/credactivation"

	"github.com/tpmid/tpmid/internal/realdata"
	"github.com/tpmid/tpmid/internal/testmachine"
	"github.com/tpmid/tpmid/internal/tpmtest"
	"github.com/tpmid/tpmid/pkg/agent"
	"github.com/tpmid/tpmid/pkg/common/eventlog"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/common/tpm"
	"github.com/tpmid/tpmid/pkg/common/wire"
	"github.com/tpmid/tpmid/pkg/server/appraise"
	"github.com/tpmid/tpmid/pkg/server/session"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// The server benchmarks replay one recorded attestation: the agent's hello
// and evidence are recorded once on the simulator, and the server runs with
// a deterministic randomness source (the same seed every session), so it
// draws the same nonce and credential seed and makes the same challenge
// byte for byte, which the recorded quote and activation proof answer.
// What is timed is the server's work alone: hello -> challenge -> verdict.

// benchLog is one event log the benchmarks replay, "booted" into the
// simulator's PCRs 0-7 in one bank.
type benchLog struct {
	name string
	rel  string // path under the real evidence folder; "" is testmachine's own boot
	bank pcrs.Alg
}

var benchLogs = []benchLog{
	{"log=677B", "", pcrs.SHA256},
	{"log=45KB-ubuntu2404", "eventlogs/go-tpm-tools/ubuntu-2404-amd-sevsnp.bin", pcrs.SHA256},
	{"log=73KB-optionrom", "eventlogs/go-attestation/option_rom_eventlog.bin", pcrs.SHA1},
}

// seededRand is the server's randomness in a replay: ChaCha8 from a fixed
// seed, new for every session.
func seededRand() io.Reader { return rand.NewChaCha8([32]byte{'t', 'p', 'm', 'i', 'd'}) }

// realBoot extends the simulator's PCRs 0-7 in bank with the digests of the
// log's extending records, as the firmware that wrote it did.
func realBoot(log []byte, bank pcrs.Alg) testmachine.BootFunc {
	return func(t testing.TB, tp *tpm.TPM, logPath string) []byte {
		t.Helper()
		l, err := eventlog.Parse(log)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range l.Events {
			d, ok := e.Digests[bank]
			if e.Type == eventlog.EvNoAction || e.PCR > 7 || !ok {
				continue
			}
			if err := tpmtest.Extend(tp, int(e.PCR), map[pcrs.Alg][]byte{bank: d}); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(logPath, log, 0o600); err != nil {
			t.Fatal(err)
		}
		return nil
	}
}

// recording is one agent's answers and what the floor needs.
type recording struct {
	cfg               *session.Config
	hello, evidence   []byte
	challenge, secret []byte
	log               []byte
	bank              pcrs.Alg
	ekCert, ekRoot    *x509.Certificate
	akName            []byte
	ak                *ecdsa.PublicKey
	attest            []byte
	r, s              *big.Int
	extends           int           // records that extend a PCR (every bank replays them)
	patched           int           // replays whose challenge differed from the recorded one
	untimed           time.Duration // wall and thread CPU time of the recomputed proofs
	untimedCPU        time.Duration
}

func record(b *testing.B, bl benchLog) *recording {
	b.Helper()
	opt := testmachine.Options{}
	var log []byte
	if bl.rel != "" {
		var err error
		if log, err = os.ReadFile(realdata.Path(b, bl.rel)); err != nil {
			b.Skipf("real event log: %v", err)
		}
		opt.Boot = realBoot(log, bl.bank)
	}
	m := testmachine.NewWith(b, opt)
	if log == nil {
		var err error
		if log, err = os.ReadFile(m.LogPath); err != nil {
			b.Fatal(err)
		}
	}
	p := (&fixture{Machine: m}).policy(b, appraise.EKPolicyCert, m.TrustDir)
	p.Selections = []wire.Selection{{Bank: bl.bank.String(), PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7}}}
	p.Rand = seededRand()
	as, hello, err := agent.BeginWith(m.TPM, agent.Config{EKCertificatePath: m.EKCertPath})
	if err != nil {
		b.Fatal(err)
	}
	defer as.Close()
	ss, challenge, err := startSession(p, hello)
	if err != nil {
		b.Fatal(err)
	}
	evidence, err := as.Respond(challenge)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := finishSession(ss, evidence); err != nil {
		b.Fatalf("recorded attestation refused: %v", err)
	}
	rec := &recording{cfg: p, hello: hello, evidence: evidence, challenge: challenge, log: log, bank: bl.bank}
	// The activation secret is the first draw from the server's randomness;
	// check it, so that a replay whose challenge differs can answer it.
	rec.secret = make([]byte, 32)
	if _, err := io.ReadFull(seededRand(), rec.secret); err != nil {
		b.Fatal(err)
	}
	ev, err := wire.DecodeEvidence(evidence, 0)
	if err != nil {
		b.Fatal(err)
	}
	if !wire.CheckActivationProof(ev.ActivationProof, rec.secret, hello, challenge) {
		b.Fatal("the activation secret is not the first 32 bytes of Config.Rand: the replay cannot answer the challenge")
	}
	rec.floorInputs(b, m)
	return rec
}

// floorInputs prepares, untimed, what the floor's primitives work on.
func (r *recording) floorInputs(b *testing.B, m *testmachine.Machine) {
	b.Helper()
	var err error
	if r.ekCert, err = x509.ParseCertificate(m.EKCertDER); err != nil {
		b.Fatal(err)
	}
	rootPEM, err := os.ReadFile(filepath.Join(m.TrustDir, "root.pem"))
	if err != nil {
		b.Fatal(err)
	}
	blk, _ := pem.Decode(rootPEM)
	if r.ekRoot, err = x509.ParseCertificate(blk.Bytes); err != nil {
		b.Fatal(err)
	}
	h, err := wire.DecodeHello(r.hello, 0)
	if err != nil {
		b.Fatal(err)
	}
	ak, err := verify.ParseAKPublic(h.AK.Public)
	if err != nil {
		b.Fatal(err)
	}
	r.akName = ak.Name
	var ok bool
	if r.ak, ok = ak.Public.(*ecdsa.PublicKey); !ok {
		b.Fatalf("AK is %T; the floor assumes ECDSA", ak.Public)
	}
	ev, err := wire.DecodeEvidence(r.evidence, 0)
	if err != nil {
		b.Fatal(err)
	}
	q := ev.Quotes[0]
	r.attest = q.Attest
	sig, err := legacy.DecodeSignature(bytes.NewBuffer(q.Signature))
	if err != nil || sig.ECC == nil {
		b.Fatalf("quote signature: %v", err)
	}
	r.r, r.s = sig.ECC.R, sig.ECC.S
	l, err := eventlog.Parse(r.log)
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range l.Events {
		if e.Type != eventlog.EvNoAction && e.PCR <= pcrs.MaxIndex {
			r.extends++
		}
	}
}

// verifyOnce is the server's whole work for one attestation. A server
// whose credential encryption draws randomness outside Config.Rand makes
// another challenge each time; then the recorded activation proof is
// recomputed for it, untimed (the secret is the same).
func (r *recording) verifyOnce(b *testing.B) {
	r.cfg.Rand = seededRand()
	s := session.New(r.cfg)
	ctx := context.Background()
	challenge, _, err := s.Next(ctx, r.hello)
	if err != nil {
		b.Fatal(err)
	}
	evidence := r.evidence
	if !bytes.Equal(challenge, r.challenge) {
		b.StopTimer()
		start := time.Now()
		startCPU, _ := threadCPU()
		ev, err := wire.DecodeEvidence(r.evidence, 0)
		if err != nil {
			b.Fatal(err)
		}
		ev.ActivationProof = wire.ActivationProof(r.secret, r.hello, challenge)
		if evidence, err = wire.EncodeEvidence(ev); err != nil {
			b.Fatal(err)
		}
		r.patched++
		endCPU, _ := threadCPU()
		r.untimed += time.Since(start)
		r.untimedCPU += endCPU - startCPU
		b.StartTimer()
	}
	if _, res, err := s.Next(ctx, evidence); err != nil || res == nil {
		b.Fatalf("replayed attestation refused: %v", err)
	}
}

// floorOnce is the crypto the server cannot avoid for the same inputs: the
// EK certificate's signature, TPM2_MakeCredential for (EK, AK name), the
// quote's ECDSA verification, one pass of the bank's hash over the whole log
// plus one extend per extending record, and the activation proof's HMAC over
// the transcript.
func (r *recording) floorOnce(b *testing.B) {
	if err := r.ekCert.CheckSignatureFrom(r.ekRoot); err != nil {
		b.Fatal(err)
	}
	if _, _, err := credactivation.Generate(&legacy.HashValue{Alg: legacy.AlgSHA256, Value: r.akName[2:]}, r.ekCert.PublicKey, 16, r.secret); err != nil {
		b.Fatal(err)
	}
	d := sha256.Sum256(r.attest)
	if !ecdsa.Verify(r.ak, d[:], r.r, r.s) {
		b.Fatal("quote signature does not verify")
	}
	h, _ := r.bank.New()
	h.Write(r.log)
	pcr := h.Sum(nil)
	ext, _ := r.bank.New()
	for range r.extends {
		ext.Reset()
		ext.Write(pcr)
		ext.Write(pcr)
		pcr = ext.Sum(pcr[:0])
	}
	m := hmac.New(sha256.New, r.secret)
	m.Write(wire.TranscriptHash(r.hello, r.challenge))
	_ = m.Sum(nil)
}

// BenchmarkServerVerify times the server's verification of one recorded
// attestation per log: hello (EK certificate, AK, MakeCredential) and
// evidence (activation proof, quote, event log replay, Secure Boot).
// log-bytes is reported so that B/op beyond the log can be read.
func BenchmarkServerVerify(b *testing.B) {
	for _, bl := range benchLogs {
		b.Run(bl.name, func(b *testing.B) {
			r := record(b, bl)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				r.verifyOnce(b)
			}
			if r.patched > 0 {
				b.Logf("%d of the replays made another challenge than the recorded one (credential randomness outside Config.Rand); their proofs were recomputed untimed", r.patched)
			}
			b.ReportMetric(float64(len(r.log)), "log-bytes")
		})
	}
}

// BenchmarkServerFloor times the crypto floor of the same attestations
// (floorOnce), in the same run as BenchmarkServerVerify.
func BenchmarkServerFloor(b *testing.B) {
	for _, bl := range benchLogs {
		b.Run(bl.name, func(b *testing.B) {
			r := record(b, bl)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				r.floorOnce(b)
			}
			b.ReportMetric(float64(len(r.log)), "log-bytes")
		})
	}
}

// BenchmarkServerRatio interleaves the two: each iteration verifies one
// attestation and then runs its floor, timing each, so that both see the
// same load on a shared machine. It reports their wall times and ratio,
// and (on Linux) the same in CPU time of the benchmark's thread, which
// other processes on the machine do not inflate; GC work done by
// background workers on other threads is not in it.
func BenchmarkServerRatio(b *testing.B) {
	for _, bl := range benchLogs {
		b.Run(bl.name, func(b *testing.B) {
			r := record(b, bl)
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var verify, floor, verifyCPU, floorCPU time.Duration
			_, cpuOK := threadCPU()
			b.ResetTimer()
			for b.Loop() {
				u0, uc0 := r.untimed, r.untimedCPU
				c0, _ := threadCPU()
				t0 := time.Now()
				r.verifyOnce(b)
				t1 := time.Now()
				c1, _ := threadCPU()
				r.floorOnce(b)
				t2 := time.Now()
				c2, _ := threadCPU()
				verify += t1.Sub(t0) - (r.untimed - u0)
				verifyCPU += c1 - c0 - (r.untimedCPU - uc0)
				floor += t2.Sub(t1)
				floorCPU += c2 - c1
			}
			n := float64(b.N)
			b.ReportMetric(float64(verify.Nanoseconds())/n, "verify-ns/op")
			b.ReportMetric(float64(floor.Nanoseconds())/n, "floor-ns/op")
			b.ReportMetric(float64(verify)/float64(floor), "ratio")
			if cpuOK {
				b.ReportMetric(float64(verifyCPU.Nanoseconds())/n, "verify-cpu-ns/op")
				b.ReportMetric(float64(floorCPU.Nanoseconds())/n, "floor-cpu-ns/op")
				b.ReportMetric(float64(verifyCPU)/float64(floorCPU), "cpu-ratio")
			}
			b.ReportMetric(float64(len(r.log)), "log-bytes")
		})
	}
}
