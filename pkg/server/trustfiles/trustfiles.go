// Package trustfiles reads the operator's trust files: EK CA bundles (a PEM
// file, or a directory tree of PEM/DER certificates) and EK hash
// allowlists. It is configuration code: verify and appraise stay pure and
// take what it returns. Every file read is bounded.
package trustfiles

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tpmid/tpmid/pkg/common/boundedfile"
	"github.com/tpmid/tpmid/pkg/server/appraise"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// Bounds on what a bundle may hold.
const (
	maxTrustFiles    = 10000   // files in a bundle directory
	maxTrustFileSize = 1 << 20 // each file
	maxAllowlistFile = 16 << 20
)

// failf is a configuration error (verify.ReasonEKTrustConfig).
func failf(format string, a ...any) error {
	return &verify.Error{Reason: verify.ReasonEKTrustConfig, Err: fmt.Errorf(format, a...)}
}

// LoadEKTrust reads a PEM bundle file, or a directory of .pem/.crt/.cer/.der
// files (PEM, possibly several blocks, or DER; subdirectories included), and
// sorts it with verify.NewEKTrust: self-signed certificates become roots,
// the others intermediates. Unparsable files, a bundle without certificates,
// or one without any root are errors (verify.ReasonEKTrustConfig).
func LoadEKTrust(path string) (*verify.EKTrust, error) {
	certs, err := LoadCertificates(path)
	if err != nil {
		return nil, err
	}
	return verify.NewEKTrust(certs, path)
}

// LoadAllowlist reads an ek_hash_allowlist file (appraise.ParseAllowlist's
// format: one hex hash a line, # comments).
func LoadAllowlist(path string) (appraise.Allowlist, error) {
	data, err := boundedfile.Read(path, maxAllowlistFile)
	if err != nil {
		return nil, fmt.Errorf("ek_hash_allowlist: %w", err)
	}
	return appraise.ParseAllowlist(data)
}

var trustExts = []string{".pem", ".crt", ".cer", ".der"}

// LoadCertificates reads every certificate of a file or directory the way
// LoadEKTrust does, without sorting roots from intermediates (for
// operator-supplied intermediates). At least one certificate is required.
func LoadCertificates(path string) ([]*x509.Certificate, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, failf("certificate bundle: %v", err)
	}
	files := []string{path}
	if st.IsDir() {
		// Vendor CA sets come as trees (one folder per manufacturer), so
		// the directory is walked; the file count is bounded.
		files = files[:0]
		err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() || !slices.Contains(trustExts, strings.ToLower(filepath.Ext(p))) {
				return nil
			}
			if len(files) == maxTrustFiles {
				return fmt.Errorf("more than %d certificate files", maxTrustFiles)
			}
			files = append(files, p)
			return nil
		})
		if err != nil {
			return nil, failf("certificate bundle %s: %v", path, err)
		}
	}
	var out []*x509.Certificate
	for _, f := range files {
		certs, err := readCertFile(f)
		if err != nil {
			return nil, failf("%s: %v", f, err)
		}
		out = append(out, certs...)
	}
	if len(out) == 0 {
		return nil, failf("certificate bundle %s holds no certificate", path)
	}
	return out, nil
}

func readCertFile(path string) ([]*x509.Certificate, error) {
	b, err := boundedfile.Read(path, maxTrustFileSize)
	if err != nil {
		return nil, err
	}
	if !bytes.Contains(b, []byte("-----BEGIN")) {
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return nil, err
		}
		return []*x509.Certificate{c}, nil
	}
	// Bundles made with cat from files lacking a final newline glue an END
	// line to the next BEGIN line; pem.Decode would then skip both.
	b = bytes.ReplaceAll(b, []byte("----------BEGIN "), []byte("-----\n-----BEGIN "))
	var out []*x509.Certificate
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return out, nil
}

// maxHashDirFiles bounds the entries read from a hash_path directory.
const maxHashDirFiles = 1 << 20

// LoadHashDir reads spire-tpm-plugin's hash_path: a directory whose files
// are named by EK hash (their content is ignored). Every entry named by a
// hex SHA-256 (either case) is allowlisted; other names, subdirectories and
// hidden files are ignored, as spire-tpm-plugin ignores them.
func LoadHashDir(path string) (appraise.Allowlist, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("hash_path: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("hash_path: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("hash_path: %s is not a directory of files named by EK hash (for a file of hashes use ek_hash_allowlist)", path)
	}
	names, err := f.Readdirnames(maxHashDirFiles + 1)
	if err != nil && len(names) == 0 && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("hash_path: %w", err)
	}
	if len(names) > maxHashDirFiles {
		return nil, fmt.Errorf("hash_path: %s has more than %d entries", path, maxHashDirFiles)
	}
	out := appraise.Allowlist{}
	for _, n := range names {
		b, err := hex.DecodeString(n)
		if err != nil || len(b) != 32 {
			continue
		}
		out[hex.EncodeToString(b)] = struct{}{}
	}
	return out, nil
}
