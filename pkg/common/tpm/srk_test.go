package tpm

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// putSRK persists a primary key made from tmpl in hierarchy at
// 0x81000001, as another program provisioning the TPM would, and returns
// its Name.
func putSRK(t *testing.T, tp *TPM, hierarchy tpm2.TPMHandle, tmpl tpm2.TPMTPublic) []byte {
	t.Helper()
	cp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: hierarchy, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tmpl),
	}.Execute(tp.tp())
	if err != nil {
		t.Fatalf("CreatePrimary: %v", err)
	}
	defer tp.flush(uint32(cp.ObjectHandle))
	if _, err := (tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     tpm2.NamedHandle{Handle: cp.ObjectHandle, Name: cp.Name},
		PersistentHandle: srkHandle,
	}.Execute(tp.tp())); err != nil {
		t.Fatalf("EvictControl: %v", err)
	}
	return cp.Name.Buffer
}

func srkName(t *testing.T, tp *TPM) []byte {
	t.Helper()
	rsp, err := tpm2.ReadPublic{ObjectHandle: srkHandle}.Execute(tp.tp())
	if err != nil {
		t.Fatalf("ReadPublic(0x81000001): %v", err)
	}
	return rsp.Name.Buffer
}

// quotedCounters quotes with ak and returns the quote's resetCount and
// restartCount.
func quotedCounters(t *testing.T, tp *TPM, ak *AK) (uint32, uint32) {
	t.Helper()
	q, _, err := tp.Quote(ak, []byte("nonce"), pcrs.SHA256, []int{0})
	if err != nil {
		t.Fatalf("Quote: %v", err)
	}
	a, err := tpm2.Unmarshal[tpm2.TPMSAttest](q)
	if err != nil {
		t.Fatal(err)
	}
	return a.ClockInfo.ResetCount, a.ClockInfo.RestartCount
}

// TestSRKHierarchy: whatever holds 0x81000001, every AK tpmid makes, of
// each algorithm, quotes
// the TPM's true resetCount and restartCount (TPM2_ReadClock's, which are
// never obfuscated), so the server's reboot counters compare across AKs.
// An owner-hierarchy SRK there (systemd-tpm2-setup's ECC one, or the RSA
// one of tpm2-tools provisioning and Windows) made every AK report its own
// offset of them, and a new AK looked like a rolled-back TPM.
func TestSRKHierarchy(t *testing.T) {
	for _, tc := range []struct {
		name          string
		provision     func(t *testing.T, tp *TPM) []byte // nil: nothing at 0x81000001
		wantTransient bool
	}{
		{"nothing at 0x81000001", nil, false},
		{"endorsement RSA SRK (go-attestation, earlier tpmid)", func(t *testing.T, tp *TPM) []byte {
			return putSRK(t, tp, tpm2.TPMRHEndorsement, tpm2.RSASRKTemplate)
		}, false},
		{"owner ECC SRK (systemd-tpm2-setup)", func(t *testing.T, tp *TPM) []byte {
			return putSRK(t, tp, tpm2.TPMRHOwner, tpm2.ECCSRKTemplate)
		}, true},
		{"owner RSA SRK (tpm2-tools, Windows)", func(t *testing.T, tp *TPM) []byte {
			return putSRK(t, tp, tpm2.TPMRHOwner, tpm2.RSASRKTemplate)
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := openSim(t)
			var before []byte
			if tc.provision != nil {
				before = tc.provision(t, tp)
			}
			clock, err := tpm2.ReadClock{}.Execute(tp.tp())
			if err != nil {
				t.Fatal(err)
			}
			wantReset, wantRestart := clock.CurrentTime.ClockInfo.ResetCount, clock.CurrentTime.ClockInfo.RestartCount
			var blobs [][]byte
			for i, alg := range []AKAlg{AKP256, AKP384, AKRSA2048} {
				ak, err := tp.NewAK(alg)
				if err != nil {
					t.Fatalf("NewAK: %v", err)
				}
				if ak.transientParent != tc.wantTransient {
					t.Errorf("AK %d made under a transient SRK: %v, want %v", i, ak.transientParent, tc.wantTransient)
				}
				if r, rs := quotedCounters(t, tp, ak); r != wantReset || rs != wantRestart {
					t.Errorf("AK %d quotes resetCount %d, restartCount %d; the TPM's are %d, %d (obfuscated: the AK is outside the endorsement hierarchy)", i, r, rs, wantReset, wantRestart)
				}
				b, err := ak.Blob()
				if err != nil {
					t.Fatal(err)
				}
				blobs = append(blobs, b)
				ak.Close(tp)
			}
			// A kept AK loads again under the same parent and quotes the same.
			for i, b := range blobs {
				ak, err := tp.LoadAK(b)
				if err != nil {
					t.Fatalf("LoadAK %d: %v", i, err)
				}
				if r, rs := quotedCounters(t, tp, ak); r != wantReset || rs != wantRestart {
					t.Errorf("kept AK %d quotes %d, %d, want %d, %d", i, r, rs, wantReset, wantRestart)
				}
				ak.Close(tp)
			}
			if before != nil && !bytes.Equal(srkName(t, tp), before) {
				t.Error("the key another program put at 0x81000001 was replaced")
			}
			if before == nil {
				// tpmid made the SRK: ECC P-256 (fast to make on a new
				// machine), in the endorsement hierarchy, persisted.
				rsp, err := tpm2.ReadPublic{ObjectHandle: srkHandle}.Execute(tp.tp())
				if err != nil {
					t.Fatalf("no SRK persisted at 0x81000001: %v", err)
				}
				pub, err := rsp.OutPublic.Contents()
				if err != nil {
					t.Fatal(err)
				}
				if pub.Type != tpm2.TPMAlgECC || !inEndorsementHierarchy(rsp.Name, rsp.QualifiedName) {
					t.Errorf("the SRK made at 0x81000001 is of type 0x%x, in the endorsement hierarchy: %v; want ECC (0x23), true", pub.Type, inEndorsementHierarchy(rsp.Name, rsp.QualifiedName))
				}
			}
			if h := loadedHandles(t, tp); len(h) != 0 {
				t.Errorf("handles left loaded (a transient SRK not flushed?): %v", h)
			}
		})
	}
}

// A blob that says its parent is the transient SRK but names another key
// is refused before TPM2_Load, with the reason, and leaves nothing loaded.
func TestLoadAKTransientParentMismatch(t *testing.T) {
	tp := openSim(t)
	putSRK(t, tp, tpm2.TPMRHOwner, tpm2.ECCSRKTemplate)
	ak, err := tp.NewAK(AKP256)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ak.Blob()
	if err != nil {
		t.Fatal(err)
	}
	ak.Close(tp)
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	if raw["TransientParent"] != true {
		t.Fatalf("blob does not record the transient parent: %s", b)
	}
	raw["ParentName"] = bytes.Repeat([]byte{7}, 34)
	forged, _ := json.Marshal(raw)
	if _, err := tp.LoadAK(forged); err == nil || !strings.Contains(err.Error(), "another Name") {
		t.Fatalf("LoadAK with another parent Name: %v, want the Name mismatch", err)
	}
	if h := loadedHandles(t, tp); len(h) != 0 {
		t.Errorf("handles left loaded: %v", h)
	}
}
