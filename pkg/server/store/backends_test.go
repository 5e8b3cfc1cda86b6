package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// The same tests run against both backends. SQLite always runs, in a
// t.TempDir() file. PostgreSQL runs on a fresh database (tpmid_test_<random>,
// dropped at cleanup) of the server named by TPMID_TEST_POSTGRES (default
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable, a role that
// may CREATE DATABASE); when that server is unreachable the PostgreSQL half
// is skipped, unless TPMID_REQUIRE_POSTGRES=1, which makes it fail.

const defaultPostgresAdmin = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

func postgresAdminDSN() string {
	if v := os.Getenv("TPMID_TEST_POSTGRES"); v != "" {
		return v
	}
	return defaultPostgresAdmin
}

var pgProbe struct {
	once sync.Once
	err  error
}

// requirePostgres skips (or, with TPMID_REQUIRE_POSTGRES=1, fails) tb when
// the test PostgreSQL server is unreachable.
func requirePostgres(tb testing.TB) {
	tb.Helper()
	pgProbe.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		db, err := sql.Open("pgx", postgresAdminDSN())
		if err == nil {
			err = db.PingContext(ctx)
			db.Close()
		}
		pgProbe.err = err
	})
	if pgProbe.err == nil {
		return
	}
	if os.Getenv("TPMID_REQUIRE_POSTGRES") == "1" {
		tb.Fatalf("PostgreSQL is required (TPMID_REQUIRE_POSTGRES=1) but %s is unreachable: %v", redact(postgresAdminDSN()), pgProbe.err)
	}
	tb.Skipf("PostgreSQL half skipped: %s is unreachable (%v); set TPMID_TEST_POSTGRES to a server, or TPMID_REQUIRE_POSTGRES=1 to fail instead", redact(postgresAdminDSN()), pgProbe.err)
}

func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "TPMID_TEST_POSTGRES"
	}
	return u.Redacted()
}

// newPostgresDB creates an empty database, dropped at cleanup, and returns
// its DSN.
func newPostgresDB(tb testing.TB) string {
	tb.Helper()
	requirePostgres(tb)
	admin := postgresAdminDSN()
	var rnd [8]byte
	rand.Read(rnd[:])
	name := "tpmid_test_" + hex.EncodeToString(rnd[:])
	db, err := sql.Open("pgx", admin)
	if err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		db.Close()
		tb.Fatalf("create database: %v", err)
	}
	tb.Cleanup(func() {
		defer db.Close()
		if _, err := db.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		tb.Fatalf("TPMID_TEST_POSTGRES must be a postgres:// URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// backend is one backend under test: dsn names a fresh, empty store.
type backend struct {
	name string
	dsn  string
}

// open opens b's store, closed at cleanup.
func (b backend) open(tb testing.TB) Store {
	tb.Helper()
	s, err := Open(context.Background(), b.dsn)
	if err != nil {
		tb.Fatalf("open %s: %v", b.name, err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

var backendNames = []string{"sqlite", "postgres"}

func newBackend(tb testing.TB, name string) backend {
	tb.Helper()
	switch name {
	case "sqlite":
		return backend{name, "sqlite://" + filepath.Join(tb.TempDir(), "tpmid.db")}
	case "postgres":
		return backend{name, newPostgresDB(tb)}
	}
	tb.Fatalf("unknown backend %q", name)
	return backend{}
}

// forEachBackend runs f as a subtest per backend, each on a fresh store.
func forEachBackend(t *testing.T, f func(t *testing.T, b backend, s Store)) {
	t.Helper()
	for _, name := range backendNames {
		t.Run(name, func(t *testing.T) {
			t.Parallel() // every subtest has its own file or database
			b := newBackend(t, name)
			f(t, b, b.open(t))
		})
	}
}

// ek returns a valid EK hash derived from s.
func ek(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func update(t testing.TB, s Store, fn func(Tx) error) {
	t.Helper()
	if err := s.Update(context.Background(), fn); err != nil {
		t.Fatalf("update: %v", err)
	}
}

func view(t testing.TB, s Store, fn func(Tx) error) {
	t.Helper()
	if err := s.View(context.Background(), fn); err != nil {
		t.Fatalf("view: %v", err)
	}
}
