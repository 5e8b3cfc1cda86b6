package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// TrustDomain is the trust domain of the harness's SPIRE server.
const TrustDomain = "example.org"

// PluginName is the NodeAttestor name tpmid is configured under.
const PluginName = "tpm"

// ServerOptions configure the tpm NodeAttestor in spire-server.
type ServerOptions struct {
	EKCABundle      string   // ek_ca_bundle: file or directory
	EKHashAllowlist string   // ek_hash_allowlist
	EKPolicy        string   // ek_policy ("" = plugin default, cert)
	PCRBanks        []string // pcr_banks ("" = plugin default)
	PCRSelectors    bool     // pcr_selectors
	ExtraPluginData string   // appended verbatim inside plugin_data
	LogLevel        string   // default DEBUG
	// Store is the tpmid store (SQLite path or postgres:// DSN); empty is
	// tpmid.db in the server's directory, never the plugin's default path.
	Store      string
	Enrollment string // enrollment ("" = plugin default, open)
	// ExtraNodeAttestors are NodeAttestor blocks added verbatim to the
	// plugins block, beside tpmid's (bench-spire's external no-op pair).
	ExtraNodeAttestors string
}

// Server is a running spire-server.
type Server struct {
	*Process
	Dir        string // config and data
	SocketPath string
	Port       int
	bin        string
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func hclString(s string) string { return strconv.Quote(s) }

func hclList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = hclString(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func serverPluginData(o ServerOptions) string {
	var b strings.Builder
	if o.EKCABundle != "" {
		fmt.Fprintf(&b, "        ek_ca_bundle = %s\n", hclString(o.EKCABundle))
	}
	if o.EKHashAllowlist != "" {
		fmt.Fprintf(&b, "        ek_hash_allowlist = %s\n", hclString(o.EKHashAllowlist))
	}
	if o.EKPolicy != "" {
		fmt.Fprintf(&b, "        ek_policy = %s\n", hclString(o.EKPolicy))
	}
	if len(o.PCRBanks) > 0 {
		fmt.Fprintf(&b, "        pcr_banks = %s\n", hclList(o.PCRBanks))
	}
	if o.PCRSelectors {
		b.WriteString("        pcr_selectors = true\n")
	}
	if o.Store != "" {
		fmt.Fprintf(&b, "        store = %s\n", hclString(o.Store))
	}
	if o.Enrollment != "" {
		fmt.Fprintf(&b, "        enrollment = %s\n", hclString(o.Enrollment))
	}
	if o.ExtraPluginData != "" {
		b.WriteString(o.ExtraPluginData + "\n")
	}
	return b.String()
}

// ServerConfig renders a spire-server config: loopback, sqlite3, disk keys,
// and tpmid's NodeAttestor loaded with plugin_cmd and plugin_checksum.
func ServerConfig(dataDir, socketPath string, port int, pluginCmd, pluginSum string, o ServerOptions) string {
	level := o.LogLevel
	if level == "" {
		level = "DEBUG"
	}
	return fmt.Sprintf(`server {
    bind_address = "127.0.0.1"
    bind_port = "%d"
    socket_path = %s
    trust_domain = %q
    data_dir = %s
    log_level = %q
    # "text" stamps each line to the nanosecond (the default, to the second)
    log_format = "text"
    ca_ttl = "24h"
    default_x509_svid_ttl = "1h"
}

plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = %s
        }
    }
    KeyManager "disk" {
        plugin_data {
            keys_path = %s
        }
    }
    NodeAttestor %q {
        plugin_cmd = %s
        plugin_checksum = %q
        plugin_data {
%s        }
    }
%s}
`, port, hclString(socketPath), TrustDomain, hclString(dataDir), level,
		hclString(filepath.Join(dataDir, "datastore.sqlite3")),
		hclString(filepath.Join(dataDir, "keys.json")),
		PluginName, hclString(pluginCmd), pluginSum, serverPluginData(o), o.ExtraNodeAttestors)
}

// pluginEnv is the environment added for spire-server and spire-agent:
// TMPDIR is the harness's socket directory, so that the plugins they start
// put their go-plugin unix sockets there (go-plugin's server listens on a
// temporary file of os.TempDir(); newer releases also honour
// PLUGIN_UNIX_SOCKET_DIR, which SPIRE does not set), not in /tmp, where
// they would outlive the run.
func pluginEnv(sockDir string) []string {
	return []string{"TMPDIR=" + sockDir, "PLUGIN_UNIX_SOCKET_DIR=" + sockDir}
}

// StartServer writes the config into dir, starts spire-server with its log
// in logPath and waits until its healthcheck passes.
func StartServer(ctx context.Context, spireBin, dir, sockDir, logPath string, plugins *Plugins, o ServerOptions) (*Server, error) {
	dataDir := filepath.Join(dir, "data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	if o.Store == "" {
		o.Store = filepath.Join(dir, "tpmid.db")
	}
	sock := filepath.Join(sockDir, "server.sock")
	conf := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(conf, []byte(ServerConfig(dataDir, sock, port, plugins.Server, plugins.ServerSum, o)), 0o644); err != nil {
		return nil, err
	}
	bin := filepath.Join(spireBin, "spire-server")
	p, err := startProcess("spire-server", logPath, dir, pluginEnv(sockDir), bin, "run", "-config", conf)
	if err != nil {
		return nil, err
	}
	s := &Server{Process: p, Dir: dir, SocketPath: sock, Port: port, bin: bin}
	if err := s.waitHealthy(ctx, 60*time.Second); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Server) waitHealthy(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if exited, err := s.Exited(); exited {
			return fmt.Errorf("spire-server exited (%v): %s", err, lastLines(s.Log(), 8))
		}
		if _, err := os.Stat(s.SocketPath); err == nil {
			if _, last = runCmd(ctx, "", s.Dir, s.bin, "healthcheck", "-socketPath", s.SocketPath, "-shallow"); last == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("spire-server not healthy after %s (%v): %s", timeout, last, lastLines(s.Log(), 8))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Bundle returns the server's trust bundle in PEM (spire-server bundle show).
func (s *Server) Bundle(ctx context.Context) ([]byte, error) {
	out, err := runCmd(ctx, "", s.Dir, s.bin, "bundle", "show", "-socketPath", s.SocketPath)
	if err != nil {
		return nil, err
	}
	if !strings.Contains(out, "BEGIN CERTIFICATE") {
		return nil, fmt.Errorf("spire-server bundle show printed no certificate: %s", lastLines(out, 3))
	}
	return []byte(out), nil
}

// AgentRecord is one agent as `spire-server agent list -output json` shows it.
type AgentRecord struct {
	ID              string
	AttestationType string
	Selectors       []string // "type:value"
	CanReattest     bool
	Banned          bool
}

// Agents lists the attested agents.
func (s *Server) Agents(ctx context.Context) ([]AgentRecord, error) {
	out, err := runCmd(ctx, "", s.Dir, s.bin, "agent", "list", "-socketPath", s.SocketPath, "-output", "json")
	if err != nil {
		return nil, err
	}
	return ParseAgentList([]byte(out))
}

// ParseAgentList decodes `spire-server agent list -output json`.
func ParseAgentList(out []byte) ([]AgentRecord, error) {
	var resp struct {
		Agents []struct {
			ID struct {
				TrustDomain string `json:"trust_domain"`
				Path        string `json:"path"`
			} `json:"id"`
			AttestationType string `json:"attestation_type"`
			Selectors       []struct {
				Type  string `json:"type"`
				Value string `json:"value"`
			} `json:"selectors"`
			Banned      bool `json:"banned"`
			CanReattest bool `json:"can_reattest"`
		} `json:"agents"`
	}
	if err := json.Unmarshal(out, &resp); err != nil {
		return nil, fmt.Errorf("parsing agent list: %w", err)
	}
	var recs []AgentRecord
	for _, a := range resp.Agents {
		r := AgentRecord{
			ID:              "spiffe://" + a.ID.TrustDomain + a.ID.Path,
			AttestationType: a.AttestationType,
			CanReattest:     a.CanReattest,
			Banned:          a.Banned,
		}
		for _, sel := range a.Selectors {
			r.Selectors = append(r.Selectors, sel.Type+":"+sel.Value)
		}
		recs = append(recs, r)
	}
	return recs, nil
}

// AgentOptions configure one spire-agent and its tpm NodeAttestor.
type AgentOptions struct {
	TPMDevice    string // tpm_device
	EKAlgorithm  string // ek_algorithm
	AKAlgorithm  string // ak_algorithm
	EventLogPath string // event_log_path
	LogLevel     string // default DEBUG (the plugin logs its TPM command count at debug)
	Timeout      time.Duration
	// PluginDataDir is the plugin's data_dir; empty is "tpmid" in the
	// agent's data directory. A directory kept across agents keeps the AK
	// and its certificate, as a machine's disk does.
	PluginDataDir string
}

// AgentConfig renders a spire-agent config that joins the server on
// loopback with tpmid's NodeAttestor.
func AgentConfig(dataDir, socketPath, bundlePath string, serverPort int, pluginCmd, pluginSum string, o AgentOptions) string {
	level := o.LogLevel
	if level == "" {
		level = "DEBUG"
	}
	var pd strings.Builder
	fmt.Fprintf(&pd, "            tpm_device = %s\n", hclString(o.TPMDevice))
	if o.EKAlgorithm != "" {
		fmt.Fprintf(&pd, "            ek_algorithm = %s\n", hclString(o.EKAlgorithm))
	}
	if o.AKAlgorithm != "" {
		fmt.Fprintf(&pd, "            ak_algorithm = %s\n", hclString(o.AKAlgorithm))
	}
	if o.EventLogPath != "" {
		fmt.Fprintf(&pd, "            event_log_path = %s\n", hclString(o.EventLogPath))
	}
	pluginDir := o.PluginDataDir
	if pluginDir == "" {
		pluginDir = filepath.Join(dataDir, "tpmid")
	}
	fmt.Fprintf(&pd, "            data_dir = %s\n", hclString(pluginDir))
	attestor := fmt.Sprintf(`    NodeAttestor %q {
        plugin_cmd = %s
        plugin_checksum = %q
        plugin_data {
%s        }
    }
`, PluginName, hclString(pluginCmd), pluginSum, pd.String())
	return agentConfig(dataDir, socketPath, bundlePath, serverPort, level, "", attestor)
}

// agentConfig renders a spire-agent config around one NodeAttestor block
// (attestor) and extra lines of the agent block, the rest the same for
// every agent the harness runs, so that tpmid and join_token agents differ
// only in how they attest.
func agentConfig(dataDir, socketPath, bundlePath string, serverPort int, logLevel, extra, attestor string) string {
	return fmt.Sprintf(`agent {
    data_dir = %s
    log_level = %q
    log_format = "text"
    server_address = "127.0.0.1"
    server_port = "%d"
    socket_path = %s
    trust_bundle_path = %s
    trust_domain = %q
%s}

plugins {
%s    KeyManager "memory" {
        plugin_data {}
    }
    WorkloadAttestor "unix" {
        plugin_data {}
    }
}
`, hclString(dataDir), logLevel, serverPort, hclString(socketPath), hclString(bundlePath), TrustDomain, extra, attestor)
}

// Attestation is the outcome of one agent's node attestation.
type Attestation struct {
	Agent       *Process
	SPIFFEID    string
	Selectors   []string
	Duration    time.Duration // spire-agent start to "Node attestation was successful" in its log
	TPMCommands string        // from the plugin's "TPM session done" debug line, if logged
}

// ErrRefused is returned by RunAgent when the server refused the agent.
var ErrRefused = errors.New("attestation refused")

// RefusedError carries the server's reason for refusing an agent.
type RefusedError struct {
	Line string // the server log line saying why
}

func (e *RefusedError) Error() string { return "attestation refused: " + e.Line }
func (e *RefusedError) Unwrap() error { return ErrRefused }

const (
	agentAttestedLine = "Node attestation was successful"
	serverRefusedLine = "Attestation refused"
	// spire-agent logs this and retries when attestation failed other than
	// with PermissionDenied (e.g. the agent plugin could not use the TPM).
	agentRetryLine = "Failed to retrieve attestation result"
)

var tpmCommandsRe = regexp.MustCompile(`tpm_commands="?([^"\s]+)"?`)

// writeAgentFiles makes a new agent's directory dir: its data directory,
// the server's bundle, and the config render returns, which it writes to
// dir/agent.conf and returns the path of. The agent's Workload API socket
// is in sockDir.
func writeAgentFiles(ctx context.Context, srv *Server, dir, sockDir string, render func(dataDir, sock, bundlePath string) string) (string, error) {
	dataDir := filepath.Join(dir, "data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", err
	}
	bundle, err := srv.Bundle(ctx)
	if err != nil {
		return "", err
	}
	bundlePath := filepath.Join(dir, "bundle.pem")
	if err := os.WriteFile(bundlePath, bundle, 0o644); err != nil {
		return "", err
	}
	conf := filepath.Join(dir, "agent.conf")
	sock := filepath.Join(sockDir, filepath.Base(dir)+".sock")
	if err := os.WriteFile(conf, []byte(render(dataDir, sock, bundlePath)), 0o644); err != nil {
		return "", err
	}
	return conf, nil
}

// RunAgent writes an agent config into dir, fetches the server's bundle,
// starts spire-agent and waits until it attests (it is left running: the
// caller stops it) or the server refuses it (the agent is stopped and a
// *RefusedError returned).
func RunAgent(ctx context.Context, spireBin, dir, sockDir, logPath string, srv *Server, plugins *Plugins, o AgentOptions) (*Attestation, error) {
	conf, err := writeAgentFiles(ctx, srv, dir, sockDir, func(dataDir, sock, bundlePath string) string {
		return AgentConfig(dataDir, sock, bundlePath, srv.Port, plugins.Agent, plugins.AgentSum, o)
	})
	if err != nil {
		return nil, err
	}
	// Remember how far the server log was, to look for this agent's refusal only.
	srvLogStart := len(srv.Log())

	timeout := o.Timeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	p, err := startProcess("spire-agent", logPath, dir, pluginEnv(sockDir), filepath.Join(spireBin, "spire-agent"), "run", "-config", conf)
	if err != nil {
		return nil, err
	}
	type result struct {
		d     time.Duration
		found string
		err   error
	}
	attested := make(chan result, 1)
	go func() {
		found, err := waitForLog(wctx, p.LogPath, p.Done(), agentAttestedLine, agentRetryLine)
		attested <- result{time.Since(p.Started), found, err}
	}()
	refused := make(chan string, 1)
	go func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			log := srv.Log()
			if len(log) > srvLogStart {
				for _, l := range strings.Split(log[srvLogStart:], "\n") {
					if strings.Contains(l, serverRefusedLine) {
						refused <- l
						return
					}
				}
			}
			select {
			case <-wctx.Done():
				return
			case <-t.C:
			}
		}
	}()

	select {
	case r := <-attested:
		if r.err == nil && r.found == agentRetryLine {
			r.err = errors.New(agentRetryLine)
		}
		if r.err != nil {
			cancel()
			p.Stop()
			// The agent may have exited because it was refused.
			if line := findRefusal(srv.Log()[srvLogStart:]); line != "" {
				return nil, &RefusedError{Line: line}
			}
			if line := findLine(p.Log(), agentRetryLine); line != "" {
				return nil, fmt.Errorf("spire-agent did not attest: %s", line)
			}
			return nil, fmt.Errorf("spire-agent did not attest (%v): %s", r.err, lastLines(p.Log(), 8))
		}
		a := &Attestation{Agent: p, Duration: r.d}
		if m := tpmCommandsRe.FindStringSubmatch(p.Log()); m != nil {
			a.TPMCommands = m[1]
		}
		if err := a.fillFromServer(ctx, srv); err != nil {
			p.Stop()
			return nil, err
		}
		return a, nil
	case line := <-refused:
		cancel()
		p.Stop()
		return nil, &RefusedError{Line: line}
	}
}

func findRefusal(log string) string { return findLine(log, serverRefusedLine) }

func findLine(log, needle string) string {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, needle) {
			return l
		}
	}
	return ""
}

var agentIDRe = regexp.MustCompile(`spiffe://[^\s"]+/spire/agent/[^\s"]+`)

// fillFromServer finds the agent's SPIFFE ID in its own log and its
// selectors in `spire-server agent list`.
func (a *Attestation) fillFromServer(ctx context.Context, srv *Server) error {
	var id string
	for _, l := range strings.Split(a.Agent.Log(), "\n") {
		if strings.Contains(l, agentAttestedLine) {
			id = agentIDRe.FindString(l)
			break
		}
	}
	recs, err := srv.Agents(ctx)
	if err != nil {
		return err
	}
	for _, r := range recs {
		if id == "" || r.ID == id {
			a.SPIFFEID, a.Selectors = r.ID, r.Selectors
			if id != "" {
				return nil
			}
		}
	}
	if id == "" && len(recs) == 1 {
		return nil
	}
	return fmt.Errorf("agent %q not found in spire-server agent list (%d agents)", id, len(recs))
}
