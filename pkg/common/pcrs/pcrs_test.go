package pcrs

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestParseAlg(t *testing.T) {
	for in, want := range map[string]Alg{"sha1": SHA1, "SHA256": SHA256, " sha384 ": SHA384, "sha512": SHA512, "sm3": SM3, "sm3_256": SM3} {
		got, err := ParseAlg(in)
		if err != nil || got != want {
			t.Errorf("ParseAlg(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "md5", "sha-256", "sha2561"} {
		if _, err := ParseAlg(bad); err == nil {
			t.Errorf("ParseAlg(%q) accepted", bad)
		}
	}
	if SHA256.String() != "sha256" || Alg(0x99).String() != "alg_0x0099" || Alg(0x99).Known() {
		t.Error("names wrong")
	}
	if !SHA1.Weak() || SHA256.Weak() {
		t.Error("weakness wrong")
	}
}

func TestJSONRoundTrip(t *testing.T) {
	v := Values{}
	v.Set(SHA256, 7, make([]byte, 32))
	v.Set(SHA1, 0, make([]byte, 20))
	back, err := FromJSON(v.ToJSON())
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Indices(SHA256)) != 1 || len(back.Banks()) != 2 {
		t.Fatalf("round trip lost values: %v", back)
	}
	tests := map[string]string{
		`{"md5": {}}`: "unknown PCR bank",
		`{"sha256": {"24": "` + zeros(32) + `"}}`: "not in 0..23",
		`{"sha256": {"x": "` + zeros(32) + `"}}`:  "not in 0..23",
		`{"sha256": {"0": "` + zeros(20) + `"}}`:  "20 bytes, want 32",
		`{"sha256": {"0": "zz"}}`:                 "bad hex",
		`{"sha1": {"0": "0x` + zeros(20) + `"}}`:  "",
	}
	for in, want := range tests {
		var j JSON
		if err := json.Unmarshal([]byte(in), &j); err != nil {
			t.Fatal(err)
		}
		_, err := FromJSON(j)
		if want == "" {
			if err != nil {
				t.Errorf("%s: %v", in, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", in, err, want)
		}
	}
}

func zeros(n int) string { return strings.Repeat("00", n) }

func FuzzFromJSON(f *testing.F) {
	f.Add([]byte(`{"sha256": {"0": "` + zeros(32) + `", "7": "` + zeros(32) + `"}, "sha1": {"0": "` + zeros(20) + `"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var j JSON
		if json.Unmarshal(b, &j) != nil {
			return
		}
		v, err := FromJSON(j)
		if err != nil {
			return
		}
		for _, a := range v.Banks() {
			for _, i := range v.Indices(a) {
				if val, _ := v.Get(a, i); len(val) != a.Size() || i < 0 || i > MaxIndex {
					t.Fatalf("accepted bad value %s/%d", a, i)
				}
			}
		}
	})
}

func TestResetValue(t *testing.T) {
	for _, tc := range []struct {
		alg   Alg
		index int
		want  string
	}{
		{SHA256, 0, zeros(32)},
		{SHA256, 16, zeros(32)},
		{SHA256, 17, strings.Repeat("ff", 32)},
		{SHA1, 22, strings.Repeat("ff", 20)},
		{SHA384, 23, zeros(48)},
	} {
		if got := fmt.Sprintf("%x", tc.alg.ResetValue(tc.index)); got != tc.want {
			t.Errorf("%s PCR%d reset = %s, want %s", tc.alg, tc.index, got, tc.want)
		}
	}
}
