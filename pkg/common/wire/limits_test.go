package wire

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestSizeAndVersionErrors: a refusal names the message, its size and the
// limit, or the version it carried; errors.Is still finds the sentinels.
func TestSizeAndVersionErrors(t *testing.T) {
	ev := mustEncode(t, validEvidence())
	limit := len(ev) + 10
	if _, err := DecodeEvidence(append(bytes.Clone(ev), bytes.Repeat([]byte{' '}, 10)...), limit); err != nil {
		t.Errorf("evidence of exactly the limit, padded with JSON whitespace: %v", err)
	}
	_, err := DecodeEvidence(append(bytes.Clone(ev), bytes.Repeat([]byte{' '}, 11)...), limit)
	if want := fmt.Sprintf("evidence too large (%d bytes, limit %d)", limit+1, limit); !errors.Is(err, ErrTooLarge) || err.Error() != want {
		t.Errorf("err = %v, want %q wrapping ErrTooLarge", err, want)
	}
	if errors.Is(err, ErrMalformed) {
		t.Errorf("size error %v is also ErrMalformed", err)
	}
	if _, err := DecodeHello(mustEncode(t, validHello(t)), 10); err == nil || !strings.HasPrefix(err.Error(), "hello too large (") {
		t.Errorf("hello: %v", err)
	}

	e := validEvidence()
	e.Version = 2
	_, err = DecodeEvidence(mustEncode(t, e), DefaultMaxEvidence)
	if want := "evidence has unsupported protocol version 2 (only version 1 is spoken here)"; !errors.Is(err, ErrVersion) || err.Error() != want {
		t.Errorf("err = %v, want %q wrapping ErrVersion", err, want)
	}
}
