// Package configfile loads Meridian's YAML configuration over flag defaults, with errors
// that name the file, the line and the field, and suggests the nearest flag for a typo.
package configfile

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Load decodes the YAML file at path into dst, rejecting unknown fields. Fields the file
// does not mention keep the values dst already has (the flag defaults).
func Load(path string, dst any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return Decode(path, data, dst)
}

// Decode is Load over bytes; name is used in errors.
func Decode(name string, data []byte, dst any) error {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return fmt.Errorf("%s: %s", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(dst)
	if err == nil || errors.Is(err, io.EOF) {
		return nil
	}
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("%s: %v", name, err)
	}
	// yaml.v3 reports every problem with its line; add the dotted field path at that line.
	msgs := make([]string, 0, len(te.Errors))
	for _, e := range te.Errors {
		msgs = append(msgs, describe(name, &root, e))
	}
	return errors.New(strings.Join(msgs, "\n"))
}

var lineRE = regexp.MustCompile(`^line (\d+): (.*)$`)

func describe(name string, root *yaml.Node, e string) string {
	m := lineRE.FindStringSubmatch(e)
	if m == nil {
		return fmt.Sprintf("%s: %s", name, e)
	}
	line, _ := strconv.Atoi(m[1])
	msg := m[2]
	if strings.HasPrefix(msg, "field ") && strings.Contains(msg, " not found in type ") {
		msg = "unknown field " + strings.Fields(msg)[1]
	}
	if path := PathAtLine(root, line); path != "" {
		return fmt.Sprintf("%s:%d: field %s: %s", name, line, path, msg)
	}
	return fmt.Sprintf("%s:%d: %s", name, line, msg)
}

// PathAtLine returns the dotted path (e.g. "storage.ttl.flows", "inventory.pops[2].name")
// of the mapping key or value on line, or "".
func PathAtLine(root *yaml.Node, line int) string {
	var walk func(n *yaml.Node, path string) string
	walk = func(n *yaml.Node, path string) string {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				if p := walk(c, path); p != "" {
					return p
				}
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := k.Value
				if path != "" {
					p = path + "." + k.Value
				}
				// A key names the line unless its value is a flow mapping on the same line,
				// whose own keys are more precise.
				if k.Line == line && (v.Kind != yaml.MappingNode || v.Line != line) {
					return p
				}
				if q := walk(v, p); q != "" {
					return q
				}
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				p := fmt.Sprintf("%s[%d]", path, i)
				if c.Kind == yaml.ScalarNode && c.Line == line {
					return p
				}
				if q := walk(c, p); q != "" {
					return q
				}
			}
		}
		return ""
	}
	return walk(root, "")
}

// FieldLine returns the line of the dotted field path in the YAML data, or 0. It lets a
// validation error found after decoding point at the file line too.
func FieldLine(data []byte, path string) int {
	var root yaml.Node
	if yaml.Unmarshal(data, &root) != nil || len(root.Content) == 0 {
		return 0
	}
	n := root.Content[0]
	for _, part := range strings.Split(path, ".") {
		name, idx := part, -1
		if i := strings.IndexByte(part, '['); i >= 0 && strings.HasSuffix(part, "]") {
			name = part[:i]
			idx, _ = strconv.Atoi(part[i+1 : len(part)-1])
		}
		next := (*yaml.Node)(nil)
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == name {
					next = n.Content[i+1]
					if idx < 0 && next.Kind != yaml.MappingNode && next.Kind != yaml.SequenceNode {
						return n.Content[i].Line
					}
				}
			}
		}
		if next == nil {
			return 0
		}
		if idx >= 0 {
			if next.Kind != yaml.SequenceNode || idx >= len(next.Content) {
				return 0
			}
			next = next.Content[idx]
		}
		n = next
	}
	return n.Line
}

// UnknownFlag turns the flag package's "flag provided but not defined" error into one that
// names the nearest defined flag.
func UnknownFlag(fs *flag.FlagSet, err error) error {
	const prefix = "flag provided but not defined: -"
	msg := err.Error()
	if !strings.HasPrefix(msg, prefix) {
		return err
	}
	bad := strings.TrimLeft(strings.TrimPrefix(msg, prefix), "-")
	best, bestD := "", 1<<30
	fs.VisitAll(func(f *flag.Flag) {
		if d := distance(bad, f.Name); d < bestD {
			best, bestD = f.Name, d
		}
	})
	if best != "" && bestD <= max(3, len(bad)/3) {
		return fmt.Errorf("unknown flag -%s; did you mean -%s?", bad, best)
	}
	return fmt.Errorf("unknown flag -%s (see -help)", bad)
}

// distance is the Levenshtein edit distance.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Changed returns the YAML names, after prefix, of the fields that differ between old
// and new, two values of one struct type; fields named in skip, or tagged `yaml:"-"`,
// are left out. A reload uses it to say which settings need a restart.
func Changed(prefix string, old, new any, skip ...string) []string {
	ov, nv := reflect.ValueOf(old), reflect.ValueOf(new)
	var out []string
	for i := range ov.NumField() {
		f := ov.Type().Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		if !f.IsExported() || name == "-" || slices.Contains(skip, name) {
			continue
		}
		if !reflect.DeepEqual(ov.Field(i).Interface(), nv.Field(i).Interface()) {
			out = append(out, prefix+name)
		}
	}
	return out
}

// Copy sets the fields of *dst that src, a value of the same struct type, has under the
// YAML names given.
func Copy(dst, src any, names ...string) {
	dv, sv := reflect.ValueOf(dst).Elem(), reflect.ValueOf(src)
	for i := range dv.NumField() {
		name, _, _ := strings.Cut(dv.Type().Field(i).Tag.Get("yaml"), ",")
		if slices.Contains(names, name) {
			dv.Field(i).Set(sv.Field(i))
		}
	}
}
