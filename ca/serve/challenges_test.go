package serve

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
	"time"
)

func newSecret(t *testing.T) []byte {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestTable: the pending challenges' bounds (count, bytes, per EK), TTL,
// single use, and that a secret finds only its own challenge.
func TestTable(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	expired := 0
	l := Limits{MaxPending: 3, MaxPendingBytes: 1 << 20, MaxPendingPerEK: 2, ChallengeTTL: time.Minute}.withDefaults()
	tb := newTable(l, clock, func() { expired++ })

	a, b, c, d := newSecret(t), newSecret(t), newSecret(t), newSecret(t)
	put := func(secret []byte, ek string) error {
		return tb.put(&pending{secret: secret, ekHash: ek, ekPublic: make([]byte, 300)})
	}
	if err := put(a, "ek1"); err != nil {
		t.Fatal(err)
	}
	if err := put(b, "ek1"); err != nil {
		t.Fatal(err)
	}
	if err := put(c, "ek1"); !errors.Is(err, errEKBusy) {
		t.Fatalf("third challenge for ek1: %v, want errEKBusy", err)
	}
	if err := put(c, "ek2"); err != nil {
		t.Fatal(err)
	}
	if err := put(d, "ek3"); !errors.Is(err, errTableFull) {
		t.Fatalf("fourth challenge: %v, want errTableFull", err)
	}
	if err := put(a, "ek3"); err == nil {
		t.Fatal("a duplicate secret was accepted")
	}

	// Wrong secrets find nothing and take nothing.
	if p := tb.take(d); p != nil {
		t.Fatal("an unknown secret redeemed a challenge")
	}
	almost := bytes.Clone(a)
	almost[31] ^= 0x80
	if p := tb.take(almost); p != nil {
		t.Fatal("a secret one bit off redeemed a challenge")
	}
	if p := tb.take(a[:16]); p != nil {
		t.Fatal("a prefix of the secret redeemed a challenge")
	}
	if p := tb.take(nil); p != nil {
		t.Fatal("an empty secret redeemed a challenge")
	}
	if tb.len() != 3 {
		t.Fatalf("len %d after wrong secrets", tb.len())
	}

	// Each secret finds its own challenge, once.
	if p := tb.take(b); p == nil || !bytes.Equal(p.secret, b) || p.ekHash != "ek1" {
		t.Fatalf("b: %+v", p)
	}
	if p := tb.take(b); p != nil {
		t.Fatal("b redeemed twice")
	}
	if err := put(d, "ek1"); err != nil { // room for ek1 again
		t.Fatal(err)
	}

	// Expiry: at the TTL, a secret finds nothing, and the next put sweeps.
	now = now.Add(time.Minute)
	if p := tb.take(a); p != nil {
		t.Fatal("an expired challenge was redeemed")
	}
	if expired != 1 || tb.len() != 2 {
		t.Fatalf("expired %d, len %d", expired, tb.len())
	}
	if err := put(newSecret(t), "ek9"); err != nil {
		t.Fatal(err)
	}
	if expired != 3 || tb.len() != 1 || len(tb.perEK) != 1 {
		t.Fatalf("after the sweep: expired %d, len %d, per EK %v", expired, tb.len(), tb.perEK)
	}
}

// TestTableBytes: the byte bound refuses what the count bound would let
// in, and frees with the entries.
func TestTableBytes(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	l := Limits{MaxPending: 100, MaxPendingPerEK: 100, MaxPendingBytes: 3000, ChallengeTTL: time.Minute}.withDefaults()
	tb := newTable(l, func() time.Time { return now }, func() {})
	var secrets [][]byte
	for {
		s := newSecret(t)
		err := tb.put(&pending{secret: s, ekHash: "ek", ekPublic: make([]byte, 294)})
		if errors.Is(err, errTableFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, s)
		if len(secrets) > 10 {
			t.Fatal("the byte bound never refused")
		}
	}
	if len(secrets) == 0 || tb.bytes > 3000 {
		t.Fatalf("%d entries, %d bytes", len(secrets), tb.bytes)
	}
	tb.take(secrets[0])
	if err := tb.put(&pending{secret: newSecret(t), ekHash: "ek", ekPublic: make([]byte, 294)}); err != nil {
		t.Fatalf("after freeing one: %v", err)
	}
	for _, s := range secrets[1:] {
		tb.take(s)
	}
	if tb.len() != 1 {
		t.Fatalf("len %d", tb.len())
	}
}

// TestStatus: every reason has the status its class says.
func TestStatus(t *testing.T) {
	for _, r := range allReasons {
		if s := status(r); s < 400 || s > 599 {
			t.Errorf("%s: status %d", r, s)
		}
	}
	if metricReason("something_else") != ReasonInternal {
		t.Error("an unknown reason is a label of its own")
	}
}
