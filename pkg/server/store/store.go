// Package store keeps tpmid's state: the hosts that may attest (by EK hash
// and by hostname), their reboot counters, their reference profiles and
// proposed boot states, and an append-only record of every attestation
// attempt. Two backends implement one interface: SQLite in a file (the
// default, pure Go, no cgo) and PostgreSQL (for several spire-servers).
//
// Every change an attestation makes happens in one transaction (Update), so
// a failure anywhere leaves nothing half-written, and two servers sharing a
// database never bind one EK or one hostname twice: the uniqueness of both is
// enforced by the database, and a losing writer gets ErrConflict.
package store

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors. Backends wrap them with %w and context.
var (
	// ErrNotFound: no such host, profile or attempt.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the EK hash or the hostname is already bound to another
	// host, or a concurrent transaction changed the same rows first.
	ErrConflict = errors.New("conflict")
	// ErrUnavailable: the database cannot be reached or refused the
	// transaction for a reason that may pass (connection lost, server
	// shutting down). Callers map it to gRPC Unavailable.
	ErrUnavailable = errors.New("store unavailable")
	// ErrInvalid: the input was refused before anything was written (a
	// malformed EK hash or hostname, a profile body or proposed state over
	// its size bound, a write in a View). Callers map it to gRPC
	// InvalidArgument.
	ErrInvalid = errors.New("invalid input")
)

// Size bounds. Input over a bound is refused with ErrInvalid and changes
// nothing, except in an Attempt, which is cut to fit (see AppendAttempt).
const (
	MaxProfileBody = 1 << 20  // bytes of Profile.Body
	MaxProposed    = 1 << 20  // bytes of Host.Proposed
	MaxEKBlob      = 64 << 10 // bytes of Host.EKPublic and of Host.EKCert
	MaxName        = 255      // bytes of a group, profile name, outcome, server...
	MaxHostname    = 253      // bytes of a hostname
	MaxList        = 256      // entries of Host.Groups, Profiles, Retired, Attempt.Reasons
	MaxReason      = 1024     // bytes of one Attempt.Reasons entry
)

// HostState is where a host stands.
type HostState string

const (
	// HostEnrolled: the host may attest.
	HostEnrolled HostState = "enrolled"
	// HostRevoked: the host's EK is refused at its next attestation.
	HostRevoked HostState = "revoked"
)

// Valid reports whether s is a state the store accepts.
func (s HostState) Valid() bool {
	switch s {
	case HostEnrolled, HostRevoked:
		return true
	}
	return false
}

// Counters are the TPM clock facts of the last admitted quote
// (TPMS_CLOCK_INFO and resetCount/restartCount of TPMS_ATTEST).
type Counters struct {
	ResetCount   uint32 `json:"reset_count"`
	RestartCount uint32 `json:"restart_count"`
	Clock        uint64 `json:"clock"`
	Safe         bool   `json:"safe"`
}

// Host is one machine, keyed by the SHA-256 of its EK public key (lowercase
// hex, as in the agent ID) and by its hostname; both are unique.
type Host struct {
	EKHash   string    `json:"ek_hash"`
	Hostname string    `json:"hostname"`
	EKPublic []byte    `json:"ek_public,omitempty"` // PKIX DER, when known
	EKCert   []byte    `json:"ek_cert,omitempty"`   // DER, when known
	Groups   []string  `json:"groups,omitempty"`
	State    HostState `json:"state"`
	// Profiles are the profile names assigned to this host itself (groups
	// may add more, see Tx.ProfilesFor).
	Profiles []string `json:"profiles,omitempty"`
	// Retired are profile names this host may no longer attest with
	// (a downgrade is blocked once it attested with a newer one).
	Retired []string `json:"retired,omitempty"`
	// Proposed is the last boot state that no assigned profile allowed, as
	// a profile body (JSON) an operator may approve; nil when none.
	Proposed   []byte    `json:"proposed,omitempty"`
	ProposedAt time.Time `json:"proposed_at,omitzero"`
	// Counters of the last admitted quote; nil before the first one.
	Counters        *Counters `json:"counters,omitempty"`
	LastAttestation time.Time `json:"last_attestation,omitzero"`
	LastOutcome     string    `json:"last_outcome,omitempty"`
	LastProfile     string    `json:"last_profile,omitempty"`
	CreatedAt       time.Time `json:"created_at"`
	UpdatedAt       time.Time `json:"updated_at"`
}

// Profile is one version of a named reference profile. Body is the
// appraisal package's JSON form; the store does not interpret it.
type Profile struct {
	Name      string    `json:"name"`
	Version   int       `json:"version"` // 1, 2, ... per name, assigned by PutProfile
	Body      []byte    `json:"body"`
	CreatedAt time.Time `json:"created_at"`
}

// Assignment names who a profile applies to: exactly one of Host (a
// hostname) or Group.
type Assignment struct {
	Profile string `json:"profile"`
	Host    string `json:"host,omitempty"`
	Group   string `json:"group,omitempty"`
}

// Outcome of an attempt.
const (
	OutcomeAdmitted = "admitted"
	OutcomeRefused  = "refused"
)

// Attempt is one attestation attempt, appended and never changed.
type Attempt struct {
	ID       int64     `json:"id"`
	Time     time.Time `json:"time"`
	EKHash   string    `json:"ek_hash"`
	Hostname string    `json:"hostname,omitempty"` // enrolled or claimed
	Server   string    `json:"server,omitempty"`   // which spire-server (its store identity)
	Outcome  string    `json:"outcome"`
	Reasons  []string  `json:"reasons,omitempty"`
	Profile  string    `json:"profile,omitempty"` // profile that allowed the boot, name@version
}

// AttemptFilter selects attempts; zero fields match everything.
type AttemptFilter struct {
	EKHash   string
	Hostname string
	Since    time.Time
	Limit    int // 0: no limit
}

// Tx is one transaction. Its methods take the transaction's context. A Tx
// belongs to one goroutine and is dead once fn returns. Write methods on a
// View's Tx return ErrInvalid. Every time the store sets or returns is UTC,
// truncated to the microsecond (PostgreSQL's resolution).
type Tx interface {
	HostByEK(ctx context.Context, ekHash string) (*Host, error)
	HostByName(ctx context.Context, hostname string) (*Host, error)
	// CreateHost inserts h; ErrConflict when its EK hash or hostname is
	// already bound. CreatedAt/UpdatedAt are set by the store.
	CreateHost(ctx context.Context, h *Host) error
	// UpdateHost replaces the host with h.EKHash; ErrNotFound if absent,
	// ErrConflict if the new hostname belongs to another host.
	UpdateHost(ctx context.Context, h *Host) error
	ListHosts(ctx context.Context) ([]Host, error)

	// PutProfile stores a new version of p.Name and returns it with
	// Version and CreatedAt set.
	PutProfile(ctx context.Context, p Profile) (*Profile, error)
	// Profile returns the newest version of name.
	Profile(ctx context.Context, name string) (*Profile, error)
	ListProfiles(ctx context.Context) ([]Profile, error) // newest version of each
	Assign(ctx context.Context, a Assignment) error
	Unassign(ctx context.Context, a Assignment) error
	Assignments(ctx context.Context) ([]Assignment, error)
	// ProfilesFor returns the newest version of every profile assigned to
	// h or to one of its groups, minus those h has retired, by name. It
	// reads h as given (Hostname, Groups, Profiles, Retired), so changes
	// not yet written with UpdateHost count; "assigned to h" is h.Profiles
	// plus the assignments naming h.Hostname. A name with no stored version
	// is left out.
	ProfilesFor(ctx context.Context, h *Host) ([]Profile, error)

	// AppendAttempt sets a.ID, and a.Time to now when zero (times are kept
	// in UTC to the microsecond). An attempt records possibly hostile input,
	// so it is stored rather than refused: AppendAttempt replaces invalid
	// UTF-8 and NUL with U+FFFD and cuts a field over its bound (hostname
	// MaxHostname, reasons MaxList of MaxReason bytes, others MaxName), in
	// a, so a is what was stored. Only an empty Outcome is ErrInvalid.
	AppendAttempt(ctx context.Context, a *Attempt) error
	// Attempts returns the matching attempts newest first (by time, then
	// ID); f.Limit keeps the newest ones.
	Attempts(ctx context.Context, f AttemptFilter) ([]Attempt, error)
}

// Store is a backend.
type Store interface {
	// Update runs fn in one read-write transaction and commits it when fn
	// returns nil; any error rolls everything back. Serialisation failures
	// are retried a few times before ErrConflict is returned, so fn may run
	// more than once and must not have effects outside the Tx. fn's own
	// error is returned as is. Do not call Update inside fn (SQLite has one
	// writer: it would wait for itself until ctx ends).
	Update(ctx context.Context, fn func(Tx) error) error
	// View runs fn in a read-only transaction.
	View(ctx context.Context, fn func(Tx) error) error
	Close() error
}
