package configfile

import (
	"errors"
	"flag"
	"strings"
	"testing"
	"time"
)

type inner struct {
	TTL   time.Duration `yaml:"ttl"`
	Names []string      `yaml:"names"`
}

type cfg struct {
	Listen  string  `yaml:"listen"`
	Storage inner   `yaml:"storage"`
	Pops    []inner `yaml:"pops"`
}

func TestDecodeErrorsNameFileLineField(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"unknown field", "listen: x\nstorage:\n  tll: 5s\n", "m.yaml:3: field storage.tll: unknown field tll"},
		{"bad type", "storage:\n  ttl: soon\n", "m.yaml:2: field storage.ttl: cannot unmarshal !!str `soon` into time.Duration"},
		{"in list", "pops:\n  - ttl: 1s\n  - ttl: never\n", "m.yaml:3: field pops[1].ttl: cannot unmarshal"},
		{"syntax", "listen: [\n", "m.yaml: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c cfg
			err := Decode("m.yaml", []byte(tc.yaml), &c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestDecodeKeepsDefaults(t *testing.T) {
	c := cfg{Listen: "default", Storage: inner{TTL: time.Hour}}
	if err := Decode("m.yaml", []byte("storage:\n  names: [a]\n"), &c); err != nil {
		t.Fatal(err)
	}
	if c.Listen != "default" || c.Storage.TTL != time.Hour || c.Storage.Names[0] != "a" {
		t.Fatalf("got %+v", c)
	}
	if err := Decode("empty.yaml", nil, &c); err != nil {
		t.Fatalf("empty file: %v", err)
	}
}

func TestFieldLine(t *testing.T) {
	data := []byte("a: 1\nstorage:\n  ttl: 5s\npops:\n  - ttl: 1s\n  - ttl: 2s\n")
	for path, want := range map[string]int{"a": 1, "storage.ttl": 3, "pops[1].ttl": 6, "pops[1]": 6, "nope": 0} {
		if got := FieldLine(data, path); got != want {
			t.Errorf("FieldLine(%s) = %d, want %d", path, got, want)
		}
	}
}

func TestUnknownFlag(t *testing.T) {
	fs := flag.NewFlagSet("m", flag.ContinueOnError)
	fs.String("storage.path", "", "")
	fs.String("server.listen-address", "", "")
	fs.SetOutput(&strings.Builder{})
	err := UnknownFlag(fs, fs.Parse([]string{"-storage.pth=x"}))
	if err == nil || err.Error() != "unknown flag -storage.pth; did you mean -storage.path?" {
		t.Fatalf("got %v", err)
	}
	err = UnknownFlag(fs, fs.Parse([]string{"-zzzzzzzzzzzzz"}))
	if err == nil || !strings.Contains(err.Error(), "see -help") {
		t.Fatalf("got %v", err)
	}
	other := errors.New("other")
	if UnknownFlag(fs, other) != other {
		t.Fatal("other errors pass through")
	}
}

func TestChangedAndCopy(t *testing.T) {
	type reloadable struct {
		Listen  string   `yaml:"listen"`
		Storage inner    `yaml:"storage"`
		Names   []string `yaml:"names"`
		File    string   `yaml:"-"`
	}
	old := reloadable{Listen: "a", Storage: inner{TTL: time.Second}, Names: []string{"x"}, File: "f"}
	cur := reloadable{Listen: "b", Storage: inner{TTL: time.Second}, Names: []string{"x", "y"}, File: "g"}
	if got := Changed("s.", old, cur); strings.Join(got, ",") != "s.listen,s.names" {
		t.Errorf("Changed = %v, want s.listen and s.names (storage equal, file not YAML)", got)
	}
	if got := Changed("s.", old, cur, "names"); strings.Join(got, ",") != "s.listen" {
		t.Errorf("Changed skipping names = %v", got)
	}
	Copy(&old, cur, "names")
	if old.Listen != "a" || len(old.Names) != 2 {
		t.Errorf("Copy of names only: %+v", old)
	}
}
