package issuer

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
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

// InitOptions shape a new CA.
type InitOptions struct {
	Dir string
	// KMS is the KMS URI ("" is softkms: key files in Dir).
	KMS string
	// RootKey and IntermediateKey are key URIs; "" is the KMS's default
	// name (keys.KMS.DefaultKeyURI). Cloud KMSs need them.
	RootKey, IntermediateKey string
	KeyAlgorithm             keys.Algorithm // "" is ECDSA-P256
	Name                     string         // "" is "tpmid CA"
	RootLifetime             Duration       // 0 is 10y
	IntermediateLifetime     Duration       // 0 is 1y
	AKLifetime               Duration       // 0 is 24h
	// AKTemplate is the file of an x509util template for AK certificates,
	// recorded in ca.json (made absolute); "" is the built-in template.
	AKTemplate string
	// Force replaces an existing CA in Dir: its files are moved to
	// Dir/replaced-<time>/ (keys in an HSM or cloud KMS stay where they are).
	Force bool
	Now   func() time.Time
}

// ErrExists is returned by Init when Dir already holds a CA and Force is
// not set.
var ErrExists = errors.New("a CA already exists")

// Init creates a CA in o.Dir: a root and an intermediate (keys created in
// the KMS), root.crt, the intermediate's certificate, intermediate.crt and
// intermediates.crt, and ca.json, written last. It then loads the CA
// (which issues and verifies a test certificate). On failure the files and
// softkms keys it made are removed.
func Init(ctx context.Context, o InitOptions) (*Config, error) {
	if o.Dir == "" {
		return nil, errors.New("no CA directory")
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	alg, err := keys.ParseAlgorithm(string(o.KeyAlgorithm))
	if err != nil {
		return nil, err
	}
	if o.Name == "" {
		o.Name = DefaultName
	}
	for _, d := range []*Duration{&o.RootLifetime, &o.IntermediateLifetime, &o.AKLifetime} {
		if *d < 0 {
			return nil, fmt.Errorf("negative lifetime %s", *d)
		}
	}
	if o.RootLifetime == 0 {
		o.RootLifetime = DefaultRootLifetime
	}
	if o.IntermediateLifetime == 0 {
		o.IntermediateLifetime = DefaultIntermediateLifetime
	}
	if o.AKLifetime == 0 {
		o.AKLifetime = DefaultAKLifetime
	}
	if o.IntermediateLifetime > o.RootLifetime {
		return nil, fmt.Errorf("intermediate lifetime %s exceeds the root's %s", o.IntermediateLifetime, o.RootLifetime)
	}
	if o.AKTemplate != "" {
		abs, err := filepath.Abs(o.AKTemplate)
		if err != nil {
			return nil, err
		}
		b, err := os.ReadFile(abs)
		if err != nil {
			return nil, fmt.Errorf("AK template: %w", err)
		}
		if err := x509util.ValidateTemplate(b); err != nil {
			return nil, fmt.Errorf("AK template %s: %w", o.AKTemplate, err)
		}
		o.AKTemplate = abs
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
	if err := checkNoCA(o.Dir, o.Force, now()); err != nil {
		return nil, err
	}

	k, err := keys.Open(ctx, o.KMS, o.Dir)
	if err != nil {
		return nil, err
	}
	defer k.Close()
	if o.KMS == "" {
		o.KMS = keys.DefaultKMS
	}

	var made []string // files to remove on failure
	var madeKeys []string
	ok := false
	defer func() {
		if ok {
			return
		}
		for _, f := range made {
			os.Remove(f)
		}
		for _, u := range madeKeys {
			k.Remove(u)
		}
	}()

	t := now()
	stamp := t.UTC().Format("20060102T150405Z")
	if o.RootKey == "" {
		if o.RootKey, err = k.DefaultKeyURI("root"); err != nil {
			return nil, fmt.Errorf("%w (--root-key)", err)
		}
	}
	interBase := "intermediate-" + stamp
	if o.IntermediateKey == "" {
		if o.IntermediateKey, err = k.DefaultKeyURI(interBase); err != nil {
			return nil, fmt.Errorf("%w (--intermediate-key)", err)
		}
	}
	rootSigner, err := k.Create(ctx, o.RootKey, alg)
	if err != nil {
		return nil, fmt.Errorf("root key: %w", err)
	}
	madeKeys = append(madeKeys, o.RootKey)
	root, err := signCA(x509util.DefaultRootTemplate, o.Name+" Root CA", rootSigner.Public(), nil, rootSigner, t, o.RootLifetime.Std())
	if err != nil {
		return nil, fmt.Errorf("root certificate: %w", err)
	}
	interSigner, err := k.Create(ctx, o.IntermediateKey, alg)
	if err != nil {
		return nil, fmt.Errorf("intermediate key: %w", err)
	}
	madeKeys = append(madeKeys, o.IntermediateKey)
	inter, err := signCA(x509util.DefaultIntermediateTemplate, o.Name+" Intermediate CA", interSigner.Public(), root, rootSigner, t, o.IntermediateLifetime.Std())
	if err != nil {
		return nil, fmt.Errorf("intermediate certificate: %w", err)
	}

	cfg := &Config{
		Format: ConfigFormat, Name: o.Name, KMS: o.KMS, KeyAlgorithm: alg,
		Root:         CertKey{Certificate: RootCertFile, Key: o.RootKey, Lifetime: o.RootLifetime},
		Intermediate: CertKey{Certificate: interBase + ".crt", Key: o.IntermediateKey, Lifetime: o.IntermediateLifetime},
		AK:           AKConfig{Lifetime: o.AKLifetime, Backdate: DefaultAKBackdate, Template: o.AKTemplate},
	}
	for _, f := range []struct {
		name string
		c    *x509.Certificate
	}{{RootCertFile, root}, {cfg.Intermediate.Certificate, inter}} {
		p := filepath.Join(o.Dir, f.name)
		if err := writeFileExclusive(p, pemCert(f.c), 0o644); err != nil {
			return nil, err
		}
		made = append(made, p)
	}
	made = append(made, filepath.Join(o.Dir, IntermediateCertFile), filepath.Join(o.Dir, IntermediatesCertFile), filepath.Join(o.Dir, ConfigFile))
	if err := writeOutputs(o.Dir, inter, nil); err != nil {
		return nil, err
	}
	if err := writeConfig(o.Dir, cfg); err != nil {
		return nil, err
	}
	ca, err := Load(ctx, o.Dir, WithClock(now))
	if err != nil {
		return nil, fmt.Errorf("the new CA does not load: %w", err)
	}
	ca.Close()
	ok = true
	return cfg, nil
}

// checkNoCA refuses a directory that holds a CA (ca.json or any file Init
// writes at a fixed name), unless force: then they move to
// dir/replaced-<stamp>/, with the per-generation certificates and softkms
// key files ca.json names in dir.
func checkNoCA(dir string, force bool, now time.Time) error {
	fixed := []string{ConfigFile, RootCertFile, IntermediateCertFile, IntermediatesCertFile, "root.key"}
	var present []string
	for _, f := range fixed {
		if _, err := os.Lstat(filepath.Join(dir, f)); err == nil {
			present = append(present, f)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if len(present) == 0 {
		return nil
	}
	if !force {
		return fmt.Errorf("%w in %s (%v): use --force to replace it (its files are moved aside)", ErrExists, dir, present)
	}
	if cfg, err := ReadConfig(dir); err == nil {
		for _, ck := range append([]CertKey{cfg.Root, cfg.Intermediate}, cfg.Previous...) {
			present = append(present, ck.Certificate)
			if p, ok := softKeyFile(ck.Key); ok {
				present = append(present, p)
			}
		}
	}
	aside := filepath.Join(dir, "replaced-"+now.UTC().Format("20060102T150405Z"))
	for i := 2; ; i++ {
		if _, err := os.Lstat(aside); errors.Is(err, fs.ErrNotExist) {
			break
		}
		aside = filepath.Join(dir, "replaced-"+now.UTC().Format("20060102T150405Z")+"-"+strconv.Itoa(i))
	}
	if err := os.Mkdir(aside, 0o700); err != nil {
		return err
	}
	for _, f := range present {
		if filepath.IsAbs(f) || filepath.Base(f) != f {
			continue // only files directly in dir move
		}
		if err := os.Rename(filepath.Join(dir, f), filepath.Join(aside, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("moving the old CA aside: %w", err)
		}
	}
	return nil
}

// softKeyFile returns the relative file of a softkms key URI in the CA
// directory ("softkms:path=root.key" -> "root.key").
func softKeyFile(keyURI string) (string, bool) {
	p, err := keys.SoftKeyPath(keyURI)
	if err != nil || filepath.IsAbs(p) {
		return "", false
	}
	return p, true
}

// signCA makes a root (parent nil) or intermediate certificate from an
// x509util template, valid from a minute before now for lifetime (never
// past the parent's notAfter).
func signCA(tpl, cn string, pub crypto.PublicKey, parent *x509.Certificate, signer crypto.Signer, now time.Time, lifetime time.Duration) (*x509.Certificate, error) {
	xc, err := x509util.NewCertificateFromX509(&x509.Certificate{PublicKey: pub}, x509util.WithTemplate(tpl, x509util.CreateTemplateData(cn, nil)))
	if err != nil {
		return nil, err
	}
	tmpl := xc.GetCertificate()
	if tmpl.SerialNumber, err = serialNumber(); err != nil {
		return nil, err
	}
	tmpl.NotBefore = now.Add(-time.Minute).UTC().Truncate(time.Second)
	tmpl.NotAfter = now.Add(lifetime).UTC().Truncate(time.Second)
	if parent == nil {
		parent = tmpl
	} else if tmpl.NotAfter.After(parent.NotAfter) {
		tmpl.NotAfter = parent.NotAfter
	}
	return x509util.CreateCertificate(tmpl, parent, pub, signer)
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// writeOutputs rewrites intermediate.crt (the current intermediate) and
// intermediates.crt (current, then previous).
func writeOutputs(dir string, current *x509.Certificate, previous []*x509.Certificate) error {
	if err := writeFileAtomic(filepath.Join(dir, IntermediateCertFile), pemCert(current), 0o644); err != nil {
		return err
	}
	b := pemCert(current)
	for _, p := range previous {
		b = append(b, pemCert(p)...)
	}
	return writeFileAtomic(filepath.Join(dir, IntermediatesCertFile), b, 0o644)
}
