package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/alecthomas/kong"
	"go.yaml.in/yaml/v3"
)

// configLoader reads a YAML (or JSON, which is YAML) config file whose keys
// are flag names ("default-ttl" or "default_ttl"). Precedence is flags >
// RELOCK_* environment > file > defaults: a flag set in the environment is
// not resolved from the file. Unknown keys are an error, so that a typo
// never silently leaves a default in force.
func configLoader(r io.Reader) (kong.Resolver, error) {
	values := map[string]any{}
	if err := yaml.NewDecoder(r).Decode(&values); err != nil && err != io.EOF {
		return nil, fmt.Errorf("config file: %w", err)
	}
	norm := make(map[string]any, len(values))
	for k, v := range values {
		norm[strings.ReplaceAll(strings.ToLower(k), "_", "-")] = v
	}
	return &fileResolver{values: norm}, nil
}

type fileResolver struct{ values map[string]any }

func (f *fileResolver) Validate(app *kong.Application) error {
	known := map[string]bool{}
	var walk func(n *kong.Node)
	walk = func(n *kong.Node) {
		for _, fl := range n.Flags {
			known[fl.Name] = true
		}
		for _, c := range n.Children {
			walk(c)
		}
	}
	walk(app.Node)
	var unknown []string
	for k := range f.values {
		if !known[k] {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	if len(unknown) > 0 {
		return fmt.Errorf("config file: unknown setting(s) %s", strings.Join(unknown, ", "))
	}
	return nil
}

func (f *fileResolver) Resolve(ctx *kong.Context, parent *kong.Path, flag *kong.Flag) (any, error) {
	for _, env := range flag.Envs {
		if _, ok := os.LookupEnv(env); ok {
			return nil, nil // the environment wins over the file
		}
	}
	v, ok := f.values[flag.Name]
	if !ok || v == nil {
		return nil, nil
	}
	switch v.(type) {
	case map[string]any, []any:
		return nil, fmt.Errorf("config file: %s must be a single value", flag.Name)
	}
	return fmt.Sprint(v), nil
}
