package main

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tpmid/tpmid/pkg/server/store"
)

// TestAttestationsList: filters by host, EK, --since (time and duration)
// and --limit, newest first, in the documented JSON form.
func TestAttestationsList(t *testing.T) {
	db := newDB(t)
	now := time.Now().UTC().Truncate(time.Second)
	withStore(t, db, func(ctx context.Context, tx store.Tx) error {
		for _, a := range []store.Attempt{
			{Time: now.Add(-72 * time.Hour), EKHash: hexOf('a'), Hostname: "web1", Server: "s1", Outcome: store.OutcomeAdmitted, Profile: "p@1"},
			{Time: now.Add(-2 * time.Hour), EKHash: hexOf('b'), Hostname: "db1", Server: "s2", Outcome: store.OutcomeRefused, Reasons: []string{"ek_revoked: EK is revoked"}},
			{Time: now.Add(-1 * time.Hour), EKHash: hexOf('a'), Hostname: "web1", Server: "s1", Outcome: store.OutcomeRefused, Reasons: []string{"profile_mismatch: x\nsecond line"}},
			{Time: now.Add(-30 * time.Minute), EKHash: hexOf('c'), Hostname: "claimed", Server: "s2", Outcome: store.OutcomeAdmitted},
		} {
			if err := tx.AppendAttempt(ctx, &a); err != nil {
				return err
			}
		}
		return nil
	})
	tests := []struct {
		name string
		args []string
		want []int64 // attempt IDs, newest first
	}{
		{"all", nil, []int64{4, 3, 2, 1}},
		{"host", []string{"--host", "WEB1"}, []int64{3, 1}},
		{"ek", []string{"--ek", hexOf('b')}, []int64{2}},
		{"since duration", []string{"--since", "24h"}, []int64{4, 3, 2}},
		{"since days", []string{"--since", "4d"}, []int64{4, 3, 2, 1}},
		{"since time", []string{"--since", now.Add(-90 * time.Minute).Format(time.RFC3339)}, []int64{4, 3}},
		{"limit", []string{"--limit", "2"}, []int64{4, 3}},
		{"host and since", []string{"--host", "web1", "--since", "48h"}, []int64{3}},
		{"no match", []string{"--host", "nosuch"}, []int64{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runCmd(t, newAttestationsCmd(), append([]string{"list", "--store", db, "--json"}, tt.args...)...)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			var got []attemptJSON
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			ids := []int64{}
			for _, a := range got {
				ids = append(ids, a.ID)
				if a.Reasons == nil {
					t.Errorf("attempt %d: reasons null, want []", a.ID)
				}
			}
			if !slices.Equal(ids, tt.want) {
				t.Errorf("IDs %v, want %v", ids, tt.want)
			}
		})
	}

	out, err := runCmd(t, newAttestationsCmd(), "list", "--store", db, "--json", "--ek", hexOf('b'))
	if err != nil {
		t.Fatal(err)
	}
	var raw []map[string]json.RawMessage
	json.Unmarshal([]byte(out), &raw)
	if got := sortedKeysOf(raw[0]); !slices.Equal(got, []string{"ek_hash", "hostname", "id", "outcome", "profile", "reasons", "server", "time"}) {
		t.Errorf("keys %v", got)
	}
	var a attemptJSON
	json.Unmarshal(mustMarshal(t, raw[0]), &a)
	if a.Hostname != "db1" || a.Server != "s2" || a.Outcome != "refused" || !slices.Equal(a.Reasons, []string{"ek_revoked: EK is revoked"}) || !a.Time.Equal(now.Add(-2*time.Hour)) {
		t.Errorf("attempt %+v", a)
	}

	out, err = runCmd(t, newAttestationsCmd(), "list", "--store", db, "--limit", "3")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[2], "profile_mismatch: x second line") ||
		!strings.Contains(lines[4], "the newest 3") {
		t.Errorf("text:\n%s", out)
	}
	for _, bad := range [][]string{{"--since", "yesterday"}, {"--ek", "abc"}, {"--limit", "-1"}} {
		if _, err := runCmd(t, newAttestationsCmd(), append([]string{"list", "--store", db}, bad...)...); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
