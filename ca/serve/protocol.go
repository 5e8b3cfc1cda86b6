package serve

// The JSON of go.step.sm/crypto/tpm/attestation (v0.92.0, client.go): the
// client POSTs an attestationRequest to <base>/attest and gets an
// attestationResponse (TPM2_MakeCredential output), activates the
// credential with its TPM and POSTs the secret to <base>/secret, which
// answers the AK certificate chain. []byte fields are base64 (standard,
// padded) in JSON, as encoding/json writes them.

// TPMInfo is what the client says about its TPM. It is the client's claim
// and is not used for the certificate: the TPM attributes come from the
// verified EK certificate.
type TPMInfo struct {
	// Version is go-attestation's TPMVersion: 2 (TPMVersion20); 0
	// (absent) is taken as 2, anything else is refused.
	Version         uint8  `json:"version,omitempty"`
	Manufacturer    string `json:"manufacturer,omitempty"`
	Model           string `json:"model,omitempty"`
	FirmwareVersion string `json:"firmwareVersion,omitempty"`
}

// AttestationParameters are go-attestation's AK attestation parameters:
// the AK's TPMT_PUBLIC and its creation data, creation attestation
// (TPM2_CertifyCreation-like TPMS_ATTEST of type creation) and the AK's
// signature over it.
type AttestationParameters struct {
	Public                  []byte `json:"public,omitempty"`
	UseTCSDActivationFormat bool   `json:"useTCSDActivationFormat,omitempty"`
	CreateData              []byte `json:"createData,omitempty"`
	CreateAttestation       []byte `json:"createAttestation,omitempty"`
	CreateSignature         []byte `json:"createSignature,omitempty"`
}

// AttestRequest is the body of POST /attest.
type AttestRequest struct {
	TPMInfo TPMInfo `json:"tpmInfo"`
	// EK is the EK public key, PKIX DER.
	EK []byte `json:"ek,omitempty"`
	// EKCerts are DER certificates: the EK certificate first, then
	// intermediates that help its chain (the step client sends only the
	// EK certificate).
	EKCerts [][]byte `json:"ekCerts,omitempty"`
	// AKCert is an AK certificate the client already holds. The step
	// client never sets it; it is ignored (a challenge is always made).
	AKCert []byte                `json:"akCert,omitempty"`
	Params AttestationParameters `json:"params"`
}

// AttestResponse is the answer to POST /attest: TPM2_MakeCredential's
// credentialBlob and encrypted seed, for the client's
// TPM2_ActivateCredential.
type AttestResponse struct {
	Credential []byte `json:"credential"`
	Secret     []byte `json:"secret"`
}

// SecretRequest is the body of POST /secret: the activated (decrypted)
// secret.
type SecretRequest struct {
	Secret []byte `json:"secret"`
}

// SecretResponse is the answer to POST /secret: the AK certificate chain,
// DER, leaf first (the AK certificate, then the intermediate that issued
// it; the root is the relying party's).
type SecretResponse struct {
	Chain [][]byte `json:"chain"`
}

// ErrorResponse is the body of every refusal (4xx, 5xx).
type ErrorResponse struct {
	// Error is the reason, a stable snake_case string (the same as the
	// tpmid_ca_refused_total reason label and the attempt record's).
	Error string `json:"error"`
	// Message says what was wrong, for a human.
	Message string `json:"message"`
}
