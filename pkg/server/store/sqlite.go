package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Connection settings of the SQLite backend: WAL (readers do not block the
// writer), 5 s busy timeout (another process holding the write lock),
// foreign keys on, synchronous FULL (a committed attestation survives a
// power cut: counters must not roll back).
const sqliteParams = "_busy_timeout=5000&_foreign_keys=1&_journal_mode=WAL&_synchronous=FULL"

var sqliteDialect = &dialect{
	name: "sqlite",
	sets: `(SELECT json_group_array(g.grp) FROM host_groups g WHERE g.ek_hash = h.ek_hash),
	(SELECT json_group_array(p.profile) FROM host_profiles p WHERE p.ek_hash = h.ek_hash),
	(SELECT json_group_array(r.profile) FROM host_retired r WHERE r.ek_hash = h.ek_hash)`,
	classify: sqliteClassify,
	timeArg:  func(t time.Time) any { return t.UTC().Truncate(time.Microsecond).Format(timeFormat) },
}

// OpenSQLite opens (creating it with mode 0600, and its directory with
// mode 0700, when absent) the SQLite database at path and brings its
// schema up to date. An existing file keeps its mode.
func OpenSQLite(ctx context.Context, path string) (Store, error) {
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") || strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("store: sqlite: %w: %q is not a plain file path", ErrInvalid, path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("store: sqlite: %w", err)
	}
	dir := filepath.Dir(abs)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("store: sqlite: %w", err)
		}
	}
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: sqlite: %w: %w", ErrUnavailable, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("store: sqlite: %w", err)
	}
	// One writer connection whose transactions begin IMMEDIATE: writers
	// queue for the lock instead of failing to upgrade a read lock.
	w, err := sql.Open("sqlite", abs+"?"+sqliteParams+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("store: sqlite: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxIdleTime(0)
	w.SetConnMaxLifetime(0)
	s := newSQLStore(sqliteDialect, w, nil, nil, nil)
	// Servers (or a server and the CLI) opening one new file at once race
	// for the lock that switching to WAL takes, which the busy timeout does
	// not cover: a busy first open is retried for a few seconds.
	for attempt := 0; ; attempt++ {
		err = s.migrate(ctx, "")
		if err == nil {
			break
		}
		var e *sqlite.Error
		if attempt == 50 || !errors.As(err, &e) || e.Code()&0xff != sqlite3.SQLITE_BUSY {
			w.Close()
			return nil, err
		}
		select {
		case <-ctx.Done():
			w.Close()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	// Readers: several connections that cannot write.
	r, err := sql.Open("sqlite", abs+"?_busy_timeout=5000&_foreign_keys=1&_query_only=1")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("store: sqlite: %w", err)
	}
	r.SetMaxOpenConns(4)
	r.SetMaxIdleConns(4)
	s.r = r
	s.group = &groupCommit{}
	s.wStmts, s.rStmts = newStmtCache(w), newStmtCache(r)
	return s, nil
}

func sqliteClassify(err error) errClass {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return classOther
	}
	switch e.Code() {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return classConflict
	case sqlite3.SQLITE_CONSTRAINT_CHECK, sqlite3.SQLITE_CONSTRAINT_NOTNULL, sqlite3.SQLITE_CONSTRAINT_DATATYPE:
		return classInvalid
	}
	switch e.Code() & 0xff {
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN,
		sqlite3.SQLITE_FULL, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PROTOCOL:
		return classUnavailable
	}
	return classOther
}
