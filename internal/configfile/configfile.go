// Package configfile loads Meridian's YAML configuration over flag defaults, with errors
// that name the file, the line and the field, and suggests the nearest flag for a typo.
package configfile

import (
	"encoding"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net/netip"
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

// Decode is Load over bytes; name is used in errors. It reports every problem it finds,
// not only the first: the returned error joins one *Error per problem, in file order.
// A field whose type is a flag.Value list or map (e.g. -target, -geodns.vantages)
// accepts the flag's comma-separated form as well as a YAML list or map, so a setting
// reads the same on the command line and in the file.
func Decode(name string, data []byte, dst any) error {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return fmt.Errorf("%s: %s", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(root.Content) == 0 {
		return nil // an empty file changes nothing
	}
	var errs []error
	report := func(n *yaml.Node, path, msg string) {
		errs = append(errs, &Error{File: name, Line: n.Line, Field: path, Msg: msg})
	}
	prepare(root.Content[0], "", reflect.TypeOf(dst).Elem(), report)
	if err := root.Content[0].Decode(dst); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return fmt.Errorf("%s: %v", name, err)
		}
		for _, e := range te.Errors {
			errs = append(errs, describe(name, &root, e))
		}
	}
	return Sorted(errs)
}

// Error is one problem of a configuration file, at a line and a dotted field path.
type Error struct {
	File  string
	Line  int    // 0: unknown
	Field string // e.g. inventory.pops[2].vips[0]; "": unknown
	Msg   string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Field != "" {
		b.WriteString(": field " + e.Field)
	}
	return b.String() + ": " + e.Msg
}

// Sorted joins errs, ordered by file and line, or returns nil when there are none.
func Sorted(errs []error) error {
	slices.SortStableFunc(errs, func(a, b error) int {
		var x, y *Error
		if !errors.As(a, &x) || !errors.As(b, &y) {
			return 0
		}
		if c := strings.Compare(x.File, y.File); c != 0 {
			return c
		}
		return x.Line - y.Line
	})
	return errors.Join(errs...)
}

// Split undoes errors.Join: the single errors inside err, in order.
func Split(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, Split(e)...)
		}
		return out
	}
	return []error{err}
}

var (
	flagValue       = reflect.TypeFor[flag.Value]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
	nodeUnmarshaler = reflect.TypeFor[yaml.Unmarshaler]()
	funcUnmarshaler = reflect.TypeFor[interface{ UnmarshalYAML(func(any) error) error }]()
)

// prepare walks the YAML node n that decodes into a value of type t before yaml.v3 does:
// it reports unknown fields, rewrites the flag forms of lists into YAML, and checks the
// values that yaml.v3 would parse with UnmarshalText (an IP address, a CIDR), whose first
// failure would otherwise end the whole decode without a line. A bad value is reported
// and nulled so that decoding goes on to find the next problem.
func prepare(n *yaml.Node, path string, t reflect.Type, report func(*yaml.Node, string, string)) {
	if n.Kind == yaml.AliasNode || n.Tag == "!!null" {
		return
	}
	pt := reflect.PointerTo(t)
	if pt.Implements(flagValue) && (t.Kind() == reflect.Slice || t.Kind() == reflect.Map) {
		if s, ok := flagForm(n, t); ok {
			v := reflect.New(t)
			if err := v.Interface().(flag.Value).Set(s); err != nil {
				report(n, path, err.Error())
				setNull(n)
				return
			}
			var enc yaml.Node
			if err := enc.Encode(v.Elem().Interface()); err == nil {
				enc.Line, enc.Column = n.Line, n.Column
				*n = enc
			}
			return
		}
	}
	if pt.Implements(nodeUnmarshaler) || pt.Implements(funcUnmarshaler) {
		return // the type reads its own YAML
	}
	if pt.Implements(textUnmarshaler) && n.Kind == yaml.ScalarNode {
		if err := reflect.New(t).Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(n.Value)); err != nil {
			report(n, path, fmt.Sprintf("%q is not %s: %v", n.Value, textName(t), err))
			setNull(n)
		}
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		prepare(n, path, t.Elem(), report)
	case reflect.Slice, reflect.Array:
		if n.Kind == yaml.SequenceNode {
			for i, c := range n.Content {
				prepare(c, fmt.Sprintf("%s[%d]", path, i), t.Elem(), report)
			}
		}
	case reflect.Map:
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				prepare(n.Content[i+1], join(path, n.Content[i].Value), t.Elem(), report)
			}
		}
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return // yaml.v3 reports the type mismatch with its line
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			ft, ok := fields[k.Value]
			if !ok {
				report(k, p, "unknown field "+k.Value+suggest(k.Value, fields))
				continue
			}
			prepare(v, p, ft, report)
		}
	}
}

// textName says in words what a value of t must be.
func textName(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[netip.Addr]():
		return "an IP address"
	case reflect.TypeFor[netip.Prefix]():
		return "a CIDR prefix (address/bits)"
	case reflect.TypeFor[netip.AddrPort]():
		return "an address:port"
	}
	return "a valid " + t.String()
}

// flagForm returns the flag's string form of n for a flag.Value list or map: a scalar
// as it is, a YAML list of scalars joined with commas.
func flagForm(n *yaml.Node, t reflect.Type) (string, bool) {
	switch {
	case n.Kind == yaml.ScalarNode:
		return n.Value, true
	case n.Kind == yaml.SequenceNode && t.Kind() == reflect.Slice:
		parts := make([]string, len(n.Content))
		for i, c := range n.Content {
			if c.Kind != yaml.ScalarNode {
				return "", false // a list of mappings: the YAML form
			}
			parts[i] = c.Value
		}
		return strings.Join(parts, ","), true
	}
	return "", false
}

func setNull(n *yaml.Node) {
	*n = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Line: n.Line, Column: n.Column}
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// yamlFields maps the YAML names of t's fields (inline structs flattened) to their types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") {
			maps.Copy(out, yamlFields(f.Type))
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

// suggest names the nearest known field to a misspelt one.
func suggest(bad string, fields map[string]reflect.Type) string {
	best, bestD := "", 1<<30
	for name := range fields {
		if d := distance(bad, name); d < bestD || (d == bestD && name < best) {
			best, bestD = name, d
		}
	}
	if best != "" && bestD <= max(2, len(bad)/3) {
		return "; did you mean " + best + "?"
	}
	return ""
}

var lineRE = regexp.MustCompile(`^line (\d+): (.*)$`)

func describe(name string, root *yaml.Node, e string) error {
	m := lineRE.FindStringSubmatch(e)
	if m == nil {
		return &Error{File: name, Msg: e}
	}
	line, _ := strconv.Atoi(m[1])
	msg := m[2]
	if strings.HasPrefix(msg, "field ") && strings.Contains(msg, " not found in type ") {
		msg = "unknown field " + strings.Fields(msg)[1]
	}
	return &Error{File: name, Line: line, Field: PathAtLine(root, line), Msg: msg}
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
