package session

import (
	"crypto/x509"
	"time"

	"github.com/tpmid/tpmid/pkg/common/chaincache"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// DefaultEKCacheSize is how many verified EK certificate chains the server
// plugin remembers (NewEKCache): a few KB each, so a few MB at most.
const DefaultEKCacheSize = 4096

// EKCache remembers EK certificates that verify.VerifyEKCert accepted, so
// that an EK attesting again (an agent restart, SVID expiry) costs no
// chain building or signature check. It only skips work whose answer is
// fixed by its inputs (package chaincache):
//
//   - The key covers the exact DER of the EK certificate and of every
//     intermediate the agent sent, in order: one changed byte or one
//     added, dropped or reordered certificate is another key, verified in
//     full.
//   - An entry answers only while the verification time is inside every
//     chain certificate's validity, the window in which crypto/x509 would
//     accept the same chain again; outside it the chain is verified in
//     full, so an expired certificate is refused as ek_expired as before.
//   - Only acceptances are kept, never refusals, and never a chain that
//     needed an ek_chain_quirk (those are rare, and their validity rule is
//     not crypto/x509's).
//   - The trust bundle is fixed for the cache's life: the plugin makes a
//     new EKPolicy, so a new cache, on every Configure.
type EKCache struct {
	c *chaincache.Cache[verify.EKFacts]
}

// NewEKCache returns a cache of at most size chains (at least 1).
func NewEKCache(size int) *EKCache { return &EKCache{c: chaincache.New[verify.EKFacts](size)} }

// Len is the number of chains remembered.
func (c *EKCache) Len() int { return c.c.Len() }

// ekCacheKey covers the certificate and the agent's intermediates.
func ekCacheKey(cert *x509.Certificate, inters []*x509.Certificate) [chaincache.KeySize]byte {
	parts := make([][]byte, 0, 1+len(inters))
	for _, c := range append([]*x509.Certificate{cert}, inters...) {
		if c != nil {
			parts = append(parts, c.Raw)
		}
	}
	return chaincache.Key(parts...)
}

// get returns a copy of the facts kept for key when now is inside their
// window.
func (c *EKCache) get(key [chaincache.KeySize]byte, now time.Time) (*verify.EKFacts, bool) {
	f, ok := c.c.Get(key, now)
	if !ok {
		return nil, false
	}
	return &f, true
}

// put keeps f, a chain crypto/x509 accepted, for its validity window.
func (c *EKCache) put(key [chaincache.KeySize]byte, f *verify.EKFacts) {
	if f == nil || len(f.ChainQuirks) > 0 {
		return
	}
	c.c.Put(key, *f, f.Chain)
}
