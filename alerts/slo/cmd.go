package slo

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"gopkg.in/yaml.v3"
)

// GeneratorVersion fills sloth_slo_info's sloth_version label.
const GeneratorVersion = "meridian"

// File is the rules generated from one spec file.
type File struct {
	Source string // spec file
	Name   string // rule file base name
	Groups []rulefmt.RuleGroup
}

// Marshal renders the rule file, with a header naming its source.
func (f File) Marshal() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(header([]string{filepath.ToSlash(f.Source)}))
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(rulefmt.RuleGroups{Groups: f.Groups}); err != nil {
		return nil, err
	}
	return b.Bytes(), enc.Close()
}

// GenerateFiles loads spec files and generates their rules. Window files (Sloth
// AlertWindows documents) add or replace window sets by period. Two SLOs with the same
// service and name, in any files, are an error naming both files.
func GenerateFiles(specFiles, windowFiles []string, o Options) ([]File, error) {
	if o.Windows == nil {
		o.Windows = map[time.Duration]Windows{}
	}
	for _, wf := range windowFiles {
		ws, err := LoadWindows(wf)
		if err != nil {
			return nil, err
		}
		o.Windows[ws.Period] = ws
	}
	ids := map[string]string{}
	var files []File
	for _, path := range specFiles {
		specs, err := LoadFile(path)
		if err != nil {
			return nil, err
		}
		f := File{Source: path, Name: strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)) + ".yml"}
		for _, s := range specs {
			for _, slo := range s.SLOs {
				id := s.Service + "-" + slo.Name
				if prev, ok := ids[id]; ok {
					return nil, &SpecError{File: path, SLO: slo.Name, Field: "name", Err: fmt.Errorf("duplicate SLO: service %q already has SLO %q in %s", s.Service, slo.Name, prev)}
				}
				ids[id] = path
			}
			gs, err := Generate(s, o)
			if err != nil {
				return nil, err
			}
			f.Groups = append(f.Groups, gs...)
		}
		files = append(files, f)
	}
	return files, nil
}

// CheckRules validates rule groups as Prometheus loads them (promtool check rules does
// the same checks).
func CheckRules(groups []rulefmt.RuleGroup) error { return CheckRulesWith(groups, promqlParser) }

// CheckRulesWith is CheckRules through p, so an evaluator's own limits (the ruler's
// query length) refuse a rule before it is loaded.
func CheckRulesWith(groups []rulefmt.RuleGroup, p parser.Parser) error {
	b, err := yaml.Marshal(rulefmt.RuleGroups{Groups: groups})
	if err != nil {
		return err
	}
	if _, errs := rulefmt.Parse(b, false, model.UTF8Validation, p, nil); len(errs) > 0 {
		return errors.Join(errs...)
	}
	return nil
}

// WriteFiles writes each file under dir and returns the paths written.
func WriteFiles(dir string, files []File) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var paths []string
	for _, f := range files {
		b, err := f.Marshal()
		if err != nil {
			return nil, err
		}
		p := filepath.Join(dir, f.Name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return nil, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// GenerateCmd is `meridian slo generate [-out dir] [-windows file]... spec...`: it writes
// one Prometheus rule file per spec file into -out (default alerts/rules).
func GenerateCmd(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("slo generate", flag.ContinueOnError)
	fs.SetOutput(stdout)
	out := fs.String("out", "alerts/rules", "directory to write the rule files to")
	var windows, extra multiFlag
	fs.Var(&windows, "windows", "Sloth AlertWindows file for a custom SLO period (repeatable)")
	fs.Var(&extra, "extra-label", "label=value added to every rule (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("slo generate: no spec files given")
	}
	o := Options{Version: GeneratorVersion, ExtraLabels: map[string]string{}}
	for _, kv := range extra {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("slo generate: -extra-label %q: want label=value", kv)
		}
		o.ExtraLabels[k] = v
	}
	files, err := GenerateFiles(fs.Args(), windows, o)
	if err != nil {
		return err
	}
	paths, err := WriteFiles(*out, files)
	if err != nil {
		return err
	}
	for _, p := range paths {
		fmt.Fprintln(stdout, p)
	}
	return nil
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
