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
	v1 := validEvidence()
	v1.Version = Version1 // JSON may be padded with whitespace; the envelope may not
	ev := mustEncode(t, v1)
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
	e.Version = 3
	_, err = DecodeEvidence(mustEncode(t, e), DefaultMaxEvidence)
	if want := "evidence has unsupported protocol version 3 (versions 1 and 2 are spoken here)"; !errors.Is(err, ErrVersion) || err.Error() != want {
		t.Errorf("err = %v, want %q wrapping ErrVersion", err, want)
	}
}
