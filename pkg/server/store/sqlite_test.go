package store

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestSQLiteFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "tpmid")
	path := filepath.Join(dir, "tpmid.db")
	s, err := Open(bg, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	update(t, s, func(tx Tx) error { return tx.CreateHost(bg, sampleHost("a.example")) })
	view(t, s, func(tx Tx) error { _, err := tx.ListHosts(bg); return err })
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{
		{filepath.Dir(dir), 0o700},
		{dir, 0o700},
		{path, 0o600},
		{path + "-wal", 0o600},
		{path + "-shm", 0o600},
	} {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if fi.Mode().Perm() != c.mode {
			t.Errorf("%s: mode %v, want %v", c.path, fi.Mode().Perm(), c.mode)
		}
	}
	ss := s.(*sqlStore)
	for _, c := range []struct{ pragma, want string }{
		{"journal_mode", "wal"},
		{"foreign_keys", "1"},
		{"busy_timeout", "5000"},
		{"synchronous", "2"},
	} {
		var got string
		if err := ss.w.QueryRowContext(bg, "PRAGMA "+c.pragma).Scan(&got); err != nil || got != c.want {
			t.Errorf("PRAGMA %s = %q (%v), want %q", c.pragma, got, err, c.want)
		}
	}
	var q string
	if err := ss.r.QueryRowContext(bg, "PRAGMA query_only").Scan(&q); err != nil || q != "1" {
		t.Errorf("reader query_only = %q (%v)", q, err)
	}
}

func TestOpenDSN(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		dsn  string
		ok   bool
		want error
	}{
		{filepath.Join(dir, "plain.db"), true, nil},
		{"sqlite://" + filepath.Join(dir, "prefixed.db"), true, nil},
		{"", false, ErrInvalid},
		{"sqlite://", false, ErrInvalid},
		{":memory:", false, ErrInvalid},
		{"file:x.db?mode=memory", false, ErrInvalid},
		{filepath.Join(dir, "q?x.db"), false, ErrInvalid},
		{filepath.Join(dir, "plain.db", "under-a-file.db"), false, nil},
	} {
		s, err := Open(bg, tc.dsn)
		if tc.ok {
			if err != nil {
				t.Errorf("Open(%q): %v", tc.dsn, err)
				continue
			}
			if _, ok := s.(*sqlStore); !ok || s.(*sqlStore).d != sqliteDialect {
				t.Errorf("Open(%q) is not SQLite", tc.dsn)
			}
			s.Close()
			continue
		}
		if err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", tc.dsn)
		} else if tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("Open(%q): %v, want %v", tc.dsn, err, tc.want)
		}
	}
}

func TestDSNRules(t *testing.T) {
	for _, tc := range []struct {
		dsn, path, redacted string
		sqlite              bool
	}{
		{"/var/lib/tpmid/tpmid.db", "/var/lib/tpmid/tpmid.db", "/var/lib/tpmid/tpmid.db", true},
		{"sqlite:///tmp/a.db", "/tmp/a.db", "sqlite:///tmp/a.db", true},
		{"postgres://tpmid:secret@db/tpmid", "", "postgres://tpmid:xxxxx@db/tpmid", false},
		{"postgresql://tpmid@db/tpmid", "", "postgresql://tpmid@db/tpmid", false},
	} {
		path, ok := SQLitePath(tc.dsn)
		if ok != tc.sqlite || path != tc.path {
			t.Errorf("SQLitePath(%q) = %q, %v", tc.dsn, path, ok)
		}
		if got := RedactDSN(tc.dsn); got != tc.redacted {
			t.Errorf("RedactDSN(%q) = %q, want %q", tc.dsn, got, tc.redacted)
		}
	}
}
