package tpm

import "errors"

// Sentinel errors callers can branch on with errors.Is. Every error returned
// by this package wraps one of these or a lower-level cause with context.
var (
	// ErrBadDevice: the device string is not "", "simulator", an absolute
	// path, tcp://host:port or unix:///path.
	ErrBadDevice = errors.New("invalid TPM device")
	// ErrNoTPM: autodetection found neither /dev/tpmrm0 nor /dev/tpm0.
	ErrNoTPM = errors.New("no TPM found")
	// ErrClosed: the TPM (or AK) was already closed.
	ErrClosed = errors.New("TPM is closed")
	// ErrNoEK: the TPM has no usable endorsement key of the requested kind.
	ErrNoEK = errors.New("no usable endorsement key")
	// ErrTooLarge: something read from the TPM or disk exceeds its bound
	// (an EK certificate NV index, an event log, an AK blob, a response).
	ErrTooLarge = errors.New("too large")
	// ErrBadDER: bytes are not a complete DER SEQUENCE.
	ErrBadDER = errors.New("malformed DER")
	// ErrBadAlgorithm: an unknown EK, AK or PCR bank algorithm.
	ErrBadAlgorithm = errors.New("unsupported algorithm")
	// ErrBadPCR: a PCR index outside 0..23 or an empty selection.
	ErrBadPCR = errors.New("invalid PCR selection")
	// ErrNoEventLog: the measurement log file does not exist (a simulator,
	// swtpm, or a machine without TPM event log support).
	ErrNoEventLog = errors.New("no TPM event log")
	// ErrActivation: TPM2_ActivateCredential failed, typically because
	// the credential was made for another EK or AK.
	ErrActivation = errors.New("credential activation failed")
)
