package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// timeFormat is how the SQLite backend writes times: UTC, fixed width, so
// that text order is time order. PostgreSQL keeps timestamptz.
const timeFormat = "2006-01-02T15:04:05.000000Z"

// errClass is what a driver error means to the store.
type errClass int

const (
	classOther       errClass = iota
	classConflict             // a uniqueness violation that rerunning cannot cure
	classRetry                // a serialisation failure: rerun the transaction
	classUnavailable          // the database cannot be reached or cannot serve now
	classInvalid              // a CHECK or NOT NULL constraint refused the input
)

// dialect is what differs between SQLite and PostgreSQL.
type dialect struct {
	name string
	pg   bool // $n placeholders instead of ?
	// sets is the select-list fragment reading a host's groups, profiles and
	// retired names as three JSON arrays (text), for the hosts row alias h.
	sets     string
	classify func(error) errClass
	timeArg  func(time.Time) any // never called with the zero time
}

// rebind turns ? placeholders into $1, $2... for PostgreSQL. The store's
// SQL never has a ? in a literal.
func (d *dialect) rebind(q string) string {
	if !d.pg {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

// wrap turns a driver error into a store error: the context's error when
// ctx has ended, else the sentinel matching the error's class, keeping the
// driver's error in the chain.
func (d *dialect) wrap(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("store: %s: %w (%v)", op, cerr, err)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	switch d.classify(err) {
	case classConflict, classRetry:
		return fmt.Errorf("store: %s: %w: %w", op, ErrConflict, err)
	case classUnavailable:
		return fmt.Errorf("store: %s: %w: %w", op, ErrUnavailable, err)
	case classInvalid:
		return fmt.Errorf("store: %s: %w: %w", op, ErrInvalid, err)
	}
	return fmt.Errorf("store: %s: %w", op, err)
}

// tArg is the argument for a nullable time column.
func (d *dialect) tArg(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return d.timeArg(t)
}

// sqlStore is both backends: database/sql over modernc.org/sqlite or over
// pgx's stdlib driver.
type sqlStore struct {
	d *dialect
	// w serves Update, r serves View. SQLite: w has one connection that
	// begins IMMEDIATE (one writer, no lock upgrades), r several
	// query_only connections. PostgreSQL: one pool for both.
	w, r         *sql.DB
	wOpts, rOpts *sql.TxOptions
	attempts     int // tries of one Update before ErrConflict
	now          func() time.Time
	retries      atomic.Int64 // serialisation failures retried (for tests)
	// group, when set (SQLite), runs concurrent Updates in shared
	// transactions with one commit (groupcommit.go).
	group *groupCommit
	// wStmts and rStmts, when set (SQLite), cache prepared statements on w
	// and r (stmtcache.go).
	wStmts, rStmts *stmtCache
}

func newSQLStore(d *dialect, w, r *sql.DB, wOpts, rOpts *sql.TxOptions) *sqlStore {
	return &sqlStore{
		d: d, w: w, r: r, wOpts: wOpts, rOpts: rOpts,
		attempts: 5,
		now:      func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) },
	}
}

func (s *sqlStore) Close() error {
	for _, c := range []*stmtCache{s.wStmts, s.rStmts} {
		if c != nil {
			c.close()
		}
	}
	err := s.w.Close()
	if s.r != s.w {
		err = errors.Join(err, s.r.Close())
	}
	return err
}

func (s *sqlStore) Update(ctx context.Context, fn func(Tx) error) error {
	if fn == nil {
		return fmt.Errorf("store: Update: %w: nil function", ErrInvalid)
	}
	if s.group != nil {
		return s.updateGrouped(ctx, fn)
	}
	var last error
	for i := 0; i < s.attempts; i++ {
		if i > 0 {
			// Jittered backoff: 2, 4, 8, 16 ms times [0.5, 1.5).
			d := time.Duration(float64(time.Millisecond<<i) * (0.5 + rand.Float64()))
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("store: update: %w (while retrying after: %v)", ctx.Err(), last)
			case <-t.C:
			}
		}
		retry, err := s.run(ctx, false, fn)
		if !retry {
			return err
		}
		s.retries.Add(1)
		last = err
	}
	return fmt.Errorf("store: update: gave up after %d serialisation failures: %w", s.attempts, last)
}

func (s *sqlStore) View(ctx context.Context, fn func(Tx) error) error {
	if fn == nil {
		return fmt.Errorf("store: View: %w: nil function", ErrInvalid)
	}
	_, err := s.run(ctx, true, fn)
	return err
}

// run runs fn in one transaction; retry reports a serialisation failure
// (then err wraps ErrConflict).
func (s *sqlStore) run(ctx context.Context, readOnly bool, fn func(Tx) error) (retry bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("store: %w", err)
	}
	db, opts := s.w, s.wOpts
	if readOnly {
		db, opts = s.r, s.rOpts
	}
	stx, err := db.BeginTx(ctx, opts)
	if err != nil {
		err = s.d.wrap(ctx, "begin", err)
		return false, err
	}
	t := &sqlTx{s: s, d: s.d, tx: stx, readOnly: readOnly, stmts: s.wStmts}
	if readOnly {
		t.stmts = s.rStmts
	}
	if t.stmts != nil {
		// After the transaction has ended (deferred calls run last first).
		defer t.stmts.prepare(context.WithoutCancel(ctx))
	}
	finished := false
	defer func() {
		t.dead = true
		if !finished {
			_ = stx.Rollback() // also on panic in fn
		}
	}()
	ferr := fn(t)
	t.dead = true
	if t.retry != nil {
		// A statement hit a serialisation failure: the transaction is
		// lost whatever fn made of the error.
		return true, t.retry
	}
	if ferr != nil {
		return false, ferr
	}
	finished = true
	if err := stx.Commit(); err != nil {
		return s.d.classify(err) == classRetry, s.d.wrap(ctx, "commit", err)
	}
	return false, nil
}

// sqlTx implements Tx.
type sqlTx struct {
	s        *sqlStore
	d        *dialect
	tx       *sql.Tx
	readOnly bool
	dead     bool
	retry    error // first serialisation failure
	// isolate, in a group transaction, runs statements in place of the
	// caller's context once they have started (see stmtCtx).
	isolate context.Context
	stmts   *stmtCache // nil: statements are sent as text
	// sets caches each host's groups, profiles and retired names as read or
	// written in this transaction, so UpdateHost writes only what changed.
	sets map[string]*hostSets
}

type hostSets struct{ groups, profiles, retired []string }

func (t *sqlTx) fail(ctx context.Context, op string, err error) error {
	if t.d.classify(err) == classRetry && t.retry == nil && ctx.Err() == nil {
		t.retry = t.d.wrap(ctx, op, err)
		return t.retry
	}
	return t.d.wrap(ctx, op, err)
}

func (t *sqlTx) check(op string, write bool) error {
	if t.dead {
		return fmt.Errorf("store: %s: transaction used after its function returned", op)
	}
	if write && t.readOnly {
		return fmt.Errorf("store: %s: %w: write in a read-only transaction (View)", op, ErrInvalid)
	}
	return nil
}

// stmtCtx is the context a statement runs under. In a group transaction a
// member's context ending mid-statement must not interrupt SQLite's
// connection (that rolls back every member's work): a context already
// ended fails the statement before it reaches the driver, and a started
// statement runs under the batch's own deadline.
func (t *sqlTx) stmtCtx(ctx context.Context) context.Context {
	if t.isolate == nil || ctx.Err() != nil {
		return ctx
	}
	return t.isolate
}

// prepared returns q prepared and bound to the transaction, or nil when
// the backend keeps no statements (PostgreSQL: pgx caches its own) or q is
// not prepared yet; then q goes as text.
func (t *sqlTx) prepared(ctx context.Context, q string) *sql.Stmt {
	if t.stmts == nil {
		return nil
	}
	return t.stmts.stmt(ctx, t.tx, q)
}

func (t *sqlTx) exec(ctx context.Context, op, q string, args ...any) (sql.Result, error) {
	sctx := t.stmtCtx(ctx)
	var r sql.Result
	var err error
	if st := t.prepared(sctx, q); st != nil {
		r, err = st.ExecContext(sctx, args...)
	} else {
		r, err = t.tx.ExecContext(sctx, t.d.rebind(q), args...)
	}
	if err != nil {
		return nil, t.fail(ctx, op, err)
	}
	return r, nil
}

func (t *sqlTx) query(ctx context.Context, op, q string, args ...any) (*sql.Rows, error) {
	sctx := t.stmtCtx(ctx)
	var rows *sql.Rows
	var err error
	if st := t.prepared(sctx, q); st != nil {
		rows, err = st.QueryContext(sctx, args...)
	} else {
		rows, err = t.tx.QueryContext(sctx, t.d.rebind(q), args...)
	}
	if err != nil {
		return nil, t.fail(ctx, op, err)
	}
	return rows, nil
}

func (t *sqlTx) queryRow(ctx context.Context, q string, args ...any) *sql.Row {
	sctx := t.stmtCtx(ctx)
	if st := t.prepared(sctx, q); st != nil {
		return st.QueryRowContext(sctx, args...)
	}
	return t.tx.QueryRowContext(sctx, t.d.rebind(q), args...)
}

// timeScan scans a time column of either backend (time.Time from pgx,
// text from SQLite, NULL) into *t, in UTC.
type timeScan struct{ t *time.Time }

func (s timeScan) Scan(v any) error {
	switch v := v.(type) {
	case nil:
		*s.t = time.Time{}
	case time.Time:
		*s.t = v.UTC()
	case string:
		return s.parse(v)
	case []byte:
		return s.parse(string(v))
	default:
		return fmt.Errorf("store: cannot scan %T as a time", v)
	}
	return nil
}

func (s timeScan) parse(v string) error {
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return fmt.Errorf("store: bad time %q: %w", v, err)
	}
	*s.t = t.UTC()
	return nil
}

// Hosts.

const hostCols = `h.ek_hash, h.hostname, h.ek_public, h.ek_cert, h.state, h.proposed, h.proposed_at,
	h.reset_count, h.restart_count, h.clock, h.safe, h.last_attestation, h.last_outcome, h.last_profile,
	h.created_at, h.updated_at`

func (t *sqlTx) hostSelect() string {
	return `SELECT ` + hostCols + `, ` + t.d.sets + ` FROM hosts h`
}

type scanner interface{ Scan(...any) error }

func (t *sqlTx) scanHost(r scanner) (*Host, error) {
	var (
		h                        Host
		state                    string
		reset, restart, clock    sql.NullInt64
		safe                     sql.NullBool
		groups, profiles, retire sql.NullString
	)
	if err := r.Scan(&h.EKHash, &h.Hostname, &h.EKPublic, &h.EKCert, &state, &h.Proposed,
		timeScan{&h.ProposedAt}, &reset, &restart, &clock, &safe, timeScan{&h.LastAttestation},
		&h.LastOutcome, &h.LastProfile, timeScan{&h.CreatedAt}, timeScan{&h.UpdatedAt},
		&groups, &profiles, &retire); err != nil {
		return nil, err
	}
	h.State = HostState(state)
	if reset.Valid {
		h.Counters = &Counters{
			ResetCount:   uint32(reset.Int64),
			RestartCount: uint32(restart.Int64),
			Clock:        uint64(clock.Int64), // stored bit for bit
			Safe:         safe.Bool,
		}
	}
	var err error
	if h.Groups, err = jsonSet(groups); err != nil {
		return nil, err
	}
	if h.Profiles, err = jsonSet(profiles); err != nil {
		return nil, err
	}
	if h.Retired, err = jsonSet(retire); err != nil {
		return nil, err
	}
	t.remember(h.EKHash, h.Groups, h.Profiles, h.Retired)
	return &h, nil
}

func jsonSet(s sql.NullString) ([]string, error) {
	if !s.Valid || s.String == "" {
		return nil, nil
	}
	var v []string
	if err := json.Unmarshal([]byte(s.String), &v); err != nil {
		return nil, fmt.Errorf("store: bad set %q: %w", s.String, err)
	}
	if len(v) == 0 {
		return nil, nil
	}
	slices.Sort(v)
	return v, nil
}

func (t *sqlTx) remember(ek string, groups, profiles, retired []string) {
	if t.sets == nil {
		t.sets = map[string]*hostSets{}
	}
	t.sets[ek] = &hostSets{slices.Clone(groups), slices.Clone(profiles), slices.Clone(retired)}
}

func (t *sqlTx) hostWhere(ctx context.Context, op, where string, arg any) (*Host, error) {
	h, err := t.scanHost(t.queryRow(ctx, t.hostSelect()+` WHERE `+where, arg))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("store: %s: %w", op, ErrNotFound)
	}
	if err != nil {
		return nil, t.fail(ctx, op, err)
	}
	return h, nil
}

func (t *sqlTx) HostByEK(ctx context.Context, ekHash string) (*Host, error) {
	if err := t.check("host by EK", false); err != nil {
		return nil, err
	}
	if err := checkEKHash(ekHash); err != nil {
		return nil, err
	}
	return t.hostWhere(ctx, "host by EK "+ekHash, `h.ek_hash = ?`, ekHash)
}

func (t *sqlTx) HostByName(ctx context.Context, hostname string) (*Host, error) {
	if err := t.check("host by name", false); err != nil {
		return nil, err
	}
	if err := checkHostname(hostname); err != nil {
		return nil, err
	}
	return t.hostWhere(ctx, fmt.Sprintf("host by name %q", hostname), `h.hostname = ?`, hostname)
}

func (t *sqlTx) ListHosts(ctx context.Context) ([]Host, error) {
	if err := t.check("list hosts", false); err != nil {
		return nil, err
	}
	rows, err := t.query(ctx, "list hosts", t.hostSelect()+` ORDER BY h.hostname`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var hs []Host
	for rows.Next() {
		h, err := t.scanHost(rows)
		if err != nil {
			return nil, t.fail(ctx, "list hosts", err)
		}
		hs = append(hs, *h)
	}
	if err := rows.Err(); err != nil {
		return nil, t.fail(ctx, "list hosts", err)
	}
	return hs, nil
}

// hostArgs are the values of the hosts columns after ek_hash, in the order
// of hostCols.
func (t *sqlTx) hostArgs(h *Host) []any {
	var reset, restart, clock, safe any
	if c := h.Counters; c != nil {
		reset, restart, clock, safe = int64(c.ResetCount), int64(c.RestartCount), int64(c.Clock), c.Safe
	}
	return []any{h.Hostname, nilIfEmpty(h.EKPublic), nilIfEmpty(h.EKCert), string(h.State),
		nilIfEmpty(h.Proposed), t.d.tArg(h.ProposedAt), reset, restart, clock, safe,
		t.d.tArg(h.LastAttestation), h.LastOutcome, h.LastProfile}
}

func nilIfEmpty(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

func (t *sqlTx) CreateHost(ctx context.Context, h *Host) error {
	const op = "create host"
	if err := t.check(op, true); err != nil {
		return err
	}
	if err := normHost(h); err != nil {
		return err
	}
	now := t.s.now()
	args := append([]any{h.EKHash}, t.hostArgs(h)...)
	args = append(args, t.d.timeArg(now), t.d.timeArg(now))
	// ON CONFLICT DO NOTHING rather than a unique violation: on
	// PostgreSQL a violation would abort the whole transaction.
	res, err := t.exec(ctx, op, `INSERT INTO hosts (ek_hash, hostname, ek_public, ek_cert, state, proposed,
		proposed_at, reset_count, restart_count, clock, safe, last_attestation, last_outcome, last_profile,
		created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`, args...)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return t.fail(ctx, op, err)
	}
	if n == 0 {
		var bound string
		err := t.queryRow(ctx, `SELECT hostname FROM hosts WHERE ek_hash = ?`, h.EKHash).Scan(&bound)
		switch {
		case err == nil:
			return fmt.Errorf("store: %s: %w: EK %s is already bound to %q", op, ErrConflict, h.EKHash, bound)
		case errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("store: %s: %w: hostname %q is already bound to another EK", op, ErrConflict, h.Hostname)
		default:
			return t.fail(ctx, op, err)
		}
	}
	t.remember(h.EKHash, nil, nil, nil)
	if err := t.syncSets(ctx, op, h); err != nil {
		return err
	}
	h.CreatedAt, h.UpdatedAt = now, now
	return nil
}

func (t *sqlTx) UpdateHost(ctx context.Context, h *Host) error {
	const op = "update host"
	if err := t.check(op, true); err != nil {
		return err
	}
	if err := normHost(h); err != nil {
		return err
	}
	now := t.s.now()
	args := append(t.hostArgs(h), t.d.timeArg(now), h.EKHash, h.Hostname, h.EKHash)
	var created time.Time
	err := t.queryRow(ctx, `UPDATE hosts SET hostname = ?, ek_public = ?, ek_cert = ?, state = ?, proposed = ?,
		proposed_at = ?, reset_count = ?, restart_count = ?, clock = ?, safe = ?, last_attestation = ?,
		last_outcome = ?, last_profile = ?, updated_at = ?
		WHERE ek_hash = ? AND NOT EXISTS (SELECT 1 FROM hosts o WHERE o.hostname = ? AND o.ek_hash <> ?)
		RETURNING created_at`, args...).Scan(timeScan{&created})
	if errors.Is(err, sql.ErrNoRows) {
		var one int
		err := t.queryRow(ctx, `SELECT 1 FROM hosts WHERE ek_hash = ?`, h.EKHash).Scan(&one)
		switch {
		case err == nil:
			return fmt.Errorf("store: %s: %w: hostname %q is already bound to another EK", op, ErrConflict, h.Hostname)
		case errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("store: %s %s: %w", op, h.EKHash, ErrNotFound)
		default:
			return t.fail(ctx, op, err)
		}
	}
	if err != nil {
		return t.fail(ctx, op, err)
	}
	if err := t.syncSets(ctx, op, h); err != nil {
		return err
	}
	h.CreatedAt, h.UpdatedAt = created, now
	return nil
}

// syncSets makes the host's three name sets equal h's. With the sets known
// from this transaction it writes only the difference (nothing, on an
// ordinary attestation); otherwise it replaces them.
func (t *sqlTx) syncSets(ctx context.Context, op string, h *Host) error {
	have := t.sets[h.EKHash]
	delete(t.sets, h.EKHash) // unknown until every statement below succeeded
	for _, s := range []struct {
		table, col string
		want       []string
		have       *[]string
	}{
		{"host_groups", "grp", h.Groups, haveOf(have, 0)},
		{"host_profiles", "profile", h.Profiles, haveOf(have, 1)},
		{"host_retired", "profile", h.Retired, haveOf(have, 2)},
	} {
		var del, add []string
		if s.have == nil {
			if _, err := t.exec(ctx, op, `DELETE FROM `+s.table+` WHERE ek_hash = ?`, h.EKHash); err != nil {
				return err
			}
			add = s.want
		} else {
			for _, v := range *s.have {
				if !slices.Contains(s.want, v) {
					del = append(del, v)
				}
			}
			for _, v := range s.want {
				if !slices.Contains(*s.have, v) {
					add = append(add, v)
				}
			}
		}
		if len(del) > 0 {
			args := append([]any{h.EKHash}, anys(del)...)
			if _, err := t.exec(ctx, op, `DELETE FROM `+s.table+` WHERE ek_hash = ? AND `+s.col+
				` IN (`+marks(len(del))+`)`, args...); err != nil {
				return err
			}
		}
		if len(add) > 0 {
			args := make([]any, 0, 2*len(add))
			for _, v := range add {
				args = append(args, h.EKHash, v)
			}
			if _, err := t.exec(ctx, op, `INSERT INTO `+s.table+` (ek_hash, `+s.col+`) VALUES `+
				strings.TrimSuffix(strings.Repeat("(?, ?), ", len(add)), ", "), args...); err != nil {
				return err
			}
		}
	}
	t.remember(h.EKHash, h.Groups, h.Profiles, h.Retired)
	return nil
}

func haveOf(s *hostSets, i int) *[]string {
	if s == nil {
		return nil
	}
	switch i {
	case 0:
		return &s.groups
	case 1:
		return &s.profiles
	}
	return &s.retired
}

func marks(n int) string { return strings.TrimSuffix(strings.Repeat("?, ", n), ", ") }

func anys(ss []string) []any {
	a := make([]any, len(ss))
	for i, s := range ss {
		a[i] = s
	}
	return a
}

// Profiles.

func (t *sqlTx) PutProfile(ctx context.Context, p Profile) (*Profile, error) {
	const op = "put profile"
	if err := t.check(op, true); err != nil {
		return nil, err
	}
	if err := checkProfile(&p); err != nil {
		return nil, err
	}
	var v int
	if err := t.queryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM profiles WHERE name = ?`, p.Name).Scan(&v); err != nil {
		return nil, t.fail(ctx, op, err)
	}
	now := t.s.now()
	out := &Profile{Name: p.Name, Version: v + 1, Body: slices.Clone(p.Body), CreatedAt: now}
	if _, err := t.exec(ctx, op, `INSERT INTO profiles (name, version, body, created_at) VALUES (?, ?, ?, ?)`,
		out.Name, out.Version, out.Body, t.d.timeArg(now)); err != nil {
		return nil, err
	}
	return out, nil
}

const profileCols = `p.name, p.version, p.body, p.created_at`

// newest restricts profiles p to the newest version of each name.
const newest = `p.version = (SELECT MAX(q.version) FROM profiles q WHERE q.name = p.name)`

func scanProfiles(rows *sql.Rows) ([]Profile, error) {
	var ps []Profile
	for rows.Next() {
		var p Profile
		if err := rows.Scan(&p.Name, &p.Version, &p.Body, timeScan{&p.CreatedAt}); err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, rows.Err()
}

func (t *sqlTx) profiles(ctx context.Context, op, q string, args ...any) ([]Profile, error) {
	rows, err := t.query(ctx, op, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	ps, err := scanProfiles(rows)
	if err != nil {
		return nil, t.fail(ctx, op, err)
	}
	return ps, nil
}

func (t *sqlTx) Profile(ctx context.Context, name string) (*Profile, error) {
	op := fmt.Sprintf("profile %q", name)
	if err := t.check(op, false); err != nil {
		return nil, err
	}
	if err := checkName("profile name", name); err != nil {
		return nil, err
	}
	ps, err := t.profiles(ctx, op, `SELECT `+profileCols+` FROM profiles p WHERE p.name = ?
		ORDER BY p.version DESC LIMIT 1`, name)
	if err != nil {
		return nil, err
	}
	if len(ps) == 0 {
		return nil, fmt.Errorf("store: %s: %w", op, ErrNotFound)
	}
	return &ps[0], nil
}

func (t *sqlTx) ListProfiles(ctx context.Context) ([]Profile, error) {
	if err := t.check("list profiles", false); err != nil {
		return nil, err
	}
	return t.profiles(ctx, "list profiles", `SELECT `+profileCols+` FROM profiles p WHERE `+newest+` ORDER BY p.name`)
}

func (t *sqlTx) Assign(ctx context.Context, a Assignment) error {
	const op = "assign"
	if err := t.check(op, true); err != nil {
		return err
	}
	if err := checkAssignment(a); err != nil {
		return err
	}
	var one int
	err := t.queryRow(ctx, `SELECT 1 FROM profiles WHERE name = ? LIMIT 1`, a.Profile).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("store: %s: profile %q: %w", op, a.Profile, ErrNotFound)
	}
	if err != nil {
		return t.fail(ctx, op, err)
	}
	_, err = t.exec(ctx, op, `INSERT INTO assignments (profile, host, grp) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
		a.Profile, a.Host, a.Group)
	return err
}

func (t *sqlTx) Unassign(ctx context.Context, a Assignment) error {
	const op = "unassign"
	if err := t.check(op, true); err != nil {
		return err
	}
	if err := checkAssignment(a); err != nil {
		return err
	}
	res, err := t.exec(ctx, op, `DELETE FROM assignments WHERE profile = ? AND host = ? AND grp = ?`,
		a.Profile, a.Host, a.Group)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return t.fail(ctx, op, err)
	}
	if n == 0 {
		return fmt.Errorf("store: %s: %+v: %w", op, a, ErrNotFound)
	}
	return nil
}

func (t *sqlTx) Assignments(ctx context.Context) ([]Assignment, error) {
	const op = "assignments"
	if err := t.check(op, false); err != nil {
		return nil, err
	}
	rows, err := t.query(ctx, op, `SELECT profile, host, grp FROM assignments ORDER BY profile, host, grp`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var as []Assignment
	for rows.Next() {
		var a Assignment
		if err := rows.Scan(&a.Profile, &a.Host, &a.Group); err != nil {
			return nil, t.fail(ctx, op, err)
		}
		as = append(as, a)
	}
	if err := rows.Err(); err != nil {
		return nil, t.fail(ctx, op, err)
	}
	return as, nil
}

func (t *sqlTx) ProfilesFor(ctx context.Context, h *Host) ([]Profile, error) {
	const op = "profiles for host"
	if err := t.check(op, false); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, fmt.Errorf("store: %s: %w: nil host", op, ErrInvalid)
	}
	if err := checkHostname(h.Hostname); err != nil {
		return nil, err
	}
	groups, profiles, retired := h.Groups, h.Profiles, h.Retired
	for _, l := range []struct {
		what string
		v    []string
	}{{"group", groups}, {"profile", profiles}, {"retired profile", retired}} {
		if err := checkList(l.what, l.v); err != nil {
			return nil, err
		}
	}
	var q strings.Builder
	args := []any{h.Hostname}
	q.WriteString(`SELECT ` + profileCols + ` FROM profiles p WHERE ` + newest +
		` AND (p.name IN (SELECT a.profile FROM assignments a WHERE a.host = ?`)
	if len(groups) > 0 {
		q.WriteString(` OR a.grp IN (` + marks(len(groups)) + `)`)
		args = append(args, anys(groups)...)
	}
	q.WriteString(`)`)
	if len(profiles) > 0 {
		q.WriteString(` OR p.name IN (` + marks(len(profiles)) + `)`)
		args = append(args, anys(profiles)...)
	}
	q.WriteString(`)`)
	if len(retired) > 0 {
		q.WriteString(` AND p.name NOT IN (` + marks(len(retired)) + `)`)
		args = append(args, anys(retired)...)
	}
	q.WriteString(` ORDER BY p.name`)
	return t.profiles(ctx, op, q.String(), args...)
}

// Attempts.

func (t *sqlTx) AppendAttempt(ctx context.Context, a *Attempt) error {
	const op = "append attempt"
	if err := t.check(op, true); err != nil {
		return err
	}
	if err := normAttempt(a); err != nil {
		return err
	}
	if a.Time.IsZero() {
		a.Time = t.s.now()
	}
	a.Time = normTime(a.Time)
	var reasons any
	if len(a.Reasons) > 0 {
		b, err := json.Marshal(a.Reasons)
		if err != nil {
			return fmt.Errorf("store: %s: %w: %w", op, ErrInvalid, err)
		}
		reasons = string(b)
	}
	var id int64
	if err := t.queryRow(ctx, `INSERT INTO attempts (time, ek_hash, hostname, server, outcome, reasons, profile)
		VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id`,
		t.d.timeArg(a.Time), a.EKHash, a.Hostname, a.Server, a.Outcome, reasons, a.Profile).Scan(&id); err != nil {
		return t.fail(ctx, op, err)
	}
	a.ID = id
	return nil
}

func (t *sqlTx) Attempts(ctx context.Context, f AttemptFilter) ([]Attempt, error) {
	const op = "attempts"
	if err := t.check(op, false); err != nil {
		return nil, err
	}
	if f.Limit < 0 {
		return nil, fmt.Errorf("store: %s: %w: negative limit %d", op, ErrInvalid, f.Limit)
	}
	var q strings.Builder
	var args []any
	q.WriteString(`SELECT id, time, ek_hash, hostname, server, outcome, reasons, profile FROM attempts WHERE 1 = 1`)
	if f.EKHash != "" {
		q.WriteString(` AND ek_hash = ?`)
		args = append(args, f.EKHash)
	}
	if f.Hostname != "" {
		q.WriteString(` AND hostname = ?`)
		args = append(args, f.Hostname)
	}
	if !f.Since.IsZero() {
		q.WriteString(` AND time >= ?`)
		args = append(args, t.d.timeArg(f.Since))
	}
	q.WriteString(` ORDER BY time DESC, id DESC`)
	if f.Limit > 0 {
		q.WriteString(` LIMIT ?`)
		args = append(args, f.Limit)
	}
	rows, err := t.query(ctx, op, q.String(), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var as []Attempt
	for rows.Next() {
		var (
			a       Attempt
			reasons sql.NullString
		)
		if err := rows.Scan(&a.ID, timeScan{&a.Time}, &a.EKHash, &a.Hostname, &a.Server, &a.Outcome,
			&reasons, &a.Profile); err != nil {
			return nil, t.fail(ctx, op, err)
		}
		if reasons.Valid {
			if err := json.Unmarshal([]byte(reasons.String), &a.Reasons); err != nil {
				return nil, fmt.Errorf("store: %s: attempt %d: bad reasons: %w", op, a.ID, err)
			}
		}
		as = append(as, a)
	}
	if err := rows.Err(); err != nil {
		return nil, t.fail(ctx, op, err)
	}
	return as, nil
}
