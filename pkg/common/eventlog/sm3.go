package eventlog

import (
	"github.com/emmansun/gmsm/sm3"

	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// SM3 (GB/T 32905, TPM_ALG_SM3_256) has no standard library implementation;
// gmsm's sm3 package (pure Go plus assembly, depends only on x/sys/cpu) makes
// sm3_256 banks replayable, as in the Hygon H-CRTM log we test against.
func init() { pcrs.RegisterSM3(sm3.New) }
