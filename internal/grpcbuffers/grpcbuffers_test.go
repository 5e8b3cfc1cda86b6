package grpcbuffers

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
)

// The pool must hand out buffers of the tier just above the request (the
// point of it) and must still zero what an earlier message left in them: a
// pooled buffer that kept one agent's evidence would leak it into the next
// message gRPC reads into that buffer.
func TestPool(t *testing.T) {
	for _, tc := range []struct {
		size, wantCap int
	}{
		{100, 256},
		{3000, 4 << 10},
		{20 << 10, 32 << 10},
		{45300, 64 << 10}, // the real 45 KB log: 1 MiB under gRPC's default tiers
		{75000, 128 << 10},
		{300 << 10, 512 << 10},
		{1 << 20, 1 << 20},
	} {
		pool := New()
		dirty := pool.Get(tc.size)
		if cap(*dirty) != tc.wantCap {
			t.Errorf("Get(%d): capacity %d, want %d", tc.size, cap(*dirty), tc.wantCap)
		}
		full := (*dirty)[:cap(*dirty)]
		for i := range full {
			full[i] = 0xA5
		}
		pool.Put(dirty)
		// sync.Pool may drop the buffer; a few tries find it again when it
		// is kept, and every buffer handed out must be clean either way.
		for range 4 {
			b := pool.Get(tc.size)
			if !bytes.Equal((*b)[:cap(*b)], make([]byte, cap(*b))) {
				t.Fatalf("Get(%d) returned a buffer with an earlier message's bytes", tc.size)
			}
			pool.Put(b)
		}
	}
}

// Install must replace the process's default pool, which the proto codec
// reads: gRPC's own default gives the 45 KB evidence a 1 MiB buffer.
func TestInstall(t *testing.T) {
	before := mem.DefaultBufferPool().Get(45300)
	Install()
	after := mem.DefaultBufferPool().Get(45300)
	if cap(*after) != 64<<10 {
		t.Fatalf("after Install the default pool gives the evidence %d bytes (before: %d), want 64 KiB", cap(*after), cap(*before))
	}
}
