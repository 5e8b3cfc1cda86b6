package tpmtest

import (
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
