package store

import (
	"context"
	"fmt"
	"strings"
)

// Open opens the store named by dsn: "postgres://..." or
// "postgresql://..." is PostgreSQL (see OpenPostgres); anything else is the
// path of a SQLite file, optionally prefixed "sqlite://" (see OpenSQLite).
// The schema is migrated to this binary's version before Open returns.
func Open(ctx context.Context, dsn string) (Store, error) {
	switch {
	case dsn == "":
		return nil, fmt.Errorf("store: %w: empty DSN", ErrInvalid)
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return OpenPostgres(ctx, dsn)
	}
	return OpenSQLite(ctx, strings.TrimPrefix(dsn, "sqlite://"))
}
