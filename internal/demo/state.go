package demo

import (
	"context"
	"encoding/json"
	"fmt"

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
