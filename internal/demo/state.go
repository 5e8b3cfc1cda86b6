package demo

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"time"

	"github.com/tpmid/tpmid/ca/issuer"

	"github.com/tpmid/tpmid/pkg/common/eventlog"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/server/profile"
	"github.com/tpmid/tpmid/pkg/server/store"
)

// Enrollment is what Enroll put in the store.
type Enrollment struct {
	Hostname string
	Group    string
	Profile  string // name@version
}

// Enroll does what an operator does before a machine joins under
// enrollment = "required": it enrolls node's EK under hostname in group,
// captures the node's measured boot (PCRs 0-7, SHA-256, Secure Boot
// required when it was on) as a profile, and assigns that profile to the
// group. The store at dsn is the one the server plugin will open.
func Enroll(ctx context.Context, dsn string, node *Node, hostname, group, profileName string) (*Enrollment, error) {
	l, err := eventlog.Parse(node.Boot.Log)
	if err != nil {
		return nil, err
	}
	p, err := profile.Capture(l, profileName, pcrs.SHA256, []int{0, 1, 2, 3, 4, 5, 6, 7}, profile.RequireSecureBootIfEnabled())
	if err != nil {
		return nil, fmt.Errorf("capturing the boot profile: %w", err)
	}
	body, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	st, err := store.Open(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	var stored *store.Profile
	err = st.Update(ctx, func(tx store.Tx) error {
		if err := tx.CreateHost(ctx, &store.Host{EKHash: node.EKHash, Hostname: hostname, Groups: []string{group}, State: store.HostEnrolled}); err != nil {
			return err
		}
		if stored, err = tx.PutProfile(ctx, store.Profile{Name: profileName, Body: body}); err != nil {
			return err
		}
		return tx.Assign(ctx, store.Assignment{Profile: profileName, Group: group})
	})
	if err != nil {
		return nil, fmt.Errorf("enrolling %s: %w", hostname, err)
	}
	return &Enrollment{Hostname: hostname, Group: group, Profile: fmt.Sprintf("%s@%d", stored.Name, stored.Version)}, nil
}

// InitCA creates tpmid's CA in dir (softkms keys in files), as an operator
// does with `tpmid ca init --dir DIR`.
func InitCA(ctx context.Context, dir string) (*x509.Certificate, error) {
	if _, err := issuer.Init(ctx, issuer.InitOptions{Dir: dir}); err != nil {
		return nil, err
	}
	ca, err := issuer.Load(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer ca.Close()
	return ca.Root(), nil
}

// DescribeAKCert reads the chain the agent plugin kept (PEM, leaf first),
// verifies it against the CA in caDir, and summarises the leaf on one line:
// subject, SANs, issuer, expiry.
func DescribeAKCert(ctx context.Context, chainPath, caDir string) (string, error) {
	raw, err := os.ReadFile(chainPath)
	if err != nil {
		return "", err
	}
	var certs []*x509.Certificate
	for blk, rest := pem.Decode(raw); blk != nil; blk, rest = pem.Decode(rest) {
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return "", err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return "", fmt.Errorf("%s holds no certificate", chainPath)
	}
	ca, err := issuer.Load(ctx, caDir)
	if err != nil {
		return "", err
	}
	defer ca.Close()
	f, err := ca.VerifyAK(certs[0], certs[1:], time.Now())
	if err != nil {
		return "", fmt.Errorf("the kept AK certificate does not verify: %w", err)
	}
	subject := certs[0].Subject.String()
	if subject == "" {
		subject = "(empty)"
	}
	return fmt.Sprintf("subject %s; SAN TPM %s/%s/%s, %s, %s; issuer %q; expires %s",
		subject, f.TPM.Manufacturer, f.TPM.Model, f.TPM.Version, f.PermanentIdentifier, f.SPIFFEID,
		certs[0].Issuer.CommonName, certs[0].NotAfter.UTC().Format(time.RFC3339)), nil
}
