package pluginconf

import (
	"strings"
	"testing"
)

type cfg struct {
	Device  string   `hcl:"tpm_device"`
	Banks   []string `hcl:"pcr_banks"`
	PCRs    []int    `hcl:"pcrs"`
	Size    int      `hcl:"max_hello_size"`
	Require *bool    `hcl:"require_event_log"`
	Store   *string  `hcl:"store"`
}

func TestDecodeTypeErrors(t *testing.T) {
	tests := []struct {
		name, hcl string
		want      []string
	}{
		{"ok", "tpm_device = \"/dev/tpmrm0\"\npcr_banks = [\"sha256\"]\npcrs = [0, 7]\nmax_hello_size = 10\nrequire_event_log = false\nstore = \"x\"", nil},
		{"string for list of strings", `pcr_banks = "sha256"`, []string{"pcr_banks (line 1): want a list of strings"}},
		{"string for list of ints", "\npcrs = \"0-7\"", []string{"pcrs (line 2): want a list of integers"}},
		{"strings in list of ints", `pcrs = ["a"]`, []string{"pcrs (line 1): want a list of integers"}},
		{"word for int", `max_hello_size = "big"`, []string{"max_hello_size (line 1): want an integer"}},
		{"string for bool", `require_event_log = "maybe"`, []string{"require_event_log (line 1): want true or false"}},
		{"list for string", `tpm_device = ["/dev/tpm0"]`, []string{"tpm_device (line 1): want a string"}},
		{"block for string", `store { a = 1 }`, []string{"store (line 1): want a string"}},
		{"several, with an unknown key", "pcrs = \"x\"\npcr_banks = 1\nbogus = 2", []string{"pcrs (line 1)", "pcr_banks (line 2)", `unknown setting "bogus"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c cfg
			unknown, err := Decode(tt.hcl, &c)
			if tt.want == nil {
				if err != nil || len(unknown) != 0 {
					t.Fatalf("%v %v", unknown, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted: %+v", c)
			}
			msg := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("%q does not say %q", msg, w)
				}
			}
			for _, internal := range []string{"ast.", "unknown slice type", "strconv"} {
				if strings.Contains(msg, internal) {
					t.Errorf("%q leaks parser internals (%s)", msg, internal)
				}
			}
			if n := len(Notes(err)); n != len(tt.want) {
				t.Errorf("%d notes, want %d: %q", n, len(tt.want), Notes(err))
			}
		})
	}
}
