package store

import (
	"context"
	"fmt"
	"net/url"
	"strings"
)

// Open opens the store named by dsn: "postgres://..." or
// "postgresql://..." is PostgreSQL (see OpenPostgres); anything else is the
// path of a SQLite file, optionally prefixed "sqlite://" (see OpenSQLite).
// The schema is migrated to this binary's version before Open returns.
func Open(ctx context.Context, dsn string) (Store, error) {
	if dsn == "" {
		return nil, fmt.Errorf("store: %w: empty DSN", ErrInvalid)
	}
	if path, ok := SQLitePath(dsn); ok {
		return OpenSQLite(ctx, path)
	}
	return OpenPostgres(ctx, dsn)
}

// SQLitePath is Open's rule: anything but a postgres:// or postgresql://
// DSN is the path of a SQLite file, optionally prefixed sqlite://.
func SQLitePath(dsn string) (string, bool) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		return "", false
	}
	return strings.TrimPrefix(dsn, "sqlite://"), true
}

// RedactDSN hides the password of a PostgreSQL DSN, for messages and logs.
func RedactDSN(dsn string) string {
	if _, ok := SQLitePath(dsn); ok {
		return dsn
	}
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
			return u.String()
		}
	}
	return dsn
}
