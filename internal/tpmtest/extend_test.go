package tpmtest

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/common/tpm"
)

func TestSimulatorExtend(t *testing.T) {
	tp := openSim(t)
	before, err := tp.ReadPCRs(pcrs.SHA256, []int{16})
	if err != nil {
		t.Fatal(err)
	}
	before1, err := tp.ReadPCRs(pcrs.SHA1, []int{16})
	if err != nil {
		t.Fatal(err)
	}
	d256 := sha256.Sum256([]byte("event"))
	d1 := sha1.Sum([]byte("event"))
	n := tp.Commands()
	if err := Extend(tp, 16, map[pcrs.Alg][]byte{pcrs.SHA256: d256[:], pcrs.SHA1: d1[:]}); err != nil {
		t.Fatalf("Extend: %v", err)
	}
	if got := tp.Commands() - n; got != 1 {
		t.Errorf("Extend of two banks sent %d commands, want 1", got)
	}
	after, err := tp.ReadPCRs(pcrs.SHA256, []int{16})
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(append(before[16], d256[:]...))
	if !bytes.Equal(after[16], want[:]) {
		t.Errorf("PCR 16 sha256 after extend = %x, want %x", after[16], want)
	}
	after1, _ := tp.ReadPCRs(pcrs.SHA1, []int{16})
	want1 := sha1.Sum(append(before1[16], d1[:]...))
	if !bytes.Equal(after1[16], want1[:]) {
		t.Errorf("PCR 16 sha1 after extend = %x, want %x", after1[16], want1)
	}

	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"extend index 24", Extend(tp, 24, map[pcrs.Alg][]byte{pcrs.SHA256: d256[:]}), tpm.ErrBadPCR},
		{"extend index -1", Extend(tp, -1, map[pcrs.Alg][]byte{pcrs.SHA256: d256[:]}), tpm.ErrBadPCR},
		{"extend nothing", Extend(tp, 1, nil), tpm.ErrBadPCR},
		{"extend unknown bank", Extend(tp, 1, map[pcrs.Alg][]byte{pcrs.Alg(0x99): d256[:]}), tpm.ErrBadAlgorithm},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	if err := Extend(tp, 1, map[pcrs.Alg][]byte{pcrs.SHA256: d1[:]}); err == nil {
		t.Error("Extend with a 20-byte digest in the sha256 bank succeeded")
	}
	tp.Close()
	if err := Extend(tp, 16, map[pcrs.Alg][]byte{pcrs.SHA256: d256[:]}); !errors.Is(err, tpm.ErrClosed) {
		t.Errorf("Extend after Close = %v, want ErrClosed", err)
	}
}
