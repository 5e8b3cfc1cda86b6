package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestVersionCommand(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		var out bytes.Buffer
		rootCmd.SetOut(&out)
		rootCmd.SetArgs(args)
		if err := rootCmd.Execute(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if !strings.HasPrefix(out.String(), "tpmid ") || !strings.Contains(out.String(), "go1.") {
			t.Errorf("%v printed %q", args, out.String())
		}
	}
	var out bytes.Buffer
	rootCmd.SetOut(&out)
	rootCmd.SetArgs([]string{"version", "--json"})
	if err := rootCmd.Execute(); err != nil {
		t.Fatal(err)
	}
	var v struct{ Module, Version, Go string }
	if err := json.Unmarshal(out.Bytes(), &v); err != nil || v.Module != "github.com/tpmid/tpmid" || v.Go == "" {
		t.Errorf("version --json: %q (%v)", out.String(), err)
	}
	rootCmd.SetOut(nil)
	rootCmd.SetArgs(nil)
}
