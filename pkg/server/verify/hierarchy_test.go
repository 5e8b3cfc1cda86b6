package verify_test

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/tpmid/tpmid/internal/tpmtest"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/common/tpm"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// signedQN quotes with ak and returns the qualifiedSigner the TPM put in
// the quote.
func signedQN(t *testing.T, tp *tpm.TPM, ak *tpm.AK) []byte {
	t.Helper()
	q, _, err := tp.Quote(ak, []byte("n"), pcrs.SHA256, []int{0})
	if err != nil {
		t.Fatal(err)
	}
	a, err := tpm2.Unmarshal[tpm2.TPMSAttest](q)
	if err != nil {
		t.Fatal(err)
	}
	return a.QualifiedSigner.Buffer
}

func akName(t *testing.T, public []byte) []byte {
	t.Helper()
	p, err := verify.ParseAKPublic(public)
	if err != nil {
		t.Fatal(err)
	}
	return p.Name
}

// TestAKHierarchy: the qualified name computed from an AK's Name and its
// creation data matches what the TPM signs into quotes for tpmid's AKs of
// every type, under tpmid's persistent SRK and under its transient one; it
// does not for an AK under an owner-hierarchy SRK, for forged creation
// data, or for another AK's Name; and malformed input is refused with
// ak_hierarchy.
func TestAKHierarchy(t *testing.T) {
	tp, err := tpm.Open(tpm.Config{Device: "simulator", EventLogPath: filepath.Join(t.TempDir(), "none")})
	if err != nil {
		t.Skipf("simulator: %v (build with -tags tpmsimulator and cgo)", err)
	}
	first := tp
	t.Cleanup(func() { first.Close() }) // the simulator is one per process

	type ak struct {
		name, createData, signed []byte
	}
	newAK := func(t *testing.T, alg tpm.AKAlg) ak {
		k, err := tp.NewAK(alg)
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close(tp)
		return ak{akName(t, k.Params().Public), k.Params().CreateData, signedQN(t, tp, k)}
	}
	var good []ak
	for _, alg := range []tpm.AKAlg{tpm.AKP256, tpm.AKP384, tpm.AKRSA2048} {
		good = append(good, newAK(t, alg)) // under tpmid's persistent SRK
	}
	tp.Close()
	// A machine whose 0x81000001 is systemd's: tpmid's transient SRK, and
	// the AK an earlier tpmid made under systemd's SRK.
	tp, err = tpm.Open(tpm.Config{Device: "simulator", EventLogPath: filepath.Join(t.TempDir(), "none")})
	if err != nil {
		t.Fatal(err)
	}
	second := tp
	t.Cleanup(func() { second.Close() })
	if _, err := tpmtest.ProvisionOwnerSRK(tp, false); err != nil {
		t.Fatal(err)
	}
	good = append(good, newAK(t, tpm.AKP256))
	// An AK made under systemd's SRK, as tpmid's blob kept it (claim nil),
	// or with its creation data forged to name claim as the parent.
	ownerAK := func(claim []byte) ak {
		blob, err := tpmtest.LegacyOwnerAKBlob(tp, claim)
		if err != nil {
			t.Fatal(err)
		}
		k, err := tp.LoadAK(blob)
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close(tp)
		return ak{akName(t, k.Params().Public), k.Params().CreateData, signedQN(t, tp, k)}
	}
	owner := ownerAK(nil)
	forged := ownerAK(parentName(t, good[3].createData))
	tp.Close()

	for i, k := range good {
		want, err := verify.EndorsementQualifiedName(k.name, k.createData)
		if err != nil {
			t.Fatalf("AK %d: %v", i, err)
		}
		if err := verify.CheckAKHierarchy(want, k.signed); err != nil {
			t.Errorf("AK %d of tpmid refused: %v", i, err)
		}
	}
	for _, tc := range []struct {
		name                   string
		akName, data, signedQN []byte
	}{
		{"AK under an owner-hierarchy SRK", owner.name, owner.createData, owner.signed},
		{"creation data forged to name tpmid's endorsement SRK", forged.name, forged.createData, forged.signed},
		{"another AK's Name", good[1].name, good[0].createData, good[0].signed},
		{"another AK's creation data and quote", good[0].name, good[0].createData, good[2].signed},
		{"no creation data", good[0].name, nil, good[0].signed},
		{"creation data too large", good[0].name, bytes.Repeat([]byte{0}, 4097), good[0].signed},
		{"creation data garbage", good[0].name, []byte{1, 2, 3}, good[0].signed},
		{"no AK Name (PKIX key)", nil, good[0].createData, good[0].signed},
		{"AK Name of the wrong size", good[0].name[:20], good[0].createData, good[0].signed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := verify.EndorsementQualifiedName(tc.akName, tc.data)
			if err == nil {
				err = verify.CheckAKHierarchy(want, tc.signedQN)
			}
			if verify.ReasonOf(err) != verify.ReasonAKHierarchy {
				t.Fatalf("err = %v, want %s", err, verify.ReasonAKHierarchy)
			}
		})
	}
}

// parentName is the parent Name in an AK's creation data.
func parentName(t *testing.T, createData []byte) []byte {
	t.Helper()
	cd, err := tpm2.Unmarshal[tpm2.TPMSCreationData](createData)
	if err != nil {
		t.Fatal(err)
	}
	return cd.ParentName.Buffer
}

func FuzzEndorsementQualifiedName(f *testing.F) {
	for _, p := range akParams(f) {
		f.Add(p.Public, p.CreateData)
	}
	f.Fuzz(func(t *testing.T, public, createData []byte) {
		var name []byte
		if p, err := verify.ParseAKPublic(public); err == nil {
			name = p.Name
		}
		qn, err := verify.EndorsementQualifiedName(name, createData)
		switch {
		case err != nil && verify.ReasonOf(err) != verify.ReasonAKHierarchy:
			t.Fatalf("untyped error %v", err)
		case err == nil && (len(qn) != len(name) || !bytes.Equal(qn[:2], name[:2])):
			t.Fatalf("qualified name %x for Name %x: want the Name's algorithm and size", qn, name)
		}
	})
}
