// Package pluginconf decodes a plugin's HCL plugin_data into its config
// struct and reports settings the struct does not know, so a misspelt key
// is an error instead of a silently ignored setting.
package pluginconf

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/hashicorp/hcl"
)

// Decode decodes hclText into v (a pointer to a struct with hcl tags) and
// returns one error per unknown top-level key.
func Decode(hclText string, v any) ([]error, error) {
	if err := hcl.Decode(v, hclText); err != nil {
		return nil, fmt.Errorf("plugin_data is not valid HCL: %w", err)
	}
	var raw map[string]any
	if err := hcl.Decode(&raw, hclText); err != nil {
		return nil, fmt.Errorf("plugin_data is not valid HCL: %w", err)
	}
	known := map[string]bool{}
	t := reflect.TypeOf(v).Elem()
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("hcl"), ",")
		if name != "" {
			known[name] = true
		}
	}
	var unknown []string
	for k := range raw {
		if !known[k] {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	errs := make([]error, 0, len(unknown))
	for _, k := range unknown {
		errs = append(errs, fmt.Errorf("unknown setting %q", k))
	}
	return errs, nil
}

// Notes splits a joined configuration error into one note per problem, the
// form SPIRE's Validate RPC reports.
func Notes(err error) []string {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []string
		for _, e := range j.Unwrap() {
			out = append(out, e.Error())
		}
		return out
	}
	return []string{err.Error()}
}
