package demo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// SPIRE's own join_token node attestation, beside tpmid's on the same
// spire-server: the baseline bench-spire measures tpmid against (an agent
// that proves nothing but a one-time token costs SPIRE's minimum).

// joinTokenAttestor is the server's built-in join_token NodeAttestor block.
const joinTokenAttestor = `    NodeAttestor "join_token" {
        plugin_data {}
    }
`

// StartServerWithJoinToken is StartServer with SPIRE's join_token
// NodeAttestor configured beside tpmid's, so that both kinds of agent attest
// to one server.
func (e *Env) StartServerWithJoinToken(ctx context.Context, name string, o ServerOptions) (*Server, error) {
	var s *Server
	err := e.Step("start spire-server with tpm and join_token (healthy)", func() error {
		dir := filepath.Join(e.LogDir, name)
		sockDir := filepath.Join(e.sockDir, name)
		dataDir := filepath.Join(dir, "data")
		for _, d := range []string{sockDir, dataDir} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				return err
			}
		}
		port, err := freePort()
		if err != nil {
			return err
		}
		if o.Store == "" {
			o.Store = filepath.Join(dir, "tpmid.db")
		}
		sock := filepath.Join(sockDir, "server.sock")
		conf, err := withJoinToken(ServerConfig(dataDir, sock, port, e.Plugins.Server, e.Plugins.ServerSum, o))
		if err != nil {
			return err
		}
		confPath := filepath.Join(dir, "server.conf")
		if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
			return err
		}
		bin := filepath.Join(e.SPIREBin, "spire-server")
		p, err := startProcess("spire-server", filepath.Join(e.LogDir, name+".log"), dir, pluginEnv(sockDir), bin, "run", "-config", confPath)
		if err != nil {
			return err
		}
		s = &Server{Process: p, Dir: dir, SocketPath: sock, Port: port, bin: bin}
		if err := s.waitHealthy(ctx, 60*time.Second); err != nil {
			s.Stop()
			return err
		}
		e.onClose(s.Stop)
		return nil
	})
	return s, err
}

// withJoinToken adds the join_token NodeAttestor to a ServerConfig.
func withJoinToken(conf string) (string, error) {
	if !strings.Contains(conf, "\nplugins {\n") {
		return "", errors.New("server config has no plugins block to add join_token to")
	}
	return strings.Replace(conf, "\nplugins {\n", "\nplugins {\n"+joinTokenAttestor, 1), nil
}

var tokenRe = regexp.MustCompile(`(?m)^Token:\s*(\S+)`)

// JoinToken makes a one-time join token with `spire-server token generate`.
func (s *Server) JoinToken(ctx context.Context) (string, error) {
	out, err := runCmd(ctx, "", s.Dir, s.bin, "token", "generate", "-socketPath", s.SocketPath, "-ttl", "600")
	if err != nil {
		return "", err
	}
	return parseToken(out)
}

// parseToken reads the token from `spire-server token generate`'s output
// ("Token: <uuid>").
func parseToken(out string) (string, error) {
	m := tokenRe.FindStringSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("spire-server token generate printed no token: %s", lastLines(out, 3))
	}
	return m[1], nil
}

// JoinTokenAgentConfig renders a spire-agent config that attests with
// SPIRE's join_token NodeAttestor; everything else is as AgentConfig's.
func JoinTokenAgentConfig(dataDir, socketPath, bundlePath string, serverPort int, token, logLevel string) string {
	if logLevel == "" {
		logLevel = "DEBUG"
	}
	return agentConfig(dataDir, socketPath, bundlePath, serverPort, logLevel,
		fmt.Sprintf("    join_token = %q\n", token),
		"    NodeAttestor \"join_token\" {\n        plugin_data {}\n    }\n")
}

// AttestJoinToken makes a join token on srv and runs a fresh spire-agent
// (its files in LogDir/name) with it; Duration is, as for RunAgent, from the
// agent's start to "Node attestation was successful" in its log. The agent
// is left running until Close; stop it earlier with Agent.Stop.
func (e *Env) AttestJoinToken(ctx context.Context, srv *Server, name, logLevel string, timeout time.Duration) (*Attestation, error) {
	var a *Attestation
	err := e.Step("start spire-agent "+name+" (join_token), wait for attestation", func() error {
		token, err := srv.JoinToken(ctx)
		if err != nil {
			return err
		}
		a, err = e.runOtherAgent(ctx, srv, name, timeout, func(dataDir, sock, bundlePath string) string {
			return JoinTokenAgentConfig(dataDir, sock, bundlePath, srv.Port, token, logLevel)
		})
		return err
	})
	return a, err
}

// AttestExternal runs a fresh spire-agent (its files in LogDir/name) whose
// only NodeAttestor is the external plugin attestor at pluginCmd, with no
// plugin_data, as AttestJoinToken does for join_token (bench-spire's no-op
// pair; the server must have its server side).
func (e *Env) AttestExternal(ctx context.Context, srv *Server, name, attestor, pluginCmd, pluginSum, logLevel string, timeout time.Duration) (*Attestation, error) {
	if logLevel == "" {
		logLevel = "DEBUG"
	}
	block := fmt.Sprintf("    NodeAttestor %q {\n        plugin_cmd = %s\n        plugin_checksum = %q\n        plugin_data {}\n    }\n",
		attestor, hclString(pluginCmd), pluginSum)
	var a *Attestation
	err := e.Step("start spire-agent "+name+" ("+attestor+"), wait for attestation", func() error {
		var err error
		a, err = e.runOtherAgent(ctx, srv, name, timeout, func(dataDir, sock, bundlePath string) string {
			return agentConfig(dataDir, sock, bundlePath, srv.Port, logLevel, "", block)
		})
		return err
	})
	return a, err
}

// runOtherAgent starts a fresh spire-agent in LogDir/name with the config
// conf renders and waits until it attests; for agents that are not tpmid's
// (RunAgent is tpmid's, with its refusal reporting).
func (e *Env) runOtherAgent(ctx context.Context, srv *Server, name string, timeout time.Duration, conf func(dataDir, sock, bundlePath string) string) (*Attestation, error) {
	dir := filepath.Join(e.LogDir, name)
	confPath, err := writeAgentFiles(ctx, srv, dir, e.sockDir, conf)
	if err != nil {
		return nil, err
	}
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	p, err := startProcess("spire-agent", filepath.Join(e.LogDir, name+".log"), dir, pluginEnv(e.sockDir), filepath.Join(e.SPIREBin, "spire-agent"), "run", "-config", confPath)
	if err != nil {
		return nil, err
	}
	e.onClose(p.Stop)
	found, err := waitForLog(wctx, p.LogPath, p.Done(), agentAttestedLine, agentRetryLine)
	d := time.Since(p.Started)
	if err == nil && found == agentRetryLine {
		err = errors.New(agentRetryLine)
	}
	if err != nil {
		p.Stop()
		return nil, fmt.Errorf("spire-agent %s did not attest (%v): %s", name, err, lastLines(p.Log(), 8))
	}
	a := &Attestation{Agent: p, Duration: d}
	if err := a.fillFromServer(ctx, srv); err != nil {
		p.Stop()
		return nil, err
	}
	return a, nil
}

// AttestAs is Attest with the agent's files in LogDir/name, so that each
// call on one node runs a new agent (a fresh data directory: no SVID or AK
// kept from an earlier run) rather than restarting the last one.
func (e *Env) AttestAs(ctx context.Context, srv *Server, node *Node, name string, o AgentOptions) (*Attestation, error) {
	if o.TPMDevice == "" {
		o.TPMDevice = node.Device
	}
	if o.EventLogPath == "" {
		o.EventLogPath = node.EventLogPath
	}
	var a *Attestation
	err := e.Step("start spire-agent "+name+" on "+node.Name+", wait for attestation", func() error {
		var err error
		a, err = RunAgent(ctx, e.SPIREBin, filepath.Join(e.LogDir, name), e.sockDir, filepath.Join(e.LogDir, name+".log"), srv, e.Plugins, o)
		if err != nil {
			return err
		}
		e.onClose(a.Agent.Stop)
		return nil
	})
	return a, err
}
