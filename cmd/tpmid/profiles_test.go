package main

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/tpmid/tpmid/pkg/server/profile"
	"github.com/tpmid/tpmid/pkg/server/store"
)

// TestProfilesManage: list and show in the documented JSON form; assign
// and unassign by host and by group; retire, with its warning when the host
// is left without a profile; and their errors.
func TestProfilesManage(t *testing.T) {
	db := newDB(t)
	runCmd(t, newHostsCmd(), "enroll", "--store", db, "--hostname", "web1", "--ek-hash", hexOf('a'), "--group", "prod")
	runCmd(t, newHostsCmd(), "enroll", "--store", db, "--hostname", "web2", "--ek-hash", hexOf('b'), "--group", "prod")
	withStore(t, db, func(ctx context.Context, tx store.Tx) error {
		for _, n := range []string{"base", "base", "kernel-6", "own"} {
			if _, err := tx.PutProfile(ctx, store.Profile{Name: n, Body: mustProfileBody(t, n)}); err != nil {
				return err
			}
		}
		h, err := tx.HostByEK(ctx, hexOf('a'))
		if err != nil {
			return err
		}
		h.Profiles = []string{"own"}
		return tx.UpdateHost(ctx, h)
	})
	run := func(args ...string) (string, error) {
		return runCmd(t, newProfilesCmd(), append(args[:1:1], append([]string{"--store", db}, args[1:]...)...)...)
	}
	steps := []struct {
		args    []string
		wantOut string
		wantErr string
	}{
		{[]string{"assign", "base", "--group", "prod"}, "assigned base to group prod", ""},
		{[]string{"assign", "kernel-6", "--host", "WEB1"}, "assigned kernel-6 to host web1", ""},
		{[]string{"assign", "kernel-6", "--host", "later"}, "note: no host later is enrolled yet", ""},
		{[]string{"assign", "nosuch", "--group", "prod"}, "", `no profile "nosuch"`},
		{[]string{"assign", "base", "--group", "prod", "--host", "web1"}, "", "exactly one of --host, --group"},
		{[]string{"assign", "base"}, "", "exactly one of --host, --group"},
		{[]string{"assign", "base", "--host", "bad_name"}, "", "not a valid host name"},
		{[]string{"retire", "base", "--host", "web1"}, "retired base for web1", ""},
		{[]string{"retire", "base", "--host", "web1"}, "base was already retired for web1", ""},
		{[]string{"retire", "nosuch", "--host", "web1"}, "", `no profile "nosuch"`},
		{[]string{"retire", "base", "--host", "nosuch"}, "", "no host nosuch"},
		{[]string{"retire", "base"}, "", "--host is required"},
		{[]string{"unassign", "kernel-6", "--host", "later"}, "unassigned kernel-6 from host later", ""},
		{[]string{"unassign", "kernel-6", "--host", "later"}, "", "profile kernel-6 is not assigned to host later"},
	}
	for _, s := range steps {
		out, err := run(s.args...)
		if s.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), s.wantErr) {
				t.Errorf("%v: error %v, want %q", s.args, err, s.wantErr)
			}
			continue
		}
		if err != nil || !strings.Contains(out, s.wantOut) {
			t.Errorf("%v: %v, output %q, want %q", s.args, err, out, s.wantOut)
		}
	}

	out, err := run("list", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var raw []map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, r := range raw {
		if got := sortedKeysOf(r); !slices.Equal(got, []string{"created_at", "groups", "hosts", "name", "retired_by", "version"}) {
			t.Errorf("keys %v", got)
		}
	}
	var list []profileJSON
	json.Unmarshal([]byte(out), &list)
	type use struct {
		version                  int
		hosts, groups, retiredBy []string
	}
	got := map[string]use{}
	for _, p := range list {
		got[p.Name] = use{p.Version, p.Hosts, p.Groups, p.RetiredBy}
	}
	want := map[string]use{
		"base":     {2, []string{}, []string{"prod"}, []string{"web1"}},
		"kernel-6": {1, []string{"web1"}, []string{}, []string{}},
		"own":      {1, []string{"web1"}, []string{}, []string{}},
	}
	for n, w := range want {
		g := got[n]
		if g.version != w.version || !slices.Equal(g.hosts, w.hosts) || !slices.Equal(g.groups, w.groups) || !slices.Equal(g.retiredBy, w.retiredBy) {
			t.Errorf("%s: %+v, want %+v", n, g, w)
		}
	}
	if len(list) != 3 {
		t.Errorf("%d profiles", len(list))
	}

	out, err = run("show", "base", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var show profileJSON
	if err := json.Unmarshal([]byte(out), &show); err != nil {
		t.Fatal(err)
	}
	if p, err := profile.ParseProfile(show.Body); err != nil || p.Name != "base" || show.Version != 2 {
		t.Errorf("show body %s: %v", show.Body, err)
	}
	out, err = run("show", "base")
	if err != nil || !strings.Contains(out, "profile:    base@2") || !strings.Contains(out, `"secure_boot": "required"`) {
		t.Errorf("show text: %v\n%s", err, out)
	}
	if _, err := run("show", "nosuch"); err == nil || !strings.Contains(err.Error(), `no profile "nosuch"`) {
		t.Errorf("show nosuch: %v", err)
	}

	// web1: own + kernel-6 (host) + base (group, retired). Taking away its
	// own and kernel-6 leaves nothing: every boot would be admitted.
	if out, err := run("unassign", "own", "--host", "web1"); err != nil || strings.Contains(out, "warning") {
		t.Errorf("unassign own: %v %q", err, out)
	}
	out, err = run("unassign", "kernel-6", "--host", "web1")
	if err != nil || !strings.Contains(out, "warning: web1 has no profile left: every boot state is admitted") {
		t.Errorf("unassign last: %v %q", err, out)
	}
	if h := hostIn(t, db, hexOf('a')); len(h.Profiles) != 0 || !slices.Equal(h.Retired, []string{"base"}) {
		t.Errorf("web1 profiles %v retired %v", h.Profiles, h.Retired)
	}
	// web2 has base from prod only: retiring it warns.
	out, err = run("retire", "base", "--host", hexOf('b'))
	if err != nil || !strings.Contains(out, "warning: web2 has no profile left") {
		t.Errorf("retire last: %v %q", err, out)
	}
	if out, err := run("unassign", "base", "--group", "prod"); err != nil || !strings.Contains(out, "unassigned base from group prod") {
		t.Errorf("unassign group: %v %q", err, out)
	}
	if out, err := run("list"); err != nil || !strings.Contains(out, "NAME") || !strings.Contains(out, "kernel-6") {
		t.Errorf("list text: %v\n%s", err, out)
	}
}

// TestProfilesCaptureRefused: capture's input errors change nothing.
func TestProfilesCaptureRefused(t *testing.T) {
	db := newDB(t)
	arch := realLogPath(t, logArch)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--eventlog", arch, "--name", "bad name"}, "invalid profile"},
		{[]string{"--eventlog", arch, "--name", "p", "--bank", "sha384"}, "no complete sha384 bank"},
		{[]string{"--eventlog", arch, "--name", "p", "--bank", "md5"}, "--bank"},
		{[]string{"--eventlog", arch, "--name", "p", "--pcrs", "0-3", "--boot-apps"}, "PCR4"},
		{[]string{"--eventlog", arch, "--name", "p", "--pcrs", "99"}, "--pcrs"},
		{[]string{"--eventlog", arch, "--name", "p", "--out", "-", "--store", db}, "drop --store"},
		{[]string{"--eventlog", db, "--name", "p"}, ""},
	} {
		args := append([]string{"capture"}, tc.args...)
		if !slices.Contains(tc.args, "--store") {
			args = append(args, "--store", db)
		}
		if _, err := runCmd(t, newProfilesCmd(), args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
	var n int
	withStore(t, db, func(ctx context.Context, tx store.Tx) error {
		ps, err := tx.ListProfiles(ctx)
		n = len(ps)
		return err
	})
	if n != 0 {
		t.Errorf("%d profiles stored by refused captures", n)
	}
	out, err := runCmd(t, newProfilesCmd(), "capture", "--eventlog", arch, "--name", "p", "--out", "-")
	if err != nil {
		t.Fatal(err)
	}
	if p, err := profile.ParseProfile([]byte(out)); err != nil || p.Name != "p" {
		t.Errorf("--out -: %v\n%s", err, out)
	}
}
