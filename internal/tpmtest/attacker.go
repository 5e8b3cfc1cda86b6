package tpmtest

import (
	"encoding/json"
	"fmt"

	"github.com/tpmid/tpmid/pkg/agent"
	"github.com/tpmid/tpmid/pkg/common/wire"
)

// RespondWithoutCredential is how root gets genuine quotes for a session
// whose credential its TPM cannot activate (it was made for another EK, or
// for a key root holds in software): the unmodified agent answers a copy
// of the challenge with the credential removed. The caller completes the
// evidence with the activation proof it can forge, and re-encodes it.
func RespondWithoutCredential(as *agent.Session, ch wire.Challenge) (*wire.Evidence, error) {
	ch.Credential = nil
	stripped, err := wire.Encode(ch)
	if err != nil {
		return nil, err
	}
	evRaw, err := as.Respond(stripped)
	if err != nil {
		return nil, fmt.Errorf("agent respond: %w", err)
	}
	return wire.DecodeEvidence(evRaw, 0)
}

// GuessedProofEvidence is the lying agent's whole answer to a challenge
// whose credential its TPM cannot activate: genuine quotes
// (RespondWithoutCredential) and an activation proof made from a guessed
// secret (all zeros), encoded as the session's evidence.
func GuessedProofEvidence(as *agent.Session, hello, challenge []byte) ([]byte, error) {
	var ch wire.Challenge
	if err := json.Unmarshal(challenge, &ch); err != nil {
		return nil, err
	}
	ev, err := RespondWithoutCredential(as, ch)
	if err != nil {
		return nil, err
	}
	ev.ActivationProof = wire.ActivationProof(make([]byte, 32), hello, challenge)
	return wire.EncodeEvidence(ev)
}
