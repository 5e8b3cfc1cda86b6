package serve

import (
	"crypto"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"sync"
	"time"

	"github.com/tpmid/tpmid/pkg/server/verify"
)

// pending is the server-side state of one challenge: what /secret needs to
// certify the AK once the client proves it could activate the credential.
type pending struct {
	secret    []byte // the activation secret MakeCredential encrypted
	ekHash    string
	ekPublic  []byte // PKIX DER
	ekFacts   *verify.EKFacts
	akPublic  crypto.PublicKey
	requestID string
	expires   time.Time
	size      int
}

// entrySize estimates what an entry holds in memory, for the byte bound.
func entrySize(p *pending) int {
	const overhead = 512 // map entry, struct, the parsed keys' big.Ints
	n := overhead + len(p.secret) + len(p.ekHash) + len(p.ekPublic) + len(p.requestID)
	if p.ekFacts != nil {
		n += len(p.ekFacts.Manufacturer) + len(p.ekFacts.Model) + len(p.ekFacts.Version) + len(p.ekFacts.Issuer)
		for _, c := range p.ekFacts.Chain {
			n += len(c.Raw)
		}
	}
	return n + 2*len(p.ekPublic) // the AK public key, about the EK's size
}

var (
	errTableFull = errors.New("too many pending challenges")
	errEKBusy    = errors.New("too many pending challenges for this EK")
)

// table holds the pending challenges, bounded in count, bytes and per EK,
// each for at most ttl. It is keyed by a hash of the secret: the /secret
// request of go.step.sm/crypto's client carries nothing but the secret
// (no session, cookie or stable request ID), and the secret is what binds
// the answer to its challenge. A secret finds only the challenge whose
// credential encrypted it, so one client's secret cannot redeem another's
// challenge; the secret itself is then compared in constant time.
type table struct {
	mu      sync.Mutex
	byKey   map[[32]byte]*pending
	perEK   map[string]int
	bytes   int
	limits  Limits
	now     func() time.Time
	expired func() // called once per challenge dropped unanswered
}

func newTable(l Limits, now func() time.Time, expired func()) *table {
	return &table{byKey: map[[32]byte]*pending{}, perEK: map[string]int{}, limits: l, now: now, expired: expired}
}

// secretKey is the table key of a secret: a domain-separated SHA-256, so
// the map never holds the secret as a key and lookups take the same time
// for every secret of a given length.
func secretKey(secret []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte("tpmid ca serve challenge v1\x00"))
	h.Write(secret)
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// put adds p; errTableFull or errEKBusy when a bound would be passed
// (nothing is evicted: a flood cannot push out honest clients' challenges,
// it can only make new ones wait for the TTL).
func (t *table) put(p *pending) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweepLocked()
	p.size = entrySize(p)
	switch {
	case len(t.byKey) >= t.limits.MaxPending, t.bytes+p.size > t.limits.MaxPendingBytes:
		return errTableFull
	case t.perEK[p.ekHash] >= t.limits.MaxPendingPerEK:
		return errEKBusy
	}
	p.expires = t.now().Add(t.limits.ChallengeTTL)
	k := secretKey(p.secret)
	if _, dup := t.byKey[k]; dup {
		// Two 32-byte random secrets that collide: the random source is
		// broken. Refuse rather than overwrite.
		return errors.New("activation secret collision: the random source is broken")
	}
	t.byKey[k] = p
	t.perEK[p.ekHash]++
	t.bytes += p.size
	return nil
}

// take removes and returns the challenge secret answers; nil when there is
// none (a wrong, expired or already used secret). A challenge is used once.
func (t *table) take(secret []byte) *pending {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := secretKey(secret)
	p := t.byKey[k]
	if p == nil {
		return nil
	}
	if !t.now().Before(p.expires) {
		t.removeLocked(k, p)
		t.expired()
		return nil
	}
	if subtle.ConstantTimeCompare(p.secret, secret) != 1 {
		return nil // a SHA-256 collision; keep the challenge
	}
	t.removeLocked(k, p)
	return p
}

// len is the number of pending challenges, expired ones included until the
// next put or take sweeps them.
func (t *table) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byKey)
}

func (t *table) removeLocked(k [32]byte, p *pending) {
	delete(t.byKey, k)
	t.bytes -= p.size
	if t.perEK[p.ekHash]--; t.perEK[p.ekHash] <= 0 {
		delete(t.perEK, p.ekHash)
	}
}

// sweepLocked drops expired challenges. The table is small (MaxPending)
// and put is rare next to the public-key work around it, so a full scan is
// fine.
func (t *table) sweepLocked() {
	now := t.now()
	for k, p := range t.byKey {
		if !now.Before(p.expires) {
			t.removeLocked(k, p)
			t.expired()
		}
	}
}
