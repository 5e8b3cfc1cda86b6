package tpm

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
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

// checkPersistedSRK checks that tpmid made and persisted an SRK of type
// want at 0x81000001, in the endorsement hierarchy.
func checkPersistedSRK(t *testing.T, tp *TPM, want tpm2.TPMAlgID) {
	t.Helper()
	rsp, err := tpm2.ReadPublic{ObjectHandle: srkHandle}.Execute(tp.tp())
	if err != nil {
		t.Fatalf("no SRK persisted at 0x81000001: %v", err)
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		t.Fatal(err)
	}
	if in := inEndorsementHierarchy(rsp.Name, rsp.QualifiedName); pub.Type != want || !in {
		t.Errorf("the SRK made at 0x81000001 is of type 0x%x, in the endorsement hierarchy: %v; want type 0x%x, true", pub.Type, in, want)
	}
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
				checkPersistedSRK(t, tp, tpm2.TPMAlgECC)
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

// noECC stands between tpmid and the simulator as a TPM without ECC
// would: TPM2_CreatePrimary of an ECC key fails with TPM_RC_ASYMMETRIC and
// never reaches the TPM; everything else passes through.
type noECC struct {
	io.ReadWriteCloser
	refused  int
	response []byte // the canned error for the command just written
}

func (n *noECC) Write(b []byte) (int, error) {
	n.response = nil
	if len(b) >= 18 && binary.BigEndian.Uint32(b[6:10]) == uint32(tpm2.TPMCCCreatePrimary) {
		// header (10), primaryHandle (4), authorizationSize (4) and the
		// authorizations, inSensitive (TPM2B), then inPublic's size and type.
		off := 18 + int(binary.BigEndian.Uint32(b[14:18]))
		if off+2 <= len(b) {
			off += 2 + int(binary.BigEndian.Uint16(b[off:]))
		}
		if off+4 <= len(b) && tpm2.TPMAlgID(binary.BigEndian.Uint16(b[off+2:])) == tpm2.TPMAlgECC {
			n.refused++
			n.response = []byte{0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x00, 0x81} // TPM_ST_NO_SESSIONS, TPM_RC_ASYMMETRIC
			return len(b), nil
		}
	}
	return n.ReadWriteCloser.Write(b)
}

func (n *noECC) Read(b []byte) (int, error) {
	if n.response != nil {
		k := copy(b, n.response)
		n.response = nil
		return k, nil
	}
	return n.ReadWriteCloser.Read(b)
}

// TestSRKWithoutECC: on a TPM that refuses ECC keys, a new machine's SRK
// is the RSA-2048 one, in the endorsement hierarchy and persisted, and
// RSA AKs under it quote the TPM's true counters. With another program's
// owner SRK at 0x81000001 there is no RSA fallback (tpmid's transient SRK
// would cost an RSA key generation per attestation): the error says why.
func TestSRKWithoutECC(t *testing.T) {
	t.Run("nothing at 0x81000001", func(t *testing.T) {
		tp := openSim(t)
		filter := &noECC{ReadWriteCloser: tp.s.ch.rwc}
		tp.s.ch.rwc = filter
		clock, err := tpm2.ReadClock{}.Execute(tp.tp())
		if err != nil {
			t.Fatal(err)
		}
		ak, err := tp.NewAK(AKRSA2048)
		if err != nil {
			t.Fatalf("NewAK on a TPM without ECC: %v", err)
		}
		defer ak.Close(tp)
		if filter.refused != 1 {
			t.Errorf("%d ECC CreatePrimary refused, want 1 (the ECC SRK tried first)", filter.refused)
		}
		checkPersistedSRK(t, tp, tpm2.TPMAlgRSA)
		ci := clock.CurrentTime.ClockInfo
		if r, rs := quotedCounters(t, tp, ak); r != ci.ResetCount || rs != ci.RestartCount {
			t.Errorf("AK quotes resetCount %d, restartCount %d; the TPM's are %d, %d", r, rs, ci.ResetCount, ci.RestartCount)
		}
	})
	t.Run("owner SRK at 0x81000001", func(t *testing.T) {
		tp := openSim(t)
		putSRK(t, tp, tpm2.TPMRHOwner, tpm2.RSASRKTemplate)
		filter := &noECC{ReadWriteCloser: tp.s.ch.rwc}
		tp.s.ch.rwc = filter
		_, err := tp.NewAK(AKRSA2048)
		if err == nil || !strings.Contains(err.Error(), "outside the endorsement hierarchy") || !strings.Contains(err.Error(), "ECC SRK") {
			t.Fatalf("NewAK = %v, want the owner SRK and the refused ECC SRK named", err)
		}
		if filter.refused != 1 {
			t.Errorf("%d ECC CreatePrimary refused, want 1 (tpmid's transient SRK)", filter.refused)
		}
		if h := loadedHandles(t, tp); len(h) != 0 {
			t.Errorf("handles left loaded: %v", h)
		}
	})
}
