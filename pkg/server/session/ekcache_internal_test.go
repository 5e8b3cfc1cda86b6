package session

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/tpmid/tpmid/pkg/server/verify"
)

// A chain admitted through an ek_chain_quirk is never cached: its validity
// rule (an expired intermediate accepted for what it issued before) is not
// the window the cache assumes, so it is judged in full every time.
func TestEKCacheSkipsQuirkChains(t *testing.T) {
	now := time.Now()
	cert := &x509.Certificate{Raw: []byte{1}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}
	c := NewEKCache(4)
	key := ekCacheKey(cert, nil)
	c.put(key, &verify.EKFacts{Chain: []*x509.Certificate{cert, cert}, ChainQuirks: []verify.ChainQuirk{verify.ChainQuirkExpiredIntermediates}})
	if c.Len() != 0 {
		t.Fatal("a chain that needed a quirk was cached")
	}
	c.put(key, &verify.EKFacts{Chain: []*x509.Certificate{cert, cert}})
	if _, ok := c.get(key, now); !ok {
		t.Fatal("the same chain without a quirk was not cached (the control)")
	}
}
