package verify

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
)

// testCerts reads the certificates of a real-data file or folder (PEM or
// DER). The operator-facing loader is package trustfiles, which imports
// this package; tests here cannot use it.
func testCerts(path string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	err := filepath.WalkDir(path, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if !bytes.Contains(b, []byte("-----BEGIN")) {
			c, err := x509.ParseCertificate(b)
			if err == nil {
				out = append(out, c)
			}
			return nil
		}
		for blk, rest := pem.Decode(b); blk != nil; blk, rest = pem.Decode(rest) {
			if c, err := x509.ParseCertificate(blk.Bytes); blk.Type == "CERTIFICATE" && err == nil {
				out = append(out, c)
			}
		}
		return nil
	})
	if err == nil && len(out) == 0 {
		err = os.ErrNotExist
	}
	return out, err
}

func testTrust(path string) (*EKTrust, error) {
	certs, err := testCerts(path)
	if err != nil {
		return nil, err
	}
	return NewEKTrust(certs, path)
}
