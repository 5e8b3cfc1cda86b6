package store

import (
	"context"
	"database/sql"
	"sync"
)

// stmtCache keeps one prepared statement per query text on one *sql.DB
// (SQLite: modernc.org/sqlite parses every statement it is given afresh,
// about a tenth of a loaded server's CPU; pgx caches statements itself).
// database/sql prepares each statement once per connection, lazily, and
// binds it to a transaction with Tx.StmtContext.
type stmtCache struct {
	db   *sql.DB
	mu   sync.Mutex
	m    map[string]*sql.Stmt
	todo map[string]bool // seen, not yet prepared
}

func newStmtCache(db *sql.DB) *stmtCache { return &stmtCache{db: db, m: map[string]*sql.Stmt{}} }

// stmt returns q bound to tx if q is prepared, else nil, and then notes q
// for prepare. Preparing needs a connection of its own, and SQLite's
// writer has one, held by tx: statements are prepared between
// transactions (prepare), never inside one. The store's queries are a
// fixed set of literals, so the cache is bounded by the source.
func (c *stmtCache) stmt(ctx context.Context, tx *sql.Tx, q string) *sql.Stmt {
	c.mu.Lock()
	st, ok := c.m[q]
	if !ok {
		if c.todo == nil {
			c.todo = map[string]bool{}
		}
		c.todo[q] = true
	}
	c.mu.Unlock()
	if !ok {
		return nil
	}
	return tx.StmtContext(ctx, st)
}

// prepare prepares the queries noted since the last call. Call it with no
// transaction of this DB open in the calling goroutine. A failure leaves
// the query to be sent as text.
func (c *stmtCache) prepare(ctx context.Context) {
	c.mu.Lock()
	todo := c.todo
	c.todo = nil
	c.mu.Unlock()
	for q := range todo {
		st, err := c.db.PrepareContext(ctx, q)
		if err != nil {
			continue
		}
		c.mu.Lock()
		if _, ok := c.m[q]; ok {
			st.Close()
		} else {
			c.m[q] = st
		}
		c.mu.Unlock()
	}
}

func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for q, st := range c.m {
		st.Close()
		delete(c.m, q)
	}
}
