package eventlog

import (
	"testing"

	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// BenchmarkReplayLargest parses, replays, decodes every record and extracts
// the Secure Boot state of the largest real log.
func BenchmarkReplayLargest(b *testing.B) {
	var name string
	var data []byte
	for n, d := range realLogs(b) {
		if len(d) > len(data) {
			name, data = n, d
		}
	}
	b.Logf("largest real log: %s (%d bytes)", name, len(data))
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		l, err := Parse(data)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := l.Replay(); err != nil {
			b.Fatal(err)
		}
		for i := range l.Events {
			_, _ = l.Decode(&l.Events[i])
		}
		if _, err := SecureBoot(l); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServerPath is the server's event log work for the real 45 KB
// Ubuntu 24.04 log (banks sha1, sha256, sha384) quoted in sha256 only, as
// pkg/server/session does it: Parse, VerifyAgainst, VerifiedSecureBoot.
func BenchmarkServerPath(b *testing.B) {
	data, ok := realLogs(b)["eventlogs/go-tpm-tools/ubuntu-2404-amd-sevsnp.bin"]
	if !ok {
		b.Skip("the 45 KB Ubuntu 24.04 log is not in the real evidence")
	}
	l, err := Parse(data)
	if err != nil {
		b.Fatal(err)
	}
	all, err := l.Replay()
	if err != nil {
		b.Fatal(err)
	}
	quoted := pcrs.Values{}
	for i := 0; i <= 7; i++ {
		v, _ := all.Get(pcrs.SHA256, i)
		quoted.Set(pcrs.SHA256, i, v)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		l, err := Parse(data)
		if err != nil {
			b.Fatal(err)
		}
		r, err := VerifyAgainst(l, quoted)
		if err != nil {
			b.Fatal(err)
		}
		if sb, err := VerifiedSecureBoot(l, r); err != nil || sb.Mode == SecureBootUnknown {
			b.Fatalf("Secure Boot %v, %v", sb, err)
		}
	}
	b.ReportMetric(float64(len(data)), "log-bytes")
}
