package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tpmid/tpmid/internal/testca"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/server/profile"
	"github.com/tpmid/tpmid/pkg/server/store"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// newDB returns the path of a store in t.TempDir(), created with its schema.
func newDB(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tpmid.db")
	withStore(t, path, func(context.Context, store.Tx) error { return nil })
	return path
}

// withStore runs fn in one Update on the store at dsn, opened and closed
// around it (as the commands do, so both never hold it at once).
func withStore(t *testing.T, dsn string, fn func(context.Context, store.Tx) error) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Update(ctx, func(tx store.Tx) error { return fn(ctx, tx) }); err != nil {
		t.Fatal(err)
	}
}

func hostIn(t *testing.T, dsn, ekHash string) *store.Host {
	t.Helper()
	var h *store.Host
	withStore(t, dsn, func(ctx context.Context, tx store.Tx) (err error) {
		h, err = tx.HostByEK(ctx, ekHash)
		return err
	})
	return h
}

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func hexOf(c byte) string { return strings.Repeat(string(c), 64) }

// TestHostsEnroll: each form of the EK gives the hash the agent ID carries
// (verify.EKHash of the key), stored with the key and the certificate.
func TestHostsEnroll(t *testing.T) {
	ca, err := testca.New("test EK CA")
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	certDER, err := ca.IssueEK(&rsaKey.PublicKey, "id:53494D55", "swtpm", "id:20170619")
	if err != nil {
		t.Fatal(err)
	}
	rsaHash, _ := verify.EKHash(&rsaKey.PublicKey)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKIXPublicKey(&ecKey.PublicKey)
	ecHash, _ := verify.EKHash(&ecKey.PublicKey)
	padded := append(slices.Clone(certDER), make([]byte, 200)...) // NV padding
	for i := len(certDER); i < len(padded); i++ {
		padded[i] = 0xff
	}

	tests := []struct {
		name     string
		args     []string
		wantHash string
		wantCert bool
		wantPub  bool
	}{
		{"cert DER", []string{"--ek-cert", writeFile(t, "ek.der", padded)}, rsaHash, true, true},
		{"cert PEM", []string{"--ek-cert", writeFile(t, "ek.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER}))}, rsaHash, true, true},
		{"public key PEM", []string{"--ek-pub", writeFile(t, "ek.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecDER}))}, ecHash, false, true},
		{"public key DER", []string{"--ek-pub", writeFile(t, "ek.pub.der", ecDER)}, ecHash, false, true},
		{"hash", []string{"--ek-hash", strings.ToUpper(hexOf('c'))}, hexOf('c'), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := newDB(t)
			args := append([]string{"enroll", "--store", db, "--hostname", "Web-1.Example.COM", "--group", "prod", "--group", "eu"}, tt.args...)
			out, err := runCmd(t, newHostsCmd(), args...)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if !strings.Contains(out, "enrolled web-1.example.com: EK "+tt.wantHash) {
				t.Errorf("output %q", out)
			}
			h := hostIn(t, db, tt.wantHash)
			if h.Hostname != "web-1.example.com" || h.State != store.HostEnrolled || !slices.Equal(h.Groups, []string{"eu", "prod"}) {
				t.Errorf("host %+v", h)
			}
			if (len(h.EKCert) > 0) != tt.wantCert || (len(h.EKPublic) > 0) != tt.wantPub {
				t.Errorf("cert %d bytes, public key %d bytes", len(h.EKCert), len(h.EKPublic))
			}
			if tt.wantCert && !slices.Equal(h.EKCert, certDER) {
				t.Error("stored certificate is not the DER without padding")
			}
			if tt.wantPub {
				pub, err := x509.ParsePKIXPublicKey(h.EKPublic)
				if err != nil {
					t.Fatal(err)
				}
				if got, _ := verify.EKHash(pub); got != tt.wantHash {
					t.Errorf("stored public key hashes to %s", got)
				}
			}
		})
	}
}

// TestHostsEnrollRefused: a duplicate hostname or EK is one line naming
// what is bound, and bad input changes nothing.
func TestHostsEnrollRefused(t *testing.T) {
	db := newDB(t)
	if out, err := runCmd(t, newHostsCmd(), "enroll", "--store", db, "--hostname", "web1", "--ek-hash", hexOf('a')); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"duplicate hostname", []string{"--hostname", "WEB1", "--ek-hash", hexOf('b')},
			"hostname web1 is already bound to EK " + hexOf('a') + " (enrolled)"},
		{"duplicate EK", []string{"--hostname", "web2", "--ek-hash", hexOf('a')},
			"EK " + hexOf('a') + " is already enrolled as host web1 (enrolled)"},
		{"invalid hostname", []string{"--hostname", "web_1", "--ek-hash", hexOf('b')}, "not a valid host name"},
		{"two EK forms", []string{"--hostname", "web2", "--ek-hash", hexOf('b'), "--ek-pub", "x"}, "exactly one of"},
		{"no EK", []string{"--hostname", "web2"}, "exactly one of"},
		{"short hash", []string{"--hostname", "web2", "--ek-hash", "abcd"}, "not 64 hex digits"},
		{"certificate as public key", []string{"--hostname", "web2", "--ek-pub", writeFile(t, "c.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}))}, "want PUBLIC KEY"},
		{"garbage certificate", []string{"--hostname", "web2", "--ek-cert", writeFile(t, "c.der", []byte("garbage"))}, "ek_cert_malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runCmd(t, newHostsCmd(), append([]string{"enroll", "--store", db}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %v, want one line with %q (output %q)", err, tt.want, out)
			}
		})
	}
	var n int
	withStore(t, db, func(ctx context.Context, tx store.Tx) error {
		hs, err := tx.ListHosts(ctx)
		n = len(hs)
		return err
	})
	if n != 1 {
		t.Errorf("%d hosts after refusals, want 1", n)
	}
}

// TestHostsListShowJSON: the documented JSON forms, with counters, the
// last attempt, profiles (own, by assignment, by group, retired) and a
// waiting proposed state.
func TestHostsListShowJSON(t *testing.T) {
	db := newDB(t)
	for _, a := range [][]string{
		{"--hostname", "web1", "--ek-hash", hexOf('a'), "--group", "prod"},
		{"--hostname", "db1", "--ek-hash", hexOf('b')},
	} {
		if out, err := runCmd(t, newHostsCmd(), append([]string{"enroll", "--store", db}, a...)...); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	body := mustProfileBody(t, "p")
	at := time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)
	withStore(t, db, func(ctx context.Context, tx store.Tx) error {
		for _, n := range []string{"own", "byhost", "bygroup", "old"} {
			if _, err := tx.PutProfile(ctx, store.Profile{Name: n, Body: body}); err != nil {
				return err
			}
		}
		if err := tx.Assign(ctx, store.Assignment{Profile: "byhost", Host: "web1"}); err != nil {
			return err
		}
		if err := tx.Assign(ctx, store.Assignment{Profile: "bygroup", Group: "prod"}); err != nil {
			return err
		}
		if err := tx.Assign(ctx, store.Assignment{Profile: "old", Group: "prod"}); err != nil {
			return err
		}
		h, err := tx.HostByEK(ctx, hexOf('a'))
		if err != nil {
			return err
		}
		h.Profiles, h.Retired = []string{"own"}, []string{"old"}
		h.Counters = &store.Counters{ResetCount: 3, RestartCount: 1, Clock: 123456, Safe: true}
		h.LastAttestation, h.LastOutcome, h.LastProfile = at, store.OutcomeRefused, "own@1"
		h.Proposed, h.ProposedAt = body, at
		if err := tx.UpdateHost(ctx, h); err != nil {
			return err
		}
		return tx.AppendAttempt(ctx, &store.Attempt{Time: at, EKHash: hexOf('a'), Hostname: "web1", Server: "s1",
			Outcome: store.OutcomeRefused, Reasons: []string{"profile_mismatch: denied"}})
	})

	out, err := runCmd(t, newHostsCmd(), "list", "--store", db, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var list []map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	wantKeys := []string{"agent_id_path", "counters", "created_at", "ek_cert", "ek_hash", "groups", "hostname", "last_attestation",
		"last_outcome", "last_profile", "profiles", "proposed", "proposed_at", "retired", "state", "updated_at"}
	if len(list) != 2 {
		t.Fatalf("%d hosts:\n%s", len(list), out)
	}
	for _, h := range list {
		if got := sortedKeysOf(h); !slices.Equal(got, wantKeys) {
			t.Errorf("keys %v, want %v", got, wantKeys)
		}
	}
	var db1 hostJSON // sorted by hostname: db1 first, never attested
	if err := json.Unmarshal(mustMarshal(t, list[0]), &db1); err != nil {
		t.Fatal(err)
	}
	if db1.Hostname != "db1" || db1.Counters != nil || db1.LastAttestation != nil || db1.Groups == nil || len(db1.Groups) != 0 || db1.Proposed {
		t.Errorf("db1 %+v", db1)
	}
	if string(list[0]["counters"]) != "null" || string(list[0]["groups"]) != "[]" {
		t.Errorf("never-attested host: counters %s, groups %s", list[0]["counters"], list[0]["groups"])
	}

	for _, key := range []string{"web1", "WEB1", hexOf('a'), "spiffe://example.org/spire/agent/tpm/" + hexOf('a')} {
		out, err = runCmd(t, newHostsCmd(), "show", "--store", db, "--json", key)
		if err != nil {
			t.Fatalf("show %s: %v", key, err)
		}
		var v struct {
			hostJSON
			Appraised       []string        `json:"appraised_profiles"`
			LastAttempt     *attemptJSON    `json:"last_attempt"`
			ProposedProfile json.RawMessage `json:"proposed_profile"`
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if v.Hostname != "web1" || v.State != "enrolled" || v.AgentIDPath != "/spire/agent/tpm/"+hexOf('a') ||
			!slices.Equal(v.Groups, []string{"prod"}) || !slices.Equal(v.Profiles, []string{"own"}) || !slices.Equal(v.Retired, []string{"old"}) ||
			v.Counters == nil || *v.Counters != (countersJSON{3, 1, 123456, true}) ||
			v.LastAttestation == nil || !v.LastAttestation.Equal(at) || v.LastOutcome != "refused" || v.LastProfile != "own@1" ||
			!v.Proposed || v.ProposedAt == nil || !v.ProposedAt.Equal(at) {
			t.Errorf("show %s: %+v", key, v.hostJSON)
		}
		if !slices.Equal(v.Appraised, []string{"bygroup@1", "byhost@1", "own@1"}) {
			t.Errorf("appraised %v", v.Appraised)
		}
		if a := v.LastAttempt; a == nil || a.Outcome != "refused" || a.Server != "s1" || !slices.Equal(a.Reasons, []string{"profile_mismatch: denied"}) {
			t.Errorf("last attempt %+v", a)
		}
		if _, err := profile.ParseProfile(v.ProposedProfile); err != nil {
			t.Errorf("proposed_profile: %v: %s", err, v.ProposedProfile)
		}
	}
	out, err = runCmd(t, newHostsCmd(), "show", "--store", db, "web1")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"counters:          reset 3, restart 1, clock 123456, safe true", "reason: profile_mismatch: denied",
		"tpmid hosts approve web1", "appraised against: bygroup@1, byhost@1, own@1"} {
		if !strings.Contains(out, s) {
			t.Errorf("text lacks %q:\n%s", s, out)
		}
	}
	if _, err := runCmd(t, newHostsCmd(), "show", "--store", db, "nosuch"); err == nil || !strings.Contains(err.Error(), "no host nosuch") {
		t.Errorf("unknown host: %v", err)
	}
	// A read never creates a store.
	missing := filepath.Join(t.TempDir(), "none.db")
	if _, err := runCmd(t, newHostsCmd(), "list", "--store", missing); err == nil || !strings.Contains(err.Error(), "no tpmid store at") {
		t.Errorf("missing store: %v", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("list created %s", missing)
	}
}

func sortedKeysOf(m map[string]json.RawMessage) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// mustProfileBody is a small valid profile's JSON form.
func mustProfileBody(t *testing.T, name string) []byte {
	t.Helper()
	return mustMarshal(t, profile.Profile{Name: name, Rules: profile.Rules{SecureBoot: profile.SecureBootRequired}})
}

// fakeSpireServer writes a spire-server stand-in that records its argv, one
// argument a line, and exits with code (printing msg when failing).
func fakeSpireServer(t *testing.T, code int, msg string) (bin, argvFile string) {
	t.Helper()
	dir := t.TempDir()
	argvFile = filepath.Join(dir, "argv")
	bin = filepath.Join(dir, "spire-server")
	script := "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > '" + argvFile + "'\n"
	if code != 0 {
		script += "echo '" + msg + "' >&2\nexit " + string(rune('0'+code)) + "\n"
	}
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, argvFile
}

// TestHostsRevoke: revocation alone, and with --spire-socket the exact
// spire-server agent evict command line; a failed eviction is reported and
// the revocation stands.
func TestHostsRevoke(t *testing.T) {
	okBin, okArgv := fakeSpireServer(t, 0, "")
	badBin, badArgv := fakeSpireServer(t, 1, "Error: connection refused")
	tests := []struct {
		name     string
		args     []string
		argvFile string
		wantArgv []string
		wantErr  string
		wantOut  string
	}{
		{name: "no socket", args: []string{"web1"}, wantOut: "revoked web1 (EK " + hexOf('a') + "): refused at its next attestation"},
		{name: "evict", args: []string{hexOf('a'), "--spire-socket", "/run/spire/api.sock", "--trust-domain", "example.org", "--spire-server", okBin},
			argvFile: okArgv,
			wantArgv: []string{"agent", "evict", "-socketPath", "/run/spire/api.sock", "-spiffeID", "spiffe://example.org/spire/agent/tpm/" + hexOf('a')},
			wantOut:  "evicted spiffe://example.org/spire/agent/tpm/" + hexOf('a') + " from SPIRE"},
		{name: "evict fails", args: []string{"web1", "--spire-socket", "/nonexistent.sock", "--trust-domain", "example.org", "--spire-server", badBin},
			argvFile: badArgv,
			wantArgv: []string{"agent", "evict", "-socketPath", "/nonexistent.sock", "-spiffeID", "spiffe://example.org/spire/agent/tpm/" + hexOf('a')},
			wantErr:  "web1 is revoked, but evicting spiffe://example.org/spire/agent/tpm/" + hexOf('a') + " from SPIRE failed: exit status 1 (Error: connection refused); the revocation stands"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := newDB(t)
			if out, err := runCmd(t, newHostsCmd(), "enroll", "--store", db, "--hostname", "web1", "--ek-hash", hexOf('a')); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			out, err := runCmd(t, newHostsCmd(), append([]string{"revoke", "--store", db}, tt.args...)...)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n")) {
				t.Fatalf("error %v, want one line with %q", err, tt.wantErr)
			}
			if tt.wantOut != "" && !strings.Contains(out, tt.wantOut) {
				t.Errorf("output %q lacks %q", out, tt.wantOut)
			}
			if h := hostIn(t, db, hexOf('a')); h.State != store.HostRevoked {
				t.Errorf("state %s", h.State)
			}
			if tt.argvFile != "" {
				b, err := os.ReadFile(tt.argvFile)
				if err != nil {
					t.Fatal(err)
				}
				if got := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n"); !slices.Equal(got, tt.wantArgv) {
					t.Errorf("argv %q, want %q", got, tt.wantArgv)
				}
			}
		})
	}

	// Refused before anything changes: eviction without a trust domain,
	// an unknown host.
	db := newDB(t)
	runCmd(t, newHostsCmd(), "enroll", "--store", db, "--hostname", "web1", "--ek-hash", hexOf('a'))
	for _, args := range [][]string{
		{"web1", "--spire-socket", "/s.sock", "--spire-server", okBin},
		{"web1", "--trust-domain", "example.org"},
		{"web1", "--spire-socket", "/s.sock", "--trust-domain", "not a domain", "--spire-server", okBin},
		{"web1", "--spire-socket", "/s.sock", "--trust-domain", "example.org", "--spire-server", filepath.Join(t.TempDir(), "missing")},
		{"web2"},
	} {
		if out, err := runCmd(t, newHostsCmd(), append([]string{"revoke", "--store", db}, args...)...); err == nil {
			t.Errorf("%v accepted: %s", args, out)
		}
	}
	if h := hostIn(t, db, hexOf('a')); h.State != store.HostEnrolled {
		t.Errorf("a refused revoke changed the state to %s", h.State)
	}
	// Revoking twice says so.
	runCmd(t, newHostsCmd(), "revoke", "--store", db, "web1")
	if out, err := runCmd(t, newHostsCmd(), "revoke", "--store", db, "web1"); err != nil || !strings.Contains(out, "was already revoked") {
		t.Errorf("second revoke: %v %q", err, out)
	}
}

// TestHostsRevokeTrustDomainFromConfig: with --config naming a whole
// spire-server config, the agent ID's trust domain is its trust_domain.
func TestHostsRevokeTrustDomainFromConfig(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "state", "tpmid.db")
	cfg := writeFile(t, "server.conf", []byte(`server {
    trust_domain = "corp.example"
}
plugins {
    NodeAttestor "tpm" {
        plugin_cmd = "/usr/bin/tpmid-server-plugin"
        plugin_data {
            store = "`+db+`"
        }
    }
}
`))
	if out, err := runCmd(t, newHostsCmd(), "enroll", "--config", cfg, "--hostname", "web1", "--ek-hash", hexOf('a')); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	bin, argv := fakeSpireServer(t, 0, "")
	if out, err := runCmd(t, newHostsCmd(), "revoke", "--config", cfg, "web1", "--spire-socket", "/s.sock", "--spire-server", bin); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	b, _ := os.ReadFile(argv)
	if !strings.Contains(string(b), "spiffe://corp.example/spire/agent/tpm/"+hexOf('a')) {
		t.Errorf("argv %q", b)
	}
}

// TestHostsApprove: the proposed state becomes host-<hostname>@1 assigned
// to the host, the proposal is cleared, and the boot it describes is then
// allowed; without a proposal approve is an error.
func TestHostsApprove(t *testing.T) {
	logPath := realLogPath(t, logArch)
	l, err := readEventLog(logPath)
	if err != nil {
		t.Fatal(err)
	}
	in, err := offlineInput(l, []pcrs.Alg{pcrs.SHA256}, []int{0, 1, 2, 3, 4, 5, 6, 7})
	if err != nil {
		t.Fatal(err)
	}
	proposed := mustMarshal(t, profile.ProposedFrom(in, "proposed-web1"))

	tests := []struct {
		name     string
		proposed []byte
		args     []string
		wantName string
		wantErr  string
	}{
		{name: "default name", proposed: proposed, wantName: "host-web1"},
		{name: "named", proposed: proposed, args: []string{"--name", "arch-ws"}, wantName: "arch-ws"},
		{name: "nothing proposed", wantErr: "host web1 has no proposed boot state"},
		{name: "bad name", proposed: proposed, args: []string{"--name", "a@b"}, wantErr: "--name:"},
		{name: "shared name", proposed: proposed, args: []string{"--name", "fleet"}, wantErr: "profile fleet is also assigned to group prod"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := newDB(t)
			runCmd(t, newHostsCmd(), "enroll", "--store", db, "--hostname", "web1", "--ek-hash", hexOf('a'), "--group", "prod")
			withStore(t, db, func(ctx context.Context, tx store.Tx) error {
				if _, err := tx.PutProfile(ctx, store.Profile{Name: "fleet", Body: mustProfileBody(t, "fleet")}); err != nil {
					return err
				}
				if err := tx.Assign(ctx, store.Assignment{Profile: "fleet", Group: "prod"}); err != nil {
					return err
				}
				h, err := tx.HostByEK(ctx, hexOf('a'))
				if err != nil {
					return err
				}
				if tt.proposed != nil {
					h.Proposed, h.ProposedAt = tt.proposed, time.Now()
				}
				return tx.UpdateHost(ctx, h)
			})
			out, err := runCmd(t, newHostsCmd(), append([]string{"approve", "--store", db, "web1"}, tt.args...)...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				if h := hostIn(t, db, hexOf('a')); !slices.Equal(h.Proposed, tt.proposed) || len(h.Profiles) != 0 {
					t.Errorf("a refused approve changed the host: %d profiles, proposal kept %v", len(h.Profiles), h.Proposed != nil)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if !strings.Contains(out, "profile "+tt.wantName+"@1, assigned to web1") {
				t.Errorf("output %q", out)
			}
			h := hostIn(t, db, hexOf('a'))
			if h.Proposed != nil || !h.ProposedAt.IsZero() || !slices.Equal(h.Profiles, []string{tt.wantName}) {
				t.Errorf("host after approve: proposed %v, profiles %v", h.Proposed != nil, h.Profiles)
			}
			var sp *store.Profile
			withStore(t, db, func(ctx context.Context, tx store.Tx) (err error) {
				sp, err = tx.Profile(ctx, tt.wantName)
				return err
			})
			p, err := profile.ParseProfile(sp.Body)
			if err != nil || p.Name != tt.wantName || sp.Version != 1 {
				t.Fatalf("stored %s@%d: %v", sp.Name, sp.Version, err)
			}
			// The approved boot passes (fleet, requiring Secure Boot,
			// does not: the arch workstation boots without it).
			if out, err := runCmd(t, newAppraiseCmd(), "--store", db, "--eventlog", logPath, "--host", "web1"); err != nil {
				t.Errorf("approved boot: %v\n%s", err, out)
			}
		})
	}
}

// TestHostsReenrollRevoked: a revoked EK may be enrolled again (the same
// row: counters and proposal cleared, profiles kept); an enrolled one may
// not, and a revoked host's name stays bound to its EK.
func TestHostsReenrollRevoked(t *testing.T) {
	db := newDB(t)
	run := func(args ...string) (string, error) {
		return runCmd(t, newHostsCmd(), append(args[:1:1], append([]string{"--store", db}, args[1:]...)...)...)
	}
	if out, err := run("enroll", "--hostname", "web1", "--ek-hash", hexOf('a'), "--group", "old"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	withStore(t, db, func(ctx context.Context, tx store.Tx) error {
		if _, err := tx.PutProfile(ctx, store.Profile{Name: "own", Body: mustProfileBody(t, "own")}); err != nil {
			return err
		}
		h, err := tx.HostByEK(ctx, hexOf('a'))
		if err != nil {
			return err
		}
		h.Counters = &store.Counters{ResetCount: 9, Clock: 1000}
		h.Proposed, h.ProposedAt, h.Profiles = mustProfileBody(t, "p"), time.Now(), []string{"own"}
		return tx.UpdateHost(ctx, h)
	})
	if out, err := run("enroll", "--hostname", "web9", "--ek-hash", hexOf('a')); err == nil || !strings.Contains(err.Error(), "revoke it first") {
		t.Fatalf("enrolled EK enrolled again: %v %s", err, out)
	}
	run("revoke", "web1")
	if out, err := run("enroll", "--hostname", "web1", "--ek-hash", hexOf('b')); err == nil || !strings.Contains(err.Error(), "hostname web1 is already bound to EK "+hexOf('a')+" (revoked)") {
		t.Fatalf("a revoked host's name taken: %v %s", err, out)
	}
	out, err := run("enroll", "--hostname", "Web2", "--ek-hash", hexOf('a'), "--group", "new")
	if err != nil || !strings.Contains(out, "re-enrolled (was revoked; TPM counters reset) web2") {
		t.Fatalf("%v %s", err, out)
	}
	h := hostIn(t, db, hexOf('a'))
	if h.State != store.HostEnrolled || h.Hostname != "web2" || !slices.Equal(h.Groups, []string{"new"}) || h.Counters != nil ||
		h.Proposed != nil || !slices.Equal(h.Profiles, []string{"own"}) {
		t.Errorf("re-enrolled host %+v", h)
	}
}
