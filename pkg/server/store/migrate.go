package store

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// Schema migrations: numbered SQL files per dialect, embedded in the binary
// and applied in order at open. schema_version records each one applied.
// Never edit a released file: add the next number.

//go:embed migrations/sqlite/*.sql migrations/postgres/*.sql
var migrationFS embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns dialect's migrations in version order.
func migrations(dialect string) ([]migration, error) {
	dir := path.Join("migrations", dialect)
	ents, err := fs.ReadDir(migrationFS, dir)
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range ents {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 || !strings.HasSuffix(e.Name(), ".sql") {
			return nil, fmt.Errorf("store: migration %s/%s: name is not NNNN_name.sql", dir, e.Name())
		}
		b, err := fs.ReadFile(migrationFS, path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("store: migrations %s: expected version %d, found %s", dir, i+1, m.name)
		}
	}
	return ms, nil
}

// SchemaVersion is the schema version this binary writes.
func SchemaVersion() int {
	ms, err := migrations("sqlite")
	if err != nil {
		return 0
	}
	return len(ms)
}

// migrate brings the schema up to date in one transaction. lock is run
// first in that transaction (PostgreSQL: an advisory lock, so servers
// starting together migrate one after the other; SQLite's write
// transaction is already exclusive).
func (s *sqlStore) migrate(ctx context.Context, lock string) error {
	ms, err := migrations(s.d.name)
	if err != nil {
		return err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return s.d.wrap(ctx, "migrate: begin", err)
	}
	defer tx.Rollback()
	if lock != "" {
		if _, err := tx.ExecContext(ctx, lock); err != nil {
			return s.d.wrap(ctx, "migrate: lock", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
	version    integer NOT NULL PRIMARY KEY,
	name       text    NOT NULL,
	applied_at text    NOT NULL
)`); err != nil {
		return s.d.wrap(ctx, "migrate: schema_version", err)
	}
	var cur sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT max(version) FROM schema_version`).Scan(&cur); err != nil {
		return s.d.wrap(ctx, "migrate: read version", err)
	}
	if int(cur.Int64) > len(ms) {
		return fmt.Errorf("store: database schema version %d is newer than this binary's (%d): upgrade tpmid", cur.Int64, len(ms))
	}
	if int(cur.Int64) == len(ms) {
		return nil
	}
	for _, m := range ms[cur.Int64:] {
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			return s.d.wrap(ctx, "migrate: "+m.name, err)
		}
		if _, err := tx.ExecContext(ctx, s.d.rebind(`INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)`),
			m.version, m.name, s.now().Format(timeFormat)); err != nil {
			return s.d.wrap(ctx, "migrate: record "+m.name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return s.d.wrap(ctx, "migrate: commit", err)
	}
	return nil
}
