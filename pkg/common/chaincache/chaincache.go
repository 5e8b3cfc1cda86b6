// Package chaincache remembers certificate chains a verifier accepted, so
// that the same chain presented again inside its validity window is not
// verified again. The server plugin keeps one for EK certificates
// (session.EKCache) and the AK CA one for the AK certificates of the fast
// path (issuer.CA.CheckAK).
//
// A cache may only skip work whose answer is fixed by the key and the
// time: the key covers every byte that was verified (Key), an entry
// answers only while the verification time is inside every chain
// certificate's validity (the latest NotBefore to the earliest NotAfter),
// and only acceptances are kept. What the trust depends on beyond that
// (the roots, the policy) must be fixed for the cache's life: make a new
// cache when it changes.
package chaincache

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"sync"
	"time"
)

// KeySize is the size of a Key.
const KeySize = sha256.Size

// Key is SHA-256 over each part, length-prefixed and in order: one
// changed byte, or one added, dropped or reordered part, is another key.
func Key(parts ...[]byte) [KeySize]byte {
	h := sha256.New()
	var n [4]byte
	for _, p := range parts {
		binary.BigEndian.PutUint32(n[:], uint32(len(p)))
		h.Write(n[:])
		h.Write(p)
	}
	var k [KeySize]byte
	h.Sum(k[:0])
	return k
}

// Cache holds at most its size of accepted results; when full, an
// arbitrary entry is dropped. Safe for concurrent use.
type Cache[T any] struct {
	mu  sync.Mutex
	max int
	m   map[[KeySize]byte]entry[T]
}

type entry[T any] struct {
	v                 T
	notBefore, expiry time.Time
}

// New returns a cache of at most size entries (at least 1).
func New[T any](size int) *Cache[T] {
	return &Cache[T]{max: max(size, 1), m: map[[KeySize]byte]entry[T]{}}
}

// Len is the number of entries.
func (c *Cache[T]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// Get returns the value kept for key when now is inside its window.
func (c *Cache[T]) Get(key [KeySize]byte, now time.Time) (T, bool) {
	c.mu.Lock()
	e, ok := c.m[key]
	c.mu.Unlock()
	if !ok || now.Before(e.notBefore) || now.After(e.expiry) {
		var zero T
		return zero, false
	}
	return e.v, true
}

// Put keeps v, the result of accepting chain, for the window in which
// every certificate of chain is valid. An empty chain keeps nothing.
func (c *Cache[T]) Put(key [KeySize]byte, v T, chain []*x509.Certificate) {
	if len(chain) == 0 {
		return
	}
	e := entry[T]{v: v}
	for i, cert := range chain {
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
