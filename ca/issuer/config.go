package issuer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tpmid/tpmid/ca/keys"
)

// ConfigFile is the name of the CA's configuration in its directory.
const ConfigFile = "ca.json"

// Files the CA writes besides the per-generation intermediates: the root,
// and two outputs rewritten from ca.json after every change (the CA itself
// reads only the files ca.json names).
const (
	RootCertFile          = "root.crt"
	IntermediateCertFile  = "intermediate.crt"  // the current intermediate
	IntermediatesCertFile = "intermediates.crt" // every intermediate in the bundle, current first
)

// ConfigFormat is the version of ca.json this package reads and writes.
const ConfigFormat = 1

// maxConfigSize bounds ca.json.
const maxConfigSize = 1 << 20

// Defaults.
const (
	DefaultName                 = "tpmid CA"
	DefaultRootLifetime         = Duration(10 * Year)
	DefaultIntermediateLifetime = Duration(Year)
	DefaultAKLifetime           = Duration(24 * time.Hour)
	DefaultAKBackdate           = Duration(time.Minute)
)

// Config is ca.json. File paths are relative to the CA directory (or
// absolute); key URIs are go.step.sm/crypto KMS key URIs (a relative
// softkms path is relative to the CA directory too).
type Config struct {
	Format       int            `json:"format"`
	Name         string         `json:"name"`
	KMS          string         `json:"kms"`
	KeyAlgorithm keys.Algorithm `json:"keyAlgorithm"`
	Root         CertKey        `json:"root"`
	Intermediate CertKey        `json:"intermediate"`
	// Previous intermediates stay in the bundle (intermediates.crt,
	// CA.Intermediates) after a rotation, so that the AK certificates they
	// issued keep verifying; they no longer issue. Newest first; an
	// expired one is dropped at the next rotation.
	Previous []CertKey `json:"previousIntermediates,omitempty"`
	AK       AKConfig  `json:"ak"`
}

// CertKey is a CA certificate and the URI of its key.
type CertKey struct {
	Certificate string   `json:"certificate"`
	Key         string   `json:"key"`
	Lifetime    Duration `json:"lifetime,omitzero"`
	// Retired is when a previous intermediate was replaced.
	Retired *time.Time `json:"retired,omitempty"`
}

// AKConfig is how AK certificates are issued.
type AKConfig struct {
	// Lifetime of an AK certificate when the request names none: 24h.
	Lifetime Duration `json:"lifetime"`
	// Backdate is subtracted from notBefore against clock skew: 1m.
	Backdate Duration `json:"backdate"`
	// Template is the file of an x509util template (go.step.sm/crypto
	// x509util JSON template) that replaces the built-in one; "" is the
	// built-in template (DefaultAKTemplate). Whatever it says, an issued
	// certificate must still meet the AK profile, or it is refused.
	Template string `json:"template,omitempty"`
}

// Validate checks a configuration read from disk.
func (c *Config) Validate() error {
	switch {
	case c.Format != ConfigFormat:
		return fmt.Errorf("format %d, want %d", c.Format, ConfigFormat)
	case c.Root.Certificate == "" || c.Root.Key == "":
		return errors.New("root needs certificate and key")
	case c.Intermediate.Certificate == "" || c.Intermediate.Key == "":
		return errors.New("intermediate needs certificate and key")
	case c.AK.Lifetime <= 0:
		return fmt.Errorf("ak.lifetime %s must be positive", c.AK.Lifetime)
	case c.AK.Backdate < 0 || c.AK.Backdate > Duration(time.Hour):
		return fmt.Errorf("ak.backdate %s must be within [0, 1h]", c.AK.Backdate)
	}
	if _, err := keys.ParseAlgorithm(string(c.KeyAlgorithm)); err != nil {
		return err
	}
	for i, p := range c.Previous {
		if p.Certificate == "" {
			return fmt.Errorf("previousIntermediates[%d] needs a certificate", i)
		}
	}
	return nil
}

// ReadConfig reads and validates DIR/ca.json, strictly (unknown fields are
// errors).
func ReadConfig(dir string) (*Config, error) {
	path := filepath.Join(dir, ConfigFile)
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no CA in %s (%s is missing: run tpmid ca init --dir %s)", dir, ConfigFile, dir)
		}
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxConfigSize {
		return nil, fmt.Errorf("%s is over %d bytes", path, maxConfigSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%s: trailing data after the JSON object", path)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &c, nil
}

// writeConfig writes DIR/ca.json atomically (a temporary file renamed over
// it), mode 0600: a KMS URI may carry a PIN.
func writeConfig(dir string, c *Config) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, ConfigFile), append(b, '\n'), 0o600)
}

// writeFileAtomic writes b to a temporary file in path's directory and
// renames it over path.
func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename this fails harmlessly
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// writeFileExclusive writes b to a new file; an existing one is an error.
func writeFileExclusive(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// resolve makes a ca.json path absolute against dir.
func resolve(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// Year is 365 days, the unit of "10y".
const Year = 365 * 24 * time.Hour

// Duration is a time.Duration written as "10y", "30d", "24h", "90m" or any
// Go duration; in ca.json it is such a string.
type Duration time.Duration

// ParseDuration reads "10y" (365-day years), "30d" (days) or a Go
// duration ("24h", "1h30m").
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	for _, u := range []struct {
		suffix string
		unit   time.Duration
	}{{"y", Year}, {"d", 24 * time.Hour}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseUint(n, 10, 32)
			if err != nil || v == 0 || v > 1000*uint64(Year/u.unit) {
				return 0, fmt.Errorf("duration %q: want a positive whole number of %s", s, map[string]string{"y": "years", "d": "days"}[u.suffix])
			}
			return Duration(time.Duration(v) * u.unit), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q: want e.g. 10y, 30d, 24h or 90m", s)
	}
	return Duration(d), nil
}

func (d Duration) String() string {
	t := time.Duration(d)
	switch {
	case t != 0 && t%Year == 0:
		return strconv.FormatInt(int64(t/Year), 10) + "y"
	case t != 0 && t%time.Hour == 0:
		return strconv.FormatInt(int64(t/time.Hour), 10) + "h"
	case t != 0 && t%time.Minute == 0:
		return strconv.FormatInt(int64(t/time.Minute), 10) + "m"
	}
	return t.String()
}

// Std is the time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string such as \"24h\" or \"1y\"")
	}
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = v
	return nil
}
