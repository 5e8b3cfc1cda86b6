-- tpmid store schema 1 (SQLite). Times are TEXT in UTC, fixed width
-- (2006-01-02T15:04:05.000000Z), so they sort as they compare.
-- clock is the TPM clock's uint64 stored bit for bit in a signed INTEGER.

CREATE TABLE hosts (
	ek_hash          TEXT    NOT NULL PRIMARY KEY CHECK (ek_hash <> '' AND ek_hash = lower(ek_hash)),
	hostname         TEXT    NOT NULL UNIQUE      CHECK (hostname <> '' AND hostname = lower(hostname)),
	ek_public        BLOB,
	ek_cert          BLOB,
	state            TEXT    NOT NULL CHECK (state <> ''),
	proposed         BLOB,
	proposed_at      TEXT,
	reset_count      INTEGER,
	restart_count    INTEGER,
	clock            INTEGER,
	safe             INTEGER CHECK (safe IN (0, 1)),
	last_attestation TEXT,
	last_outcome     TEXT    NOT NULL DEFAULT '',
	last_profile     TEXT    NOT NULL DEFAULT '',
	created_at       TEXT    NOT NULL,
	updated_at       TEXT    NOT NULL,
	CHECK ((reset_count IS NULL) = (restart_count IS NULL)
	   AND (reset_count IS NULL) = (clock IS NULL)
	   AND (reset_count IS NULL) = (safe IS NULL))
) STRICT;

CREATE TABLE host_groups (
	ek_hash TEXT NOT NULL REFERENCES hosts (ek_hash) ON DELETE CASCADE,
	grp     TEXT NOT NULL CHECK (grp <> ''),
	PRIMARY KEY (ek_hash, grp)
) STRICT;
CREATE INDEX host_groups_grp ON host_groups (grp);

CREATE TABLE host_profiles (
	ek_hash TEXT NOT NULL REFERENCES hosts (ek_hash) ON DELETE CASCADE,
	profile TEXT NOT NULL CHECK (profile <> ''),
	PRIMARY KEY (ek_hash, profile)
) STRICT;

CREATE TABLE host_retired (
	ek_hash TEXT NOT NULL REFERENCES hosts (ek_hash) ON DELETE CASCADE,
	profile TEXT NOT NULL CHECK (profile <> ''),
	PRIMARY KEY (ek_hash, profile)
) STRICT;

CREATE TABLE profiles (
	name       TEXT    NOT NULL CHECK (name <> ''),
	version    INTEGER NOT NULL CHECK (version > 0),
	body       BLOB    NOT NULL,
	created_at TEXT    NOT NULL,
	PRIMARY KEY (name, version)
) STRICT;

-- Exactly one of host (a hostname, enrolled or not yet) and grp is set.
CREATE TABLE assignments (
	profile TEXT NOT NULL CHECK (profile <> ''),
	host    TEXT NOT NULL DEFAULT '',
	grp     TEXT NOT NULL DEFAULT '',
	CHECK ((host = '') <> (grp = '')),
	PRIMARY KEY (profile, host, grp)
) STRICT;
CREATE INDEX assignments_host ON assignments (host);
CREATE INDEX assignments_grp ON assignments (grp);

-- Append-only: nothing in the store's API updates or deletes a row.
CREATE TABLE attempts (
	id       INTEGER PRIMARY KEY AUTOINCREMENT,
	time     TEXT    NOT NULL,
	ek_hash  TEXT    NOT NULL DEFAULT '',
	hostname TEXT    NOT NULL DEFAULT '',
	server   TEXT    NOT NULL DEFAULT '',
	outcome  TEXT    NOT NULL CHECK (outcome <> ''),
	reasons  TEXT    CHECK (reasons IS NULL OR json_valid(reasons)),
	profile  TEXT    NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX attempts_ek_time ON attempts (ek_hash, time);
CREATE INDEX attempts_host_time ON attempts (hostname, time);
CREATE INDEX attempts_time ON attempts (time);
