// Package keys puts the CA's signing keys behind go.step.sm/crypto KMS URIs.
// One code path serves every KMS: Open takes the KMS URI ("softkms:",
// "pkcs11:module-path=...;token=...", "tpmkms:...", and with the
// cloudkms build tag "awskms:", "cloudkms:", "azurekms:"), Create makes a
// key under a key URI, and Signer loads one.
//
// softkms keys are PEM files that this package writes itself (softkms
// returns the private key and leaves storage to the caller): mode 0600,
// never over an existing file. A softkms key URI with a relative path is
// relative to the CA directory, so the directory can move.
package keys

import (
	"context"
	"crypto"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"go.step.sm/crypto/kms/apiv1"
	"go.step.sm/crypto/kms/uri"
	"go.step.sm/crypto/pemutil"

	// The KMSs built in by default: software keys, PKCS#11 modules (with
	// cgo; without it the type is registered and says so), and keys in the
	// local TPM. The cloud KMSs are in cloud.go, behind the cloudkms tag.
	_ "go.step.sm/crypto/kms/pkcs11"
	_ "go.step.sm/crypto/kms/softkms"
	_ "go.step.sm/crypto/kms/tpmkms"
)

// DefaultKMS is the KMS URI used when none is given: software keys, as
// files in the CA directory.
const DefaultKMS = "softkms:"

// Algorithm is a key algorithm for CA keys.
type Algorithm string

// Algorithms the CA keys may use.
const (
	ECDSAP256 Algorithm = "ECDSA-P256"
	ECDSAP384 Algorithm = "ECDSA-P384"
	RSA3072   Algorithm = "RSA-3072"
	RSA4096   Algorithm = "RSA-4096"
)

// Algorithms lists the accepted values, default first.
var Algorithms = []Algorithm{ECDSAP256, ECDSAP384, RSA3072, RSA4096}

func (a Algorithm) request() (apiv1.SignatureAlgorithm, int, error) {
	switch Algorithm(strings.ToUpper(string(a))) {
	case "", ECDSAP256:
		return apiv1.ECDSAWithSHA256, 0, nil
	case ECDSAP384:
		return apiv1.ECDSAWithSHA384, 0, nil
	case RSA3072:
		return apiv1.SHA256WithRSA, 3072, nil
	case RSA4096:
		return apiv1.SHA256WithRSA, 4096, nil
	}
	return 0, 0, fmt.Errorf("key algorithm %q: want one of %v", a, Algorithms)
}

// ParseAlgorithm normalises and checks a key algorithm name.
func ParseAlgorithm(s string) (Algorithm, error) {
	a := Algorithm(strings.ToUpper(strings.TrimSpace(s)))
	if a == "" {
		a = ECDSAP256
	}
	if _, _, err := a.request(); err != nil {
		return "", err
	}
	return a, nil
}

// KMS is an open key manager and the directory softkms paths are relative to.
type KMS struct {
	URI  string
	Type apiv1.Type
	Dir  string
	km   apiv1.KeyManager
}

// Open opens the KMS named by kmsURI ("" is DefaultKMS). dir is the CA
// directory. An unknown scheme, a KMS not built into this binary, or one
// that cannot be reached is an error that names the URI (secrets such as
// pin-value redacted).
func Open(ctx context.Context, kmsURI, dir string) (*KMS, error) {
	if kmsURI == "" {
		kmsURI = DefaultKMS
	}
	u, err := uri.Parse(kmsURI)
	if err != nil {
		return nil, fmt.Errorf("KMS URI %q: want scheme:params, e.g. softkms:, pkcs11:module-path=...;token=..., tpmkms:, awskms:region=...", Redact(kmsURI))
	}
	typ := apiv1.Type(strings.ToLower(u.Scheme))
	fn, ok := apiv1.LoadKeyManagerNewFunc(typ)
	if !ok {
		switch typ {
		case apiv1.AmazonKMS, apiv1.CloudKMS, apiv1.AzureKMS:
			return nil, fmt.Errorf("KMS %q: the %s KMS is not built into this tpmid (cloud KMSs need `go build -tags cloudkms`)", Redact(kmsURI), typ)
		}
		if typ.Validate() == nil {
			return nil, fmt.Errorf("KMS %q: the %s KMS is not built into tpmid (softkms, pkcs11, tpmkms, and with -tags cloudkms awskms, cloudkms, azurekms are)", Redact(kmsURI), typ)
		}
		return nil, fmt.Errorf("KMS %q: unknown KMS type %q (want softkms, pkcs11, tpmkms, awskms, cloudkms or azurekms)", Redact(kmsURI), u.Scheme)
	}
	opts := apiv1.Options{Type: typ, URI: kmsURI}
	if typ == apiv1.SoftKMS {
		opts.URI = "" // softkms takes no options; its key URIs carry the paths
	}
	km, err := fn(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("opening KMS %q: %w", Redact(kmsURI), err)
	}
	return &KMS{URI: kmsURI, Type: typ, Dir: dir, km: km}, nil
}

// Close closes the key manager.
func (k *KMS) Close() error { return k.km.Close() }

// DefaultKeyURI names a new key called base ("root", "intermediate-...")
// for this KMS: a file base.key in the CA directory for softkms, a token
// object tpmid-base with a random ID for PKCS#11, a TPM key tpmid-base
// for tpmkms. Other KMSs name keys their own way: give the URI
// explicitly (--root-key, --intermediate-key, --key).
func (k *KMS) DefaultKeyURI(base string) (string, error) {
	switch k.Type {
	case apiv1.SoftKMS:
		return uri.New("softkms", url.Values{"path": {base + ".key"}}).String(), nil
	case apiv1.PKCS11:
		id := make([]byte, 8)
		if _, err := rand.Read(id); err != nil {
			return "", err
		}
		return "pkcs11:id=" + hex.EncodeToString(id) + ";object=tpmid-" + url.PathEscape(base), nil
	case apiv1.TPMKMS:
		return "tpmkms:name=tpmid-" + url.PathEscape(base), nil
	}
	return "", fmt.Errorf("the %s KMS has no default key names: give the key URI explicitly", k.Type)
}

// SoftKeyPath returns the file a softkms key URI names, as written (a
// relative path is relative to the CA directory).
func SoftKeyPath(keyURI string) (string, error) {
	u, err := uri.ParseWithScheme("softkms", keyURI)
	if err != nil {
		return "", fmt.Errorf("softkms key URI %q: %v", keyURI, err)
	}
	p := u.Get("path")
	if p == "" {
		p = u.Opaque
		if p == "" {
			p = u.Path
		}
	}
	if p == "" || strings.ContainsAny(p, ";=") {
		return "", fmt.Errorf("softkms key URI %q: want softkms:path=FILE", keyURI)
	}
	return filepath.Clean(p), nil
}

// softPath is SoftKeyPath with a relative path joined to the CA directory.
func (k *KMS) softPath(keyURI string) (string, error) {
	p, err := SoftKeyPath(keyURI)
	if err != nil {
		return "", err
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(k.Dir, p)
	}
	return p, nil
}

// checkScheme refuses a key URI of another KMS than the one open.
func (k *KMS) checkScheme(keyURI string) error {
	u, err := uri.Parse(keyURI)
	if err != nil {
		return fmt.Errorf("key URI %q: %v", Redact(keyURI), err)
	}
	if apiv1.Type(strings.ToLower(u.Scheme)) != k.Type {
		return fmt.Errorf("key URI %q is not a %s key (the CA's KMS is %q)", Redact(keyURI), k.Type, Redact(k.URI))
	}
	return nil
}

// Create makes a new key under keyURI and returns its signer. A softkms
// key is written to its file with mode 0600 and is never written over an
// existing file.
func (k *KMS) Create(ctx context.Context, keyURI string, alg Algorithm) (crypto.Signer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := k.checkScheme(keyURI); err != nil {
		return nil, err
	}
	sigAlg, bits, err := alg.request()
	if err != nil {
		return nil, err
	}
	name := keyURI
	var path string
	if k.Type == apiv1.SoftKMS {
		if path, err = k.softPath(keyURI); err != nil {
			return nil, err
		}
		if _, err := os.Lstat(path); err == nil {
			return nil, fmt.Errorf("key file %s exists: not writing over a key", path)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		name = uri.New("softkms", url.Values{"path": {path}}).String()
	}
	resp, err := k.km.CreateKey(&apiv1.CreateKeyRequest{Name: name, SignatureAlgorithm: sigAlg, Bits: bits})
	if err != nil {
		return nil, fmt.Errorf("creating key %q: %w", Redact(keyURI), err)
	}
	if k.Type == apiv1.SoftKMS {
		if err := writeKeyFile(path, resp.PrivateKey); err != nil {
			return nil, err
		}
	}
	signer, err := k.km.CreateSigner(&resp.CreateSignerRequest)
	if err != nil {
		return nil, fmt.Errorf("signer for new key %q: %w", Redact(keyURI), err)
	}
	return signer, nil
}

// writeKeyFile writes a private key as PEM (PKCS#8) to a new file, mode
// 0600, created exclusively.
func writeKeyFile(path string, priv crypto.PrivateKey) error {
	blk, err := pemutil.Serialize(priv, pemutil.WithPKCS8(true))
	if err != nil {
		return fmt.Errorf("encoding key for %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("writing key: %w", err)
	}
	if err := pem.Encode(f, blk); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("writing key %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("writing key %s: %w", path, err)
	}
	return f.Close()
}

// Signer loads the key named by keyURI. A softkms key file readable by
// group or others is refused, as ssh does.
func (k *KMS) Signer(ctx context.Context, keyURI string) (crypto.Signer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := k.checkScheme(keyURI); err != nil {
		return nil, err
	}
	name := keyURI
	if k.Type == apiv1.SoftKMS {
		path, err := k.softPath(keyURI)
		if err != nil {
			return nil, err
		}
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", keyURI, err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("key file %s has mode %#o: it must not be readable by group or others (chmod 600)", path, fi.Mode().Perm())
		}
		name = uri.New("softkms", url.Values{"path": {path}}).String()
	}
	s, err := k.km.CreateSigner(&apiv1.CreateSignerRequest{SigningKey: name})
	if err != nil {
		return nil, fmt.Errorf("loading key %q: %w", Redact(keyURI), err)
	}
	return s, nil
}

// Remove deletes a softkms key file created by Create, for rolling back a
// failed init; other KMSs' keys are left alone (nil).
func (k *KMS) Remove(keyURI string) error {
	if k.Type != apiv1.SoftKMS {
		return nil
	}
	path, err := k.softPath(keyURI)
	if err != nil {
		return err
	}
	return os.Remove(path)
}

// Redact hides secret URI attributes (pin-value, and anything named like a
// password or secret), in the path part (;-separated) and the query part
// (&-separated), for messages.
func Redact(s string) string {
	path, query, hasQuery := strings.Cut(s, "?")
	red := func(part, sep string) string {
		attrs := strings.Split(part, sep)
		for i, a := range attrs {
			k, _, ok := strings.Cut(a, "=")
			if !ok {
				continue
			}
			l := strings.ToLower(k)
			if i == 0 {
				if _, after, ok := strings.Cut(l, ":"); ok {
					l = after // the scheme prefixes the first attribute
				}
			}
			if l == "pin-value" || strings.Contains(l, "password") || strings.Contains(l, "secret") {
				attrs[i] = k + "=REDACTED"
			}
		}
		return strings.Join(attrs, sep)
	}
	out := red(path, ";")
	if hasQuery {
		out += "?" + red(query, "&")
	}
	return out
}
