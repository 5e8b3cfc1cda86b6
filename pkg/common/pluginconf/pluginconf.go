// Package pluginconf decodes a plugin's HCL plugin_data into its config
// struct and reports settings the struct does not know, so a misspelt key
// is an error instead of a silently ignored setting.
package pluginconf

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/hcl/ast"
)

// Decode decodes hclText into v (a pointer to a struct with hcl tags) and
// returns one error per unknown top-level key.
//
// A value of the wrong type ("pcrs = "0-7"") is reported as the key and the
// type it wants ("pcrs (line 3): want a list of integers"), never as the
// parser's internals; every such key is reported, joined in err together
// with the unknown keys, and v is then only partly decoded.
func Decode(hclText string, v any) ([]error, error) {
	file, err := hcl.Parse(hclText)
	if err != nil {
		return nil, fmt.Errorf("plugin_data is not valid HCL: %w", err)
	}
	var raw map[string]any
	if err := hcl.DecodeObject(&raw, file); err != nil {
		return nil, fmt.Errorf("plugin_data is not valid HCL: %w", err)
	}
	fields := map[string]reflect.StructField{}
	t := reflect.TypeOf(v).Elem()
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("hcl"), ",")
		if name != "" {
			fields[name] = t.Field(i)
		}
	}
	var unknown []string
	for k := range raw {
		if _, ok := fields[k]; !ok {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	errs := make([]error, 0, len(unknown))
	for _, k := range unknown {
		errs = append(errs, fmt.Errorf("unknown setting %q", k))
	}
	if err := hcl.DecodeObject(v, file); err == nil {
		return errs, nil
	}
	// Decode key by key to name every key whose value has the wrong type.
	var typeErrs []error
	list, _ := file.Node.(*ast.ObjectList)
	if list == nil {
		return nil, errors.New("plugin_data is not an HCL object")
	}
	for _, item := range list.Items {
		if len(item.Keys) == 0 {
			continue
		}
		key, _ := item.Keys[0].Token.Value().(string)
		f, ok := fields[key]
		if !ok {
			continue
		}
		one := &ast.ObjectList{Items: []*ast.ObjectItem{item}}
		if len(item.Keys) == 1 && hcl.DecodeObject(v, one) == nil {
			continue
		}
		typeErrs = append(typeErrs, fmt.Errorf("%s (line %d): want %s", key, item.Pos().Line, describe(f.Type)))
	}
	if len(typeErrs) == 0 {
		// Not reproducible key by key: report the decoder's own words.
		typeErrs = append(typeErrs, fmt.Errorf("plugin_data: %w", hcl.DecodeObject(v, file)))
	}
	return nil, errors.Join(append(typeErrs, errs...)...)
}

// describe names the HCL value a Go field type takes.
func describe(t reflect.Type) string {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return `a string ("...")`
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice:
		switch t.Elem().Kind() {
		case reflect.String:
			return `a list of strings (["...", "..."])`
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			return "a list of integers ([0, 7])"
		}
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a block ({ ... })"
	}
	return t.String()
}

// Notes splits a joined configuration error into one note per problem, the
// form SPIRE's Validate RPC reports.
func Notes(err error) []string {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []string
		for _, e := range j.Unwrap() {
			out = append(out, Notes(e)...)
		}
		return out
	}
	return []string{err.Error()}
}
