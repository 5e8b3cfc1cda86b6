//go:build cloudkms

package keys

// The cloud KMSs add some 23 MB to the tpmid binary: they are built in
// only with `go build -tags cloudkms ./cmd/tpmid`. Their URIs then go
// through the same Open/Create/Signer path as softkms, pkcs11 and tpmkms.
import (
	_ "go.step.sm/crypto/kms/awskms"
	_ "go.step.sm/crypto/kms/azurekms"
	_ "go.step.sm/crypto/kms/cloudkms"
)
