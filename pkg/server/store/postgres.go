package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

var pgDialect = &dialect{
	name: "postgres",
	pg:   true,
	sets: `(SELECT COALESCE(json_agg(g.grp), '[]')::text FROM host_groups g WHERE g.ek_hash = h.ek_hash),
	(SELECT COALESCE(json_agg(p.profile), '[]')::text FROM host_profiles p WHERE p.ek_hash = h.ek_hash),
	(SELECT COALESCE(json_agg(r.profile), '[]')::text FROM host_retired r WHERE r.ek_hash = h.ek_hash)`,
	classify: pgClassify,
	timeArg:  func(t time.Time) any { return t.UTC().Truncate(time.Microsecond) },
}

// pgMigrateLock serialises schema migrations of servers starting together
// (a transaction-scoped advisory lock; the key is arbitrary but fixed).
const pgMigrateLock = `SELECT pg_advisory_xact_lock(7450104112231957577)`

// OpenPostgres connects to the PostgreSQL database named by dsn (a
// postgres:// URL or a key=value string, as pgx parses it) and brings its
// schema up to date. Update runs REPEATABLE READ (docs/store.md says why
// not SERIALIZABLE), View REPEATABLE READ READ ONLY. Without connect_timeout in dsn, connecting gives up after 10 s.
func OpenPostgres(ctx context.Context, dsn string) (Store, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w: %w", ErrInvalid, err)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = "tpmid"
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(16) // as many as open: under load a smaller idle pool closes and reopens connections
	db.SetConnMaxIdleTime(5 * time.Minute)
	db.SetConnMaxLifetime(time.Hour)
	s := newSQLStore(pgDialect, db, db,
		&sql.TxOptions{Isolation: sql.LevelRepeatableRead},
		&sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err := s.migrate(ctx, pgMigrateLock); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func pgClassify(err error) errClass {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "40001", "40P01":
			// serialization_failure, deadlock_detected.
			return classRetry
		case "23505":
			// unique_violation. The store's statements avoid it (ON
			// CONFLICT DO NOTHING, checks before UPDATE), so one seen here
			// lost a race with a concurrent transaction: rerunning sees the
			// winner's row and answers a clean ErrConflict.
			return classRetry
		case "23502", "23514", "22001", "22021", "22P02":
			// not_null_violation, check_violation, string too long,
			// bad encoding, invalid text representation.
			return classInvalid
		case "57P01", "57P02", "57P03", "25006":
			// admin_shutdown, crash_shutdown, cannot_connect_now,
			// read_only_sql_transaction (a standby after failover).
			return classUnavailable
		}
		switch {
		case strings.HasPrefix(pe.Code, "08"), // connection exception
			strings.HasPrefix(pe.Code, "53"): // insufficient resources
			return classUnavailable
		}
		return classOther
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	switch {
	case errors.As(err, &ce), errors.As(err, &ne),
		errors.Is(err, driver.ErrBadConn), errors.Is(err, pgconn.ErrConnClosed), errors.Is(err, sql.ErrConnDone),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), pgconn.Timeout(err):
		return classUnavailable
	}
	return classOther
}
