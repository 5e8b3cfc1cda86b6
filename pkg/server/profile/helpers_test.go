package profile

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/tpmid/tpmid/internal/realdata"
	"github.com/tpmid/tpmid/pkg/common/eventlog"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// realLog parses one real event log, by its path under the real-evidence
// folder; the test is skipped when the folder is absent.
func realLog(tb testing.TB, rel string) *eventlog.Log {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(realdata.Dir(tb), rel))
	if err != nil {
		tb.Fatal(err)
	}
	l, err := eventlog.Parse(b)
	if err != nil {
		tb.Fatalf("%s: %v", rel, err)
	}
	return l
}

// quoteOf is what a TPM that booted as l would quote for pcrList in bank:
// the log's own replay, and the reset value for PCRs it never extends.
func quoteOf(tb testing.TB, l *eventlog.Log, bank pcrs.Alg, pcrList []int) pcrs.Values {
	tb.Helper()
	vals, err := l.Replay()
	if err != nil {
		tb.Fatal(err)
	}
	q := pcrs.Values{}
	for _, i := range pcrList {
		v, ok := vals.Get(bank, i)
		if !ok {
			v = bank.ResetValue(i)
		}
		q.Set(bank, i, v)
	}
	return q
}

// inputFor verifies l against quoted as the server does and returns the
// appraisal input. A mismatch is allowed (the PCR is then not verified).
func inputFor(tb testing.TB, l *eventlog.Log, quoted pcrs.Values) Input {
	tb.Helper()
	r, err := eventlog.VerifyAgainst(l, quoted)
	if r == nil {
		tb.Fatalf("VerifyAgainst: %v", err)
	}
	sb, err := eventlog.VerifiedSecureBoot(l, r)
	if err != nil {
		tb.Fatalf("VerifiedSecureBoot: %v", err)
	}
	return Input{Log: l, Replayed: r, Quoted: quoted, SecureBoot: sb}
}

// selfInput is inputFor against l's own replay: the boot l describes.
func selfInput(tb testing.TB, l *eventlog.Log, bank pcrs.Alg, pcrList []int) Input {
	tb.Helper()
	return inputFor(tb, l, quoteOf(tb, l, bank, pcrList))
}

func pcrRange(lo, hi int) []int {
	var out []int
	for i := lo; i <= hi; i++ {
		out = append(out, i)
	}
	return out
}
