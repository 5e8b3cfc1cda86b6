package issuer

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"go.step.sm/crypto/x509util"

	"github.com/tpmid/tpmid/ca/keys"
)

// RotateOptions shape a new intermediate.
type RotateOptions struct {
	// Key is the new intermediate's key URI; "" is the KMS's default name
	// (intermediate-<time>). Cloud KMSs need it.
	Key string
	// Lifetime of the new intermediate; 0 is the current one's (ca.json),
	// else 1y. It never passes the root's notAfter.
	Lifetime Duration
	Now      func() time.Time
}

// RotateIntermediate makes a new intermediate under the same root (the
// root key is loaded from the KMS) and makes it the issuing one. The
// previous intermediate stays in the bundle (ca.json's
// previousIntermediates, intermediates.crt, CA.Intermediates) so that the
// AK certificates it issued keep verifying; previous intermediates that
// have expired are dropped from it. ca.json is rewritten atomically, last
// but for the intermediate.crt and intermediates.crt outputs. Running
// servers pick the new intermediate up when they Load the CA again.
func RotateIntermediate(ctx context.Context, dir string, o RotateOptions) (*Config, error) {
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	cfg, err := ReadConfig(dir)
	if err != nil {
		return nil, err
	}
	root, err := readCert(resolve(dir, cfg.Root.Certificate))
	if err != nil {
		return nil, fmt.Errorf("root: %w", err)
	}
	current, err := readCert(resolve(dir, cfg.Intermediate.Certificate))
	if err != nil {
		return nil, fmt.Errorf("intermediate: %w", err)
	}
	t := now()
	if !t.Before(root.NotAfter) {
		return nil, fmt.Errorf("the root expired at %s: a new CA is needed (tpmid ca init --force)", root.NotAfter.UTC().Format(time.RFC3339))
	}
	lifetime := o.Lifetime
	if lifetime < 0 {
		return nil, fmt.Errorf("negative lifetime %s", lifetime)
	}
	if lifetime == 0 {
		lifetime = cfg.Intermediate.Lifetime
	}
	if lifetime == 0 {
		lifetime = DefaultIntermediateLifetime
	}
	alg, err := keys.ParseAlgorithm(string(cfg.KeyAlgorithm))
	if err != nil {
		return nil, err
	}

	k, err := keys.Open(ctx, cfg.KMS, dir)
	if err != nil {
		return nil, err
	}
	defer k.Close()
	rootSigner, err := k.Signer(ctx, cfg.Root.Key)
	if err != nil {
		return nil, fmt.Errorf("root key: %w", err)
	}
	if !samePublicKey(rootSigner.Public(), root.PublicKey) {
		return nil, fmt.Errorf("root key %s does not match %s", keys.Redact(cfg.Root.Key), cfg.Root.Certificate)
	}

	// A name no generation has used: intermediate-<time>[-n].
	stamp := t.UTC().Format("20060102T150405Z")
	base := "intermediate-" + stamp
	for i := 2; ; i++ {
		_, err := os.Lstat(filepath.Join(dir, base+".crt"))
		if errors.Is(err, fs.ErrNotExist) {
			break
		} else if err != nil {
			return nil, err
		}
		base = "intermediate-" + stamp + "-" + strconv.Itoa(i)
	}
	keyURI := o.Key
	if keyURI == "" {
		if keyURI, err = k.DefaultKeyURI(base); err != nil {
			return nil, fmt.Errorf("%w (--key)", err)
		}
	}
	signer, err := k.Create(ctx, keyURI, alg)
	if err != nil {
		return nil, fmt.Errorf("new intermediate key: %w", err)
	}
	inter, err := signCA(x509util.DefaultIntermediateTemplate, cfg.Name+" Intermediate CA", signer.Public(), root, rootSigner, t, lifetime.Std())
	if err != nil {
		k.Remove(keyURI)
		return nil, fmt.Errorf("new intermediate certificate: %w", err)
	}
	certFile := base + ".crt"
	if err := writeFileExclusive(filepath.Join(dir, certFile), pemCert(inter), 0o644); err != nil {
		k.Remove(keyURI)
		return nil, err
	}

	retired := t.UTC().Truncate(time.Second)
	var prev []CertKey
	var prevCerts []*x509.Certificate
	if t.Before(current.NotAfter) {
		old := cfg.Intermediate
		old.Retired = &retired
		prev, prevCerts = append(prev, old), append(prevCerts, current)
	}
	for _, p := range cfg.Previous {
		c, err := readCert(resolve(dir, p.Certificate))
		if err != nil {
			return nil, fmt.Errorf("previous intermediate: %w", err)
		}
		if !t.Before(c.NotAfter) {
			continue // expired: nothing it issued verifies any more
		}
		prev = append(prev, p)
		prevCerts = append(prevCerts, c)
	}
	next := *cfg
	next.Intermediate = CertKey{Certificate: certFile, Key: keyURI, Lifetime: lifetime}
	next.Previous = prev
	if err := writeConfig(dir, &next); err != nil {
		os.Remove(filepath.Join(dir, certFile))
		k.Remove(keyURI)
		return nil, err
	}
	if err := writeOutputs(dir, inter, prevCerts); err != nil {
		return nil, fmt.Errorf("the new intermediate is in %s, but writing %s failed: %w", ConfigFile, IntermediatesCertFile, err)
	}
	return &next, nil
}
