package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Delivery is the server's message after the evidence was appraised and the
// node admitted, when tpmid's CA issued (or renewed) the agent's AK
// certificate: the chain, leaf first, DER. The agent keeps it with the AK
// blob and presents it in later hellos (the fast path).
type Delivery struct {
	Version     int      `json:"version"`
	AKCertChain [][]byte `json:"ak_cert_chain"`
}

// Ack is the agent's answer to a delivery.
type Ack struct {
	Version int  `json:"version"`
	Stored  bool `json:"stored"` // the chain is on disk for the next hello
}

// DecodeDelivery parses and checks a delivery.
func DecodeDelivery(b []byte) (*Delivery, error) {
	var d Delivery
	if err := decode("delivery", b, DefaultMaxChallenge+maxIntermediates*maxCert, &d); err != nil {
		return nil, err
	}
	if err := checkVersion("delivery", d.Version); err != nil {
		return nil, err
	}
	if len(d.AKCertChain) == 0 || len(d.AKCertChain) > maxIntermediates {
		return nil, malformed("%d AK certificates, want 1..%d", len(d.AKCertChain), maxIntermediates)
	}
	for i, c := range d.AKCertChain {
		if err := checkLen(fmt.Sprintf("AK certificate %d", i), c, 1, maxCert); err != nil {
			return nil, err
		}
	}
	return &d, nil
}

// DecodeAck parses and checks an acknowledgement.
func DecodeAck(b []byte) (*Ack, error) {
	var a Ack
	if err := decode("acknowledgement", b, 256, &a); err != nil {
		return nil, err
	}
	if err := checkVersion("acknowledgement", a.Version); err != nil {
		return nil, err
	}
	return &a, nil
}

// IsDelivery tells a delivery from a challenge: both come to the agent as
// SPIRE challenges; only a delivery has the ak_cert_chain key.
func IsDelivery(b []byte) bool {
	if len(b) > DefaultMaxChallenge+maxIntermediates*maxCert {
		return false
	}
	var keys map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&keys); err != nil {
		return false
	}
	_, ok := keys["ak_cert_chain"]
	return ok
}
