-- tpmid store schema 1 (PostgreSQL). clock is the TPM clock's uint64
-- stored bit for bit in a signed bigint.

CREATE TABLE hosts (
	ek_hash          text        NOT NULL PRIMARY KEY CHECK (ek_hash <> '' AND ek_hash = lower(ek_hash)),
	hostname         text        NOT NULL UNIQUE      CHECK (hostname <> '' AND hostname = lower(hostname)),
	ek_public        bytea,
	ek_cert          bytea,
	state            text        NOT NULL CHECK (state <> ''),
	proposed         bytea,
	proposed_at      timestamptz,
	reset_count      bigint,
	restart_count    bigint,
	clock            bigint,
	safe             boolean,
	last_attestation timestamptz,
	last_outcome     text        NOT NULL DEFAULT '',
	last_profile     text        NOT NULL DEFAULT '',
	created_at       timestamptz NOT NULL,
	updated_at       timestamptz NOT NULL,
	CHECK ((reset_count IS NULL) = (restart_count IS NULL)
	   AND (reset_count IS NULL) = (clock IS NULL)
	   AND (reset_count IS NULL) = (safe IS NULL))
);

CREATE TABLE host_groups (
	ek_hash text NOT NULL REFERENCES hosts (ek_hash) ON DELETE CASCADE,
	grp     text NOT NULL CHECK (grp <> ''),
	PRIMARY KEY (ek_hash, grp)
);
CREATE INDEX host_groups_grp ON host_groups (grp);

CREATE TABLE host_profiles (
	ek_hash text NOT NULL REFERENCES hosts (ek_hash) ON DELETE CASCADE,
	profile text NOT NULL CHECK (profile <> ''),
	PRIMARY KEY (ek_hash, profile)
);

CREATE TABLE host_retired (
	ek_hash text NOT NULL REFERENCES hosts (ek_hash) ON DELETE CASCADE,
	profile text NOT NULL CHECK (profile <> ''),
	PRIMARY KEY (ek_hash, profile)
);

CREATE TABLE profiles (
	name       text        NOT NULL CHECK (name <> ''),
	version    integer     NOT NULL CHECK (version > 0),
	body       bytea       NOT NULL,
	created_at timestamptz NOT NULL,
	PRIMARY KEY (name, version)
);

-- Exactly one of host (a hostname, enrolled or not yet) and grp is set.
CREATE TABLE assignments (
	profile text NOT NULL CHECK (profile <> ''),
	host    text NOT NULL DEFAULT '',
	grp     text NOT NULL DEFAULT '',
	CHECK ((host = '') <> (grp = '')),
	PRIMARY KEY (profile, host, grp)
);
CREATE INDEX assignments_host ON assignments (host);
CREATE INDEX assignments_grp ON assignments (grp);

-- Append-only: nothing in the store's API updates or deletes a row.
CREATE TABLE attempts (
	id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	time     timestamptz NOT NULL,
	ek_hash  text        NOT NULL DEFAULT '',
	hostname text        NOT NULL DEFAULT '',
	server   text        NOT NULL DEFAULT '',
	outcome  text        NOT NULL CHECK (outcome <> ''),
	reasons  jsonb,
	profile  text        NOT NULL DEFAULT ''
);
CREATE INDEX attempts_ek_time ON attempts (ek_hash, time);
CREATE INDEX attempts_host_time ON attempts (hostname, time);
CREATE INDEX attempts_time ON attempts (time);
