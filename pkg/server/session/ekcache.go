package session

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"sync"
	"time"

	"github.com/tpmid/tpmid/pkg/server/verify"
)

// DefaultEKCacheSize is how many verified EK certificate chains the server
// plugin remembers (NewEKCache): a few KB each, so a few MB at most.
const DefaultEKCacheSize = 4096

// EKCache remembers EK certificates that verify.VerifyEKCert accepted, so
// that an EK attesting again (an agent restart, SVID expiry) costs no
// chain building or signature check. It only skips work whose answer is
// fixed by its inputs:
//
//   - The key is SHA-256 over the exact DER of the EK certificate and of
//     every intermediate the agent sent, in order, each length-prefixed:
//     one changed byte or one added, dropped or reordered certificate is
//     another key, verified in full.
//   - An entry answers only while the verification time is inside every
//     chain certificate's validity (the latest NotBefore to the earliest
//     NotAfter), the window in which crypto/x509 would accept the same
//     chain again; outside it the chain is verified in full, so an expired
//     certificate is refused as ek_expired as before.
//   - Only acceptances are kept, never refusals, and never a chain that
//     needed an ek_chain_quirk (those are rare, and their validity rule is
//     not crypto/x509's).
//   - The trust bundle is fixed for the cache's life: the plugin makes a
//     new EKPolicy, so a new cache, on every Configure.
//
// Safe for concurrent use. When full, an arbitrary entry is dropped.
type EKCache struct {
	mu  sync.Mutex
	max int
	m   map[[sha256.Size]byte]ekCacheEntry
}

type ekCacheEntry struct {
	facts             verify.EKFacts
	notBefore, expiry time.Time
}

// NewEKCache returns a cache of at most size chains (at least 1).
func NewEKCache(size int) *EKCache {
	return &EKCache{max: max(size, 1), m: map[[sha256.Size]byte]ekCacheEntry{}}
}

// Len is the number of chains remembered.
func (c *EKCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// ekCacheKey hashes the certificate and the agent's intermediates.
func ekCacheKey(cert *x509.Certificate, inters []*x509.Certificate) [sha256.Size]byte {
	h := sha256.New()
	var n [4]byte
	for _, c := range append([]*x509.Certificate{cert}, inters...) {
		if c == nil {
			continue
		}
		binary.BigEndian.PutUint32(n[:], uint32(len(c.Raw)))
		h.Write(n[:])
		h.Write(c.Raw)
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// get returns a copy of the facts kept for key when now is inside their
// window.
func (c *EKCache) get(key [sha256.Size]byte, now time.Time) (*verify.EKFacts, bool) {
	c.mu.Lock()
	e, ok := c.m[key]
	c.mu.Unlock()
	if !ok || now.Before(e.notBefore) || now.After(e.expiry) {
		return nil, false
	}
	f := e.facts
	return &f, true
}

// put keeps f, a chain crypto/x509 accepted, for its validity window.
func (c *EKCache) put(key [sha256.Size]byte, f *verify.EKFacts) {
	if f == nil || len(f.ChainQuirks) > 0 || len(f.Chain) == 0 {
		return
	}
	e := ekCacheEntry{facts: *f}
	for i, cert := range f.Chain {
		if i == 0 || cert.NotBefore.After(e.notBefore) {
			e.notBefore = cert.NotBefore
		}
		if i == 0 || cert.NotAfter.Before(e.expiry) {
			e.expiry = cert.NotAfter
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[key]; !ok && len(c.m) >= c.max {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[key] = e
}
