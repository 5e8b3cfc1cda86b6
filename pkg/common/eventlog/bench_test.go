package eventlog

import "testing"

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
