package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	nodeattestorv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/nodeattestor/v1"
	"google.golang.org/grpc/status"

	"github.com/tpmid/tpmid/internal/softagent"
	"github.com/tpmid/tpmid/pkg/common/wire"
)

// attestTimeout bounds one attestation, so a stuck plugin fails the run
// instead of hanging it.
const attestTimeout = 60 * time.Second

// attest runs one NodeAttestor.Attest stream as spire-server relays an
// agent's: the hello as the payload, the evidence as the challenge
// response, with a CA the acknowledgement of the AK certificate delivery
// as the next one, until the plugin returns the agent's attributes. It
// returns which path the attestation took (full or fast, "+delivery" when
// the CA delivered a certificate).
func attest(ctx context.Context, na nodeattestorv1.NodeAttestorClient, a *softagent.Attester) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, attestTimeout)
	defer cancel() // ends the stream on every path
	s, err := a.Start()
	if err != nil {
		return "", err
	}
	stream, err := na.Attest(ctx)
	if err != nil {
		return "", err
	}
	if err := stream.Send(&nodeattestorv1.AttestRequest{Request: &nodeattestorv1.AttestRequest_Payload{Payload: s.Hello()}}); err != nil {
		return "", fmt.Errorf("sending the hello: %w", err)
	}
	delivered := false
	for {
		resp, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return "", errors.New("the plugin ended the stream without a verdict")
			}
			return "", err
		}
		switch r := resp.Response.(type) {
		case *nodeattestorv1.AttestResponse_Challenge:
			var reply []byte
			if wire.IsDelivery(r.Challenge) {
				reply, err = s.Deliver(r.Challenge)
				delivered = true
			} else {
				reply, err = s.Answer(r.Challenge)
			}
			if err != nil {
				return "", err
			}
			if err := stream.Send(&nodeattestorv1.AttestRequest{Request: &nodeattestorv1.AttestRequest_ChallengeResponse{ChallengeResponse: reply}}); err != nil {
				return "", fmt.Errorf("sending the answer to a challenge: %w", err)
			}
		case *nodeattestorv1.AttestResponse_AgentAttributes:
			if r.AgentAttributes.GetSpiffeId() == "" {
				return "", errors.New("admitted without a SPIFFE ID")
			}
			path := "full"
			if s.FastPath() {
				path = "fast"
			}
			if delivered {
				path += "+delivery"
			}
			return path, nil
		default:
			return "", fmt.Errorf("unexpected response %T", r)
		}
	}
}

// pool hands out attesters one at a time: like a TPM, an attester serves
// one session at a time (its quotes' clock must not go backwards).
type pool chan *softagent.Attester

func newPool(as []*softagent.Attester) pool {
	p := make(pool, len(as))
	for _, a := range as {
		p <- a
	}
	return p
}

// phase is what one measured stretch of load gave.
type phase struct {
	name        string
	concurrency int     // closed loop; 0 for open loop
	target      float64 // open loop: attestations/s offered
	ok, failed  int
	firstErr    string
	wall        time.Duration
	lat         []time.Duration // successful attestations
	harnessCPU  time.Duration
	pluginCPU   time.Duration
	machineCPU  time.Duration // every process's, this harness's and the plugin's included
	postgresCPU time.Duration // every postgres process's (whoever it serves)
	sessions    int64         // database sessions opened, when counted
	paths       map[string]int
}

// othersCPU is what the rest of the machine used meanwhile: the PostgreSQL
// server, and whatever else shares the cores.
func (p *phase) othersCPU() time.Duration {
	return max(0, p.machineCPU-p.harnessCPU-p.pluginCPU)
}

func (p *phase) rate() float64 { return float64(p.ok) / p.wall.Seconds() }

// percentile of the sorted latencies (nearest rank).
func (p *phase) percentile(q float64) time.Duration {
	if len(p.lat) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(p.lat)))) - 1
	return p.lat[max(0, min(i, len(p.lat)-1))]
}

// recorder collects outcomes from many goroutines.
type recorder struct {
	mu       sync.Mutex
	lat      []time.Duration
	failed   int
	firstErr string
	paths    map[string]int // successful attestations by path
}

func (r *recorder) add(d time.Duration, path string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		if r.paths == nil {
			r.paths = map[string]int{}
		}
		r.paths[path]++
	}
	if err != nil {
		r.failed++
		if r.firstErr == "" {
			if s, ok := status.FromError(err); ok {
				r.firstErr = s.Code().String() + ": " + s.Message()
			} else {
				r.firstErr = err.Error()
			}
		}
		return
	}
	r.lat = append(r.lat, d)
}

// measure runs load and fills in the phase's counts, latencies and the CPU
// both processes used meanwhile.
func measure(name string, pid int, load func(*recorder)) *phase {
	r := &recorder{}
	h0, p0, m0, g0 := selfCPU(), procCPU(pid), machineCPU(), commCPU("postgres")
	start := time.Now()
	load(r)
	wall := time.Since(start)
	h1, p1, m1, g1 := selfCPU(), procCPU(pid), machineCPU(), commCPU("postgres")
	slices.Sort(r.lat)
	return &phase{name: name, ok: len(r.lat), failed: r.failed, firstErr: r.firstErr, wall: wall, lat: r.lat,
		harnessCPU: h1 - h0, pluginCPU: p1 - p0, machineCPU: m1 - m0, postgresCPU: max(0, g1-g0), paths: r.paths}
}

// closedLoop keeps n attestations in flight for d: each worker starts its
// next as soon as its last ended.
func closedLoop(ctx context.Context, na nodeattestorv1.NodeAttestorClient, attesters pool, n int, d time.Duration) func(*recorder) {
	return func(r *recorder) {
		end := time.Now().Add(d)
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				for time.Now().Before(end) {
					a := <-attesters
					t := time.Now()
					path, err := attest(ctx, na, a)
					r.add(time.Since(t), path, err)
					attesters <- a
				}
			})
		}
		wg.Wait()
	}
}

// everyOnce attests every attester once with n in flight: each is a new
// host to the store.
func everyOnce(ctx context.Context, na nodeattestorv1.NodeAttestorClient, all []*softagent.Attester, n int) func(*recorder) {
	return func(r *recorder) {
		next := make(chan *softagent.Attester, len(all))
		for _, a := range all {
			next <- a
		}
		close(next)
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				for a := range next {
					t := time.Now()
					path, err := attest(ctx, na, a)
					r.add(time.Since(t), path, err)
				}
			})
		}
		wg.Wait()
	}
}

// openLoop starts attestations at a fixed rate for d, whether or not
// earlier ones have finished, and measures each from when it was due, so a
// stall shows in the latencies instead of slowing the offered load.
func openLoop(ctx context.Context, na nodeattestorv1.NodeAttestorClient, attesters pool, rate float64, d time.Duration) func(*recorder) {
	return func(r *recorder) {
		interval := time.Duration(float64(time.Second) / rate)
		start := time.Now()
		var wg sync.WaitGroup
		for i := 0; ; i++ {
			due := start.Add(time.Duration(i) * interval)
			if due.Sub(start) >= d {
				break
			}
			if w := time.Until(due); w > 0 {
				time.Sleep(w)
			}
			wg.Go(func() {
				a := <-attesters
				path, err := attest(ctx, na, a)
				r.add(time.Since(due), path, err)
				attesters <- a
			})
		}
		wg.Wait()
	}
}

// selfCPU is the user+system CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's CPU times; 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// procCPU is the user+system CPU time of process pid, from
// /proc/<pid>/stat (fields 14 and 15).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name may hold spaces
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clockTicks
}

// commCPU is the CPU time of every process named comm (the PostgreSQL
// server's backends are all "postgres"). A backend that exits during a
// phase takes its time with it, so this is a lower bound.
func commCPU(comm string) time.Duration {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	var total time.Duration
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil || strings.TrimSpace(string(b)) != comm {
			continue
		}
		total += procCPU(pid)
	}
	return total
}

// machineCPU is the busy CPU time of the whole machine, from /proc/stat's
// cpu line: everything but idle and iowait.
func machineCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest and guest_nice are already in user and nice
			break
		}
		busy += n
	}
	return time.Duration(busy) * time.Second / clockTicks
}

// peakRSS is VmHWM of process pid, in KiB.
func peakRSS(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return 0, errors.New("no VmHWM in /proc/<pid>/status")
}
