package eventlog

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// Tests of VerifyAgainst checking and replaying only the quoted banks
// (docs/eventlog.md, 2026-11-25): digests in an unquoted bank are bound to
// nothing and are ignored, but every record whose digest is defined over
// its data must carry that hash in the quoted bank.

var threeBanks = []pcrs.Alg{pcrs.SHA1, pcrs.SHA256, pcrs.SHA384}

// junk is a digest of alg's size that is no hash of anything we measure.
func junk(alg pcrs.Alg) []byte { return bytes.Repeat([]byte{0xA5}, alg.Size()) }

// ownQuote is what a TPM that measured l would quote in bank for every PCR
// l extends.
func ownQuote(t *testing.T, l *Log, bank pcrs.Alg) pcrs.Values {
	t.Helper()
	all, err := l.Replay()
	if err != nil {
		t.Fatal(err)
	}
	q := pcrs.Values{}
	for _, i := range all.Indices(bank) {
		v, _ := all.Get(bank, i)
		q.Set(bank, i, bytes.Clone(v))
	}
	if len(q) == 0 {
		t.Fatalf("the log extends nothing in %s", bank)
	}
	return q
}

// TestQuotedBankDataDigest plays root editing the data of a record whose
// digest is defined over its data (e.g. SecureBoot 0 -> 1), keeping the
// quoted sha256 digest that the TPM measured and making the unquoted sha1
// and sha384 digests the hash of the forged data: refused as tampered.
// The mirror case, a log whose unquoted banks are garbage but whose quoted
// bank is right, is accepted, and Secure Boot is read from it.
func TestQuotedBankDataDigest(t *testing.T) {
	auth := EFIVariableData(EFIImageSecurityDBID, "db", []byte("signer certificate"))
	for _, tc := range []struct {
		name           string
		pcr            uint32
		typ            EventType
		honest, forged []byte
	}{
		{"separator", 4, EvSeparator, []byte{0, 0, 0, 0}, []byte{1, 0, 0, 0}},
		{"EFI action", 5, EvEFIAction, []byte(EBSInvocation), []byte("Exit Boot Services Invocatioo")},
		{"SecureBoot variable", 7, EvEFIVariableDriverConf, sbVar([]byte{0}), sbVar([]byte{1})},
		{"boot variable", 1, EvEFIVariableBoot, EFIVariableData(EFIGlobalVariable, "Boot0000", []byte("disk")),
			EFIVariableData(EFIGlobalVariable, "Boot0000", []byte("usb!"))},
		{"authority", 7, EvEFIVariableAuthority, auth, EFIVariableData(EFIImageSecurityDBID, "db", []byte("attacker certificate"))},
	} {
		// build logs the record with digests per bank and data, then
		// PCR7's separator, so that Secure Boot can be read.
		build := func(t *testing.T, digests map[pcrs.Alg][]byte, data []byte) *Log {
			t.Helper()
			b, err := NewBuilder(threeBanks...)
			if err != nil {
				t.Fatal(err)
			}
			if tc.typ == EvEFIVariableAuthority {
				b.Extend(7, EvEFIVariableDriverConf, sbVar([]byte{1}))
			}
			if err := b.ExtendDigest(tc.pcr, tc.typ, digests, data); err != nil {
				t.Fatal(err)
			}
			b.Extend(7, EvSeparator, []byte{0, 0, 0, 0})
			if b.Err() != nil {
				t.Fatal(b.Err())
			}
			l, err := Parse(b.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			return l
		}
		honest := digestsOf(tc.honest, threeBanks...)
		forgedDigests := digestsOf(tc.forged, threeBanks...)

		t.Run(tc.name+"/forged data, unquoted banks rehashed", func(t *testing.T) {
			d := map[pcrs.Alg][]byte{pcrs.SHA256: honest[pcrs.SHA256], pcrs.SHA1: forgedDigests[pcrs.SHA1], pcrs.SHA384: forgedDigests[pcrs.SHA384]}
			l := build(t, d, tc.forged)
			q := ownQuote(t, l, pcrs.SHA256) // the TPM measured the honest data
			_, err := VerifyAgainst(l, q)
			if !errors.Is(err, ErrEventTampered) || !bytes.Contains([]byte(err.Error()), []byte(fmt.Sprintf("(PCR%d %s)", tc.pcr, tc.typ))) {
				t.Fatalf("VerifyAgainst = %v, want %v naming the record", err, ErrEventTampered)
			}
			// Control: the same edit, with the quoted digest also made the
			// forged data's hash, replays to another value than the quote.
			d[pcrs.SHA256] = forgedDigests[pcrs.SHA256]
			_, err = VerifyAgainst(build(t, d, tc.forged), q)
			var mm *MismatchError
			if !errors.As(err, &mm) {
				t.Fatalf("rehashed quoted digest: %v, want a mismatch", err)
			}
		})

		t.Run(tc.name+"/unquoted banks garbage", func(t *testing.T) {
			d := map[pcrs.Alg][]byte{pcrs.SHA256: honest[pcrs.SHA256], pcrs.SHA1: junk(pcrs.SHA1), pcrs.SHA384: junk(pcrs.SHA384)}
			l := build(t, d, tc.honest)
			q := ownQuote(t, l, pcrs.SHA256)
			r, err := VerifyAgainst(l, q)
			if err != nil {
				t.Fatalf("VerifyAgainst = %v, want accepted", err)
			}
			if !slices.Equal(r.Banks, []pcrs.Alg{pcrs.SHA256}) || !slices.Contains(r.Verified[pcrs.SHA256], int(tc.pcr)) {
				t.Errorf("banks %v, verified %v", r.Banks, r.Verified)
			}
			if len(r.Values[pcrs.SHA1]) != 0 || len(r.Values[pcrs.SHA384]) != 0 {
				t.Errorf("unquoted banks replayed: %v", r.Values.Banks())
			}
			// NotQuoted still names what the log says about unquoted banks.
			for _, alg := range []pcrs.Alg{pcrs.SHA1, pcrs.SHA384} {
				if !slices.Contains(r.NotQuoted[alg], 7) || !slices.Contains(r.NotQuoted[alg], int(tc.pcr)) {
					t.Errorf("NotQuoted[%s] = %v", alg, r.NotQuoted[alg])
				}
			}
			st, err := VerifiedSecureBoot(l, r)
			wantMode := SecureBootUnknown // no SecureBoot record
			switch {
			case tc.typ == EvEFIVariableDriverConf:
				wantMode = SecureBootDisabled
			case tc.typ == EvEFIVariableAuthority:
				wantMode = SecureBootEnabled
			}
			if err != nil || st.Mode != wantMode {
				t.Errorf("VerifiedSecureBoot = %v (%s), %v; want %v", st.Mode, st.Why, err, wantMode)
			}
			// Control: quote sha1 as well and its garbage is checked.
			q1 := ownQuote(t, l, pcrs.SHA1)
			for _, i := range q.Indices(pcrs.SHA256) {
				v, _ := q.Get(pcrs.SHA256, i)
				q1.Set(pcrs.SHA256, i, v)
			}
			if _, err := VerifyAgainst(l, q1); !errors.Is(err, ErrEventTampered) {
				t.Errorf("garbage sha1 digests, sha1 quoted: %v, want %v", err, ErrEventTampered)
			}
		})
	}
}

// TestVerifiedSecureBootHandBuilt: a Replayed that VerifyAgainst did not
// compute for this Log makes VerifiedSecureBoot check PCR7's data digests
// itself: in Replayed.Banks when given, else in every bank.
func TestVerifiedSecureBootHandBuilt(t *testing.T) {
	sb := sbVar([]byte{1})
	d := digestsOf(sb, pcrs.SHA256)
	d[pcrs.SHA1] = junk(pcrs.SHA1)
	b, _ := NewBuilder(pcrs.SHA1, pcrs.SHA256)
	if err := b.ExtendDigest(7, EvEFIVariableDriverConf, d, sb); err != nil {
		t.Fatal(err)
	}
	b.Extend(7, EvSeparator, []byte{0, 0, 0, 0})
	l, err := Parse(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	verified := map[pcrs.Alg][]int{pcrs.SHA256: {7}}
	for _, tc := range []struct {
		name string
		r    *Replayed
		err  error
	}{
		{"quoted bank given", &Replayed{Banks: []pcrs.Alg{pcrs.SHA256}, Verified: verified}, nil},
		{"no bank given: all checked", &Replayed{Verified: verified}, ErrEventTampered},
		{"garbage bank given", &Replayed{Banks: []pcrs.Alg{pcrs.SHA1}, Verified: verified}, ErrEventTampered},
	} {
		st, err := VerifiedSecureBoot(l, tc.r)
		if !errors.Is(err, tc.err) || (err == nil && st.Mode != SecureBootEnabled) {
			t.Errorf("%s: %v, %v; want %v", tc.name, st, err, tc.err)
		}
	}
	// VerifyAgainst's own result for another Log is not trusted for this one.
	q := ownQuote(t, l, pcrs.SHA256)
	r, err := VerifyAgainst(l, q)
	if err != nil {
		t.Fatal(err)
	}
	other, err := Parse(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	other.Events[1].Data = sbVar([]byte{0}) // changed after parsing; digests no longer match
	if _, err := VerifiedSecureBoot(other, r); !errors.Is(err, ErrEventTampered) {
		t.Errorf("Replayed of another Log: %v, want %v", err, ErrEventTampered)
	}
}

// TestRealLogQuotedBankOnly: the real 45 KB Ubuntu 24.04 log (sha1, sha256,
// sha384) quoted in sha256: with every sha1 and sha384 digest destroyed it
// still verifies and keeps its Secure Boot state; with its SecureBoot
// record's value flipped and the unquoted digests made the hash of the
// forged record, it is refused as tampered.
func TestRealLogQuotedBankOnly(t *testing.T) {
	const rel = "eventlogs/go-tpm-tools/ubuntu-2404-amd-sevsnp.bin"
	raw, ok := realLogs(t)[rel]
	if !ok {
		t.Skipf("%s is not in the real evidence", rel)
	}
	orig, err := Parse(raw, CopyInput())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(orig.Banks, threeBanks) {
		t.Fatalf("banks %v, want %v", orig.Banks, threeBanks)
	}
	q := ownQuote(t, orig, pcrs.SHA256)
	r, err := VerifyAgainst(orig, q)
	if err != nil {
		t.Fatal(err)
	}
	want, err := VerifiedSecureBoot(orig, r)
	if err != nil || want.Mode == SecureBootUnknown {
		t.Fatalf("original: %v, %v", want, err)
	}

	// Every unquoted digest garbage: accepted, same Secure Boot state.
	garbage := bytes.Clone(raw)
	gl, err := Parse(garbage) // aliases garbage: edit the digests in place
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(gl.Events); i++ {
		for _, alg := range []pcrs.Alg{pcrs.SHA1, pcrs.SHA384} {
			copy(gl.Events[i].Digests[alg], junk(alg))
		}
	}
	gl, err = Parse(garbage)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CheckDigests(gl); !errors.Is(err, ErrEventTampered) {
		t.Fatalf("the garbage did not reach the unquoted digests: CheckDigests = %v", err)
	}
	gr, err := VerifyAgainst(gl, q)
	if err != nil {
		t.Fatalf("garbage unquoted banks: %v", err)
	}
	if !slices.Equal(gr.Verified[pcrs.SHA256], r.Verified[pcrs.SHA256]) {
		t.Errorf("verified %v, want %v", gr.Verified, r.Verified)
	}
	if st, err := VerifiedSecureBoot(gl, gr); err != nil || st.Mode != want.Mode {
		t.Errorf("garbage unquoted banks: Secure Boot %v, %v; want %v", st, err, want.Mode)
	}

	// The SecureBoot value flipped, unquoted digests rehashed: refused.
	forged := bytes.Clone(raw)
	fl, err := Parse(forged)
	if err != nil {
		t.Fatal(err)
	}
	e := &fl.Events[want.Event]
	e.Data[len(e.Data)-1] ^= 1
	for _, alg := range []pcrs.Alg{pcrs.SHA1, pcrs.SHA384} {
		copy(e.Digests[alg], digestsOf(e.Data, alg)[alg])
	}
	if fl, err = Parse(forged); err != nil {
		t.Fatal(err)
	}
	_, err = VerifyAgainst(fl, q)
	if !errors.Is(err, ErrEventTampered) || !bytes.Contains([]byte(err.Error()), []byte(fmt.Sprintf("event %d ", want.Event))) {
		t.Fatalf("forged SecureBoot record: %v, want %v naming event %d", err, ErrEventTampered, want.Event)
	}
}
