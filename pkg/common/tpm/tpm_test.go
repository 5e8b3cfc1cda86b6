package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-attestation/attest"
	legacytpm2 "github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/legacy/tpm2/credactivation"

	"github.com/tpmid/tpmid/internal/realdata"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// The simulator is one per process: these tests never run in parallel.

func openSim(t testing.TB) *TPM {
	t.Helper()
	tp, err := Open(Config{Device: "simulator", EventLogPath: filepath.Join(t.TempDir(), "none")})
	if err != nil {
		t.Fatalf("Open(simulator): %v", err)
	}
	t.Cleanup(func() { tp.Close() })
	return tp
}

func loadedHandles(t testing.TB, tp *TPM) []uint32 {
	t.Helper()
	h, err := tp.LoadedHandles()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func pcrList(n int) []int {
	l := make([]int, n)
	for i := range l {
		l[i] = i
	}
	return l
}

func verifyQuote(t *testing.T, ak *AK, extra []byte, bank pcrs.Alg, values map[int][]byte, q, sig []byte) error {
	t.Helper()
	pub, err := attest.ParseAKPublic(ak.Params().Public)
	if err != nil {
		t.Fatalf("ParseAKPublic: %v", err)
	}
	h, _ := bank.CryptoHash()
	var list []attest.PCR
	for i, v := range values {
		list = append(list, attest.PCR{Index: i, Digest: v, DigestAlg: h})
	}
	return pub.Verify(attest.Quote{Quote: q, Signature: sig}, list, extra)
}

func TestParseDevice(t *testing.T) {
	for _, tc := range []struct {
		in   string
		kind string
		addr string
	}{
		{"", kindAuto, ""},
		{"simulator", kindSimulator, ""},
		{"/dev/tpmrm0", kindPath, "/dev/tpmrm0"},
		{"/dev//tpm0", kindPath, "/dev/tpm0"},
		{"tcp://127.0.0.1:2321", kindTCP, "127.0.0.1:2321"},
		{"tcp://[::1]:2321", kindTCP, "[::1]:2321"},
		{"tcp://localhost:1", kindTCP, "localhost:1"},
		{"unix:///run/swtpm/sock", kindUnix, "/run/swtpm/sock"},
	} {
		d, err := parseDevice(tc.in)
		if err != nil {
			t.Errorf("parseDevice(%q): %v", tc.in, err)
			continue
		}
		if d.kind != tc.kind || d.addr != tc.addr {
			t.Errorf("parseDevice(%q) = %+v, want %s %q", tc.in, d, tc.kind, tc.addr)
		}
		if err := ParseDevice(tc.in); err != nil {
			t.Errorf("ParseDevice(%q): %v", tc.in, err)
		}
	}
	for _, bad := range []string{
		"dev/tpm0", "tpm0", "./tpm", " /dev/tpm0", "/dev/tpm0\n",
		"tcp://", "tcp://127.0.0.1", "tcp://:2321", "tcp://host:0", "tcp://host:65536", "tcp://host:port",
		"tcp://user@host:1", "tcp://h:1/path",
		"unix://relative/sock", "unix://", "mssim://127.0.0.1:2321", "http://x:1", "Simulator",
	} {
		err := ParseDevice(bad)
		if !errors.Is(err, ErrBadDevice) {
			t.Errorf("ParseDevice(%q) = %v, want ErrBadDevice", bad, err)
		}
	}
	if _, err := Open(Config{Device: "tpm0"}); !errors.Is(err, ErrBadDevice) {
		t.Errorf("Open(tpm0) = %v, want ErrBadDevice", err)
	}
	if _, err := Open(Config{Device: "/nonexistent/tpm"}); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open(/nonexistent/tpm) = %v, want a not-exist error", err)
	}
	if _, err := os.Stat("/dev/tpmrm0"); errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat("/dev/tpm0"); errors.Is(err, os.ErrNotExist) {
			if _, err := Open(Config{}); !errors.Is(err, ErrNoTPM) {
				t.Errorf("Open(autodetect) without a TPM = %v, want ErrNoTPM", err)
			}
		}
	}
	if _, err := Open(Config{Device: "unix:///nonexistent/sock"}); err == nil {
		t.Error("Open(unix:///nonexistent/sock) succeeded")
	}
}

func TestTrimDER(t *testing.T) {
	long := append([]byte{0x30, 0x82, 0x01, 0x00}, make([]byte, 256)...)
	for _, tc := range []struct {
		name string
		in   []byte
		want []byte // nil: error
	}{
		{"short form", []byte{0x30, 0x02, 0x05, 0x00}, []byte{0x30, 0x02, 0x05, 0x00}},
		{"short form padded", []byte{0x30, 0x02, 0x05, 0x00, 0xff, 0xff}, []byte{0x30, 0x02, 0x05, 0x00}},
		{"empty sequence", []byte{0x30, 0x00, 0xff}, []byte{0x30, 0x00}},
		{"long form", long, long},
		{"long form padded", append(slices.Clone(long), 0xff, 0xff, 0xff), long},
		{"empty", nil, nil},
		{"one byte", []byte{0x30}, nil},
		{"not a sequence", []byte{0x31, 0x00}, nil},
		{"padding only", []byte{0xff, 0xff, 0xff}, nil},
		{"indefinite", []byte{0x30, 0x80, 0x00, 0x00}, nil},
		{"truncated body", []byte{0x30, 0x05, 0x01}, nil},
		{"truncated length", []byte{0x30, 0x82, 0x01}, nil},
		{"too many length octets", []byte{0x30, 0x85, 1, 1, 1, 1, 1}, nil},
		{"non-minimal leading zero", []byte{0x30, 0x81, 0x00}, nil},
		{"non-minimal short in long", []byte{0x30, 0x81, 0x05, 1, 2, 3, 4, 5}, nil},
		{"huge length", []byte{0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x00}, nil},
	} {
		got, err := TrimDER(tc.in)
		if tc.want == nil {
			if !errors.Is(err, ErrBadDER) {
				t.Errorf("%s: TrimDER = %x, %v; want ErrBadDER", tc.name, got, err)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, tc.want) {
			t.Errorf("%s: TrimDER = %x, %v; want %x", tc.name, got, err, tc.want)
		}
	}
}

// realCerts loads the real EK certificates (DER, possibly padded); the test
// skips when the real evidence is absent.
func realCerts(t testing.TB) map[string][]byte {
	t.Helper()
	realEKCerts := realdata.Path(t, "ekcerts")
	out := map[string][]byte{}
	err := filepath.WalkDir(realEKCerts, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if blk, _ := pem.Decode(b); blk != nil {
			b = blk.Bytes
		}
		out[filepath.Base(p)] = b
		return nil
	})
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("real EK certificates not present at %s; skipping", realEKCerts)
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestTrimDERRealCerts(t *testing.T) {
	certs := realCerts(t)
	if len(certs) == 0 {
		t.Skip("no files under the real ekcerts folder")
	}
	for name, b := range certs {
		der, err := TrimDER(b)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if _, err := x509.ParseCertificate(der); err != nil {
			t.Errorf("%s: trimmed certificate does not parse: %v", name, err)
		}
		if name == "st33htphahb4_rsa_ek_padded.der" && (len(b) != 1600 || len(der) != 1169) {
			t.Errorf("%s: %d bytes trimmed to %d, want 1600 to 1169", name, len(b), len(der))
		}
	}
}

func FuzzTrimDER(f *testing.F) {
	if _, err := realdata.Find(); err == nil {
		for _, b := range realCerts(f) {
			f.Add(b)
		}
	} else {
		f.Logf("real EK certificates not present (%v); fuzzing from synthetic seeds only", err)
	}
	f.Add([]byte{0x30, 0x02, 0x05, 0x00, 0xff})
	f.Add([]byte{0x30, 0x82, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		der, err := TrimDER(b)
		if err != nil {
			if !errors.Is(err, ErrBadDER) {
				t.Fatalf("error does not wrap ErrBadDER: %v", err)
			}
			return
		}
		if len(der) > len(b) || !bytes.Equal(der, b[:len(der)]) {
			t.Fatalf("result is not a prefix of the input")
		}
		again, err := TrimDER(append(slices.Clone(der), 0xff, 0x00))
		if err != nil || !bytes.Equal(again, der) {
			t.Fatalf("trimming is not stable under more padding: %v", err)
		}
	})
}

func TestEventLog(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "small")
	os.WriteFile(small, []byte("log"), 0o600)
	big := filepath.Join(dir, "big")
	os.WriteFile(big, make([]byte, DefaultMaxEventLog+1), 0o600)
	for _, tc := range []struct {
		path    string
		want    []byte
		wantErr error
	}{
		{small, []byte("log"), nil},
		{big, nil, ErrTooLarge},
		{filepath.Join(dir, "missing"), nil, ErrNoEventLog},
	} {
		c := &channel{eventLog: tc.path}
		got, err := c.MeasurementLog()
		if tc.wantErr != nil {
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("%s: err = %v, want %v", tc.path, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, tc.want) {
			t.Errorf("%s: got %q, %v", tc.path, got, err)
		}
	}
}

func TestSimulatorEK(t *testing.T) {
	tp := openSim(t)
	for _, alg := range []EKAlg{EKAuto, EKRSA} {
		ek, err := tp.EK(alg)
		if err != nil {
			t.Fatalf("EK(%q): %v", alg, err)
		}
		if ek.Alg != EKRSA || ek.CertDER != nil {
			t.Errorf("EK(%q) = %s with %d-byte certificate, want RSA without certificate", alg, ek.Alg, len(ek.CertDER))
		}
		if _, ok := ek.Public.(*rsa.PublicKey); !ok {
			t.Errorf("EK(%q).Public is %T", alg, ek.Public)
		}
		pub, err := x509.ParsePKIXPublicKey(ek.PublicDER)
		if err != nil || !pub.(*rsa.PublicKey).Equal(ek.Public) {
			t.Errorf("EK(%q).PublicDER does not match Public: %v", alg, err)
		}
	}
	for _, alg := range []EKAlg{EKECC, EKP256, EKP384, EKP521, EKRSA3072, EKRSA4096} {
		if _, err := tp.EK(alg); !errors.Is(err, ErrNoEK) {
			t.Errorf("EK(%s) on the simulator = %v, want ErrNoEK (no certificate)", alg, err)
		}
	}
	if _, err := tp.EK("dsa"); !errors.Is(err, ErrBadAlgorithm) {
		t.Errorf("EK(dsa) = %v, want ErrBadAlgorithm", err)
	}
	if h := loadedHandles(t, tp); len(h) != 0 {
		t.Errorf("handles left loaded after EK: %v", h)
	}
}

func TestSimulatorAKQuoteActivate(t *testing.T) {
	tp := openSim(t)
	ek, err := tp.EK(EKAuto)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		alg     AKAlg
		pubType any
	}{
		{AKDefault, &ecdsa.PublicKey{}},
		{AKECDSA, &ecdsa.PublicKey{}},
		{AKRSA, &rsa.PublicKey{}},
	} {
		t.Run("alg="+string(tc.alg), func(t *testing.T) {
			ak, err := tp.NewAK(tc.alg)
			if err != nil {
				t.Fatalf("NewAK: %v", err)
			}
			defer ak.Close(tp)
			if got, want := typeName(ak.Public()), typeName(tc.pubType); got != want {
				t.Errorf("AK public key is %s, want %s", got, want)
			}
			p := ak.Params()
			if len(p.Public) == 0 || len(p.CreateData) == 0 {
				t.Fatalf("empty AK parameters: %+v", p)
			}

			// Activation with a credential made by go-tpm's legacy
			// credactivation (what go-attestation's server side uses).
			secret := []byte("0123456789abcdef0123456789abcdef")
			ec := legacyCredential(t, ek.Public, p.Public, secret)
			got, err := tp.Activate(ak, ek, ec.Credential, ec.Secret)
			if err != nil || !bytes.Equal(got, secret) {
				t.Fatalf("Activate = %x, %v; want %x", got, err, secret)
			}
			// A corrupted credential must fail.
			badCred := slices.Clone(ec.Credential)
			badCred[len(badCred)-1] ^= 1
			if _, err := tp.Activate(ak, ek, badCred, ec.Secret); !errors.Is(err, ErrActivation) {
				t.Errorf("Activate(corrupted credential) = %v, want ErrActivation", err)
			}
			if _, err := tp.Activate(ak, ek, []byte{0}, ec.Secret); !errors.Is(err, ErrActivation) {
				t.Errorf("Activate(short credential) = %v, want ErrActivation", err)
			}

			// Quote and ReadPCRs agree, and the signature verifies.
			extra := sha256.New().Sum([]byte("nonce"))[:32]
			for _, bank := range []pcrs.Alg{pcrs.SHA256, pcrs.SHA1} {
				list := pcrList(8)
				q, sig, err := tp.Quote(ak, extra, bank, list)
				if err != nil {
					t.Fatalf("Quote(%s): %v", bank, err)
				}
				vals, err := tp.ReadPCRs(bank, list)
				if err != nil {
					t.Fatalf("ReadPCRs(%s): %v", bank, err)
				}
				if err := verifyQuote(t, ak, extra, bank, vals, q, sig); err != nil {
					t.Errorf("quote over %s does not verify: %v", bank, err)
				}
				if err := verifyQuote(t, ak, []byte("other"), bank, vals, q, sig); err == nil {
					t.Errorf("quote over %s verifies with other extraData", bank)
				}
			}
		})
	}
	if _, err := tp.NewAK("ed25519"); !errors.Is(err, ErrBadAlgorithm) {
		t.Errorf("NewAK(ed25519) = %v, want ErrBadAlgorithm", err)
	}
	if h := loadedHandles(t, tp); len(h) != 0 {
		t.Errorf("handles left loaded after AK, activation and quotes: %v", h)
	}
}

func typeName(v any) string {
	switch v.(type) {
	case *ecdsa.PublicKey:
		return "ecdsa"
	case *rsa.PublicKey:
		return "rsa"
	}
	return "other"
}

func TestSimulatorLoadAK(t *testing.T) {
	tp := openSim(t)
	ak, err := tp.NewAK(AKECDSA)
	if err != nil {
		t.Fatal(err)
	}
	if h := loadedHandles(t, tp); len(h) != 1 || h[0]>>24 != 0x80 {
		t.Errorf("LoadedHandles with one AK loaded = %x, want one transient handle", h)
	}
	blob, err := ak.Blob()
	if err != nil {
		t.Fatal(err)
	}
	params := ak.Params()
	if err := ak.Close(tp); err != nil {
		t.Fatal(err)
	}
	if err := ak.Close(tp); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, _, err := tp.Quote(ak, nil, pcrs.SHA256, []int{0}); !errors.Is(err, ErrClosed) {
		t.Errorf("Quote with closed AK = %v, want ErrClosed", err)
	}

	loaded, err := tp.LoadAK(blob)
	if err != nil {
		t.Fatalf("LoadAK: %v", err)
	}
	defer loaded.Close(tp)
	if !bytes.Equal(loaded.Params().Public, params.Public) || !bytes.Equal(loaded.Params().CreateData, params.CreateData) {
		t.Error("loaded AK has other parameters")
	}
	q, sig, err := tp.Quote(loaded, []byte("n"), pcrs.SHA256, []int{0, 7})
	if err != nil {
		t.Fatal(err)
	}
	vals, err := tp.ReadPCRs(pcrs.SHA256, []int{7, 0})
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyQuote(t, loaded, []byte("n"), pcrs.SHA256, vals, q, sig); err != nil {
		t.Errorf("quote by loaded AK: %v", err)
	}

	for _, tc := range []struct {
		name string
		blob []byte
		want error
	}{
		{"garbage", []byte("not a blob"), nil},
		{"empty", nil, nil},
		{"too large", make([]byte, MaxAKBlob+1), ErrTooLarge},
	} {
		ak, err := tp.LoadAK(tc.blob)
		if err == nil {
			ak.Close(tp)
			t.Errorf("LoadAK(%s) succeeded", tc.name)
		} else if tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("LoadAK(%s) = %v, want %v", tc.name, err, tc.want)
		}
	}
	loaded.Close(tp)
	if h := loadedHandles(t, tp); len(h) != 0 {
		t.Errorf("handles left loaded: %v", h)
	}
}

func TestSimulatorPCRs(t *testing.T) {
	tp := openSim(t)
	banks, err := tp.Banks()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(banks, pcrs.SHA256) || !slices.Contains(banks, pcrs.SHA1) {
		t.Fatalf("Banks() = %v, want sha1 and sha256", banks)
	}

	// Exact command counts for known operations.
	n := tp.Commands()
	if _, err := tp.ReadPCRs(pcrs.SHA256, pcrList(8)); err != nil {
		t.Fatal(err)
	}
	if got := tp.Commands() - n; got != 1 {
		t.Errorf("ReadPCRs(sha256, 0-7) sent %d commands, want 1", got)
	}
	n = tp.Commands()
	all, err := tp.ReadPCRs(pcrs.SHA256, pcrList(24))
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 24 {
		t.Errorf("ReadPCRs(0-23) returned %d PCRs", len(all))
	}
	if got := tp.Commands() - n; got != 3 {
		t.Errorf("ReadPCRs(sha256, 0-23) sent %d commands, want 3 (8 digests per response)", got)
	}
	n = tp.Commands()
	if _, err := tp.Banks(); err != nil {
		t.Fatal(err)
	}
	if got := tp.Commands() - n; got != 1 {
		t.Errorf("Banks sent %d commands, want 1", got)
	}

	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"read index 24", second(tp.ReadPCRs(pcrs.SHA256, []int{24})), ErrBadPCR},
		{"read index -1", second(tp.ReadPCRs(pcrs.SHA256, []int{-1})), ErrBadPCR},
		{"read empty", second(tp.ReadPCRs(pcrs.SHA256, nil)), ErrBadPCR},
		{"read unknown bank", second(tp.ReadPCRs(pcrs.Alg(0x99), []int{0})), ErrBadAlgorithm},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	for _, b := range []pcrs.Alg{pcrs.SHA384, pcrs.SHA512, pcrs.SM3} {
		if slices.Contains(banks, b) {
			continue
		}
		if _, err := tp.ReadPCRs(b, []int{0}); err == nil {
			t.Errorf("ReadPCRs of the inactive bank %s succeeded", b)
		}
	}
}

func second[T any](_ T, err error) error { return err }

func TestSimulatorCloseAndCount(t *testing.T) {
	tp := openSim(t)
	if tp.Commands() != 0 {
		t.Errorf("Commands() after Open = %d, want 0", tp.Commands())
	}
	if _, err := tp.EventLog(); !errors.Is(err, ErrNoEventLog) {
		t.Errorf("EventLog() on the simulator = %v, want ErrNoEventLog", err)
	}
	ak, err := tp.NewAK(AKECDSA)
	if err != nil {
		t.Fatal(err)
	}
	if tp.Commands() == 0 {
		t.Error("no commands counted for NewAK")
	}
	ak.Close(tp)
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tp.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := tp.ReadPCRs(pcrs.SHA256, []int{0}); !errors.Is(err, ErrClosed) {
		t.Errorf("ReadPCRs after Close = %v, want ErrClosed", err)
	}
	if _, err := tp.NewAK(AKECDSA); !errors.Is(err, ErrClosed) {
		t.Errorf("NewAK after Close = %v, want ErrClosed", err)
	}
}

// legacyCredential makes TPM2_MakeCredential's output for the AK whose
// TPMT_PUBLIC is akPublic with go-tpm's legacy credactivation, the code
// go-attestation's ActivationParameters.Generate runs after its checks:
// an implementation independent of the server's.
func legacyCredential(t testing.TB, ekPub crypto.PublicKey, akPublic, secret []byte) *attest.EncryptedCredential {
	t.Helper()
	pub, err := legacytpm2.DecodePublic(akPublic)
	if err != nil {
		t.Fatal(err)
	}
	name, err := pub.Name()
	if err != nil {
		t.Fatal(err)
	}
	cred, enc, err := credactivation.Generate(name.Digest, ekPub, 16, secret)
	if err != nil {
		t.Fatalf("credactivation.Generate: %v", err)
	}
	return &attest.EncryptedCredential{Credential: cred, Secret: enc}
}
