package chaincache

import (
	"crypto/x509"
	"testing"
	"time"
)

// TestKey: parts are length-prefixed, so no two different part lists
// share a key by concatenating alike.
func TestKey(t *testing.T) {
	distinct := [][][]byte{
		{[]byte("ab"), []byte("c")},
		{[]byte("a"), []byte("bc")},
		{[]byte("abc")},
		{[]byte("abc"), nil},
		{nil, []byte("abc")},
		{[]byte("c"), []byte("ab")},
		{},
	}
	seen := map[[KeySize]byte]int{}
	for i, parts := range distinct {
		k := Key(parts...)
		if j, ok := seen[k]; ok {
			t.Fatalf("parts %d and %d share a key", j, i)
		}
		seen[k] = i
	}
	if Key([]byte("ab"), []byte("c")) != Key([]byte("ab"), []byte("c")) {
		t.Fatal("the same parts give two keys")
	}
}

// TestWindow: an entry answers only inside every chain certificate's
// validity, and an empty chain is not kept.
func TestWindow(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	leaf := &x509.Certificate{NotBefore: t0, NotAfter: t0.Add(24 * time.Hour)}
	inter := &x509.Certificate{NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(2 * time.Hour)}
	root := &x509.Certificate{NotBefore: t0.Add(time.Minute), NotAfter: t0.Add(48 * time.Hour)}
	c := New[string](4)
	k := Key([]byte("chain"))
	c.Put(k, "ok", []*x509.Certificate{leaf, inter, root})
	for _, tc := range []struct {
		at   time.Time
		want bool
	}{
		{t0, false},                      // before the root's NotBefore
		{t0.Add(time.Minute), true},      // the latest NotBefore
		{t0.Add(2 * time.Hour), true},    // the earliest NotAfter
		{t0.Add(2*time.Hour + 1), false}, // after the intermediate expired
		{t0.Add(30 * time.Hour), false},  // after the leaf expired
	} {
		if _, ok := c.Get(k, tc.at); ok != tc.want {
			t.Errorf("at %s: answered %v, want %v", tc.at, ok, tc.want)
		}
	}
	if _, ok := c.Get(Key([]byte("other")), t0.Add(time.Hour)); ok {
		t.Error("another key answered")
	}
	c.Put(Key([]byte("empty")), "no", nil)
	if c.Len() != 1 {
		t.Errorf("an empty chain was kept: %d entries", c.Len())
	}
}

// TestBounded: never more entries than the size.
func TestBounded(t *testing.T) {
	now := time.Now()
	cert := &x509.Certificate{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}
	c := New[int](3)
	for i := range 10 {
		c.Put(Key([]byte{byte(i)}), i, []*x509.Certificate{cert})
		if c.Len() > 3 {
			t.Fatalf("size 3 holds %d", c.Len())
		}
	}
}
