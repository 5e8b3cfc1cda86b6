// Package floor holds bench-spire's external NodeAttestor pair that does
// nothing: the agent plugin sends one random payload and the server plugin
// admits it as spiffe://<trust domain>/spire/agent/floor/<payload>, with no
// key, no challenge and no check. It measures what SPIRE's external plugin
// model costs by itself (spire-agent hashing the binary for plugin_checksum,
// exec, the go-plugin handshake, the SDK's Init and Configure, one stream),
// so that tpmid's own share of start-to-attested can be told from it.
//
// It admits anyone: it is built only by test/bench/spire, into a temporary
// folder, and configured only on that harness's loopback spire-server.
package floor

// Name is the NodeAttestor name the pair is configured under.
const Name = "floor"
