package lab

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/meridianhq/meridian/internal/jsonbody"
)

// Failure is one injected fault. Kind is pop, tunnel, osd or vrrp; Target names the POP,
// the site pair ("newyork-nuremberg"), the OSD id or the POP whose VRRP master stops;
// Mode is down (default) or slow.
type Failure struct {
	Kind   string `json:"kind"`
	Target string `json:"target"`
	Mode   string `json:"mode,omitempty"`
}

func (f Failure) String() string {
	s := f.Kind + " " + f.Target
	if f.Mode != "" && f.Mode != "down" {
		s += " " + f.Mode
	}
	return s
}

// State is the lab's current set of failures. Every peer reads it on each request, so a
// failure shows in the next scrape, flow or probe.
type State struct {
	mu       sync.RWMutex
	failures map[string]Failure // keyed by kind+target
	check    interface{ validate(Failure) error }
	onChange []func(Failure, bool)
}

func newState(v interface{ validate(Failure) error }) *State {
	return &State{failures: map[string]Failure{}, check: v}
}

// Fail injects f.
func (s *State) Fail(f Failure) error {
	if f.Mode == "" {
		f.Mode = "down"
	}
	f = normalize(f)
	if err := s.check.validate(f); err != nil {
		return err
	}
	s.mu.Lock()
	s.failures[f.Kind+"/"+f.Target] = f
	hooks := s.onChange
	s.mu.Unlock()
	for _, h := range hooks {
		h(f, true)
	}
	return nil
}

// Heal clears every failure.
func (s *State) Heal() {
	s.mu.Lock()
	old := s.failures
	s.failures = map[string]Failure{}
	hooks := s.onChange
	s.mu.Unlock()
	for _, f := range old {
		for _, h := range hooks {
			h(f, false)
		}
	}
}

// Failures lists the current failures in a stable order.
func (s *State) Failures() []Failure {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Failure, 0, len(s.failures))
	for _, f := range s.failures {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// mode returns the failure mode of kind/target, or "" when healthy.
func (s *State) mode(kind, target string) string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.failures[kind+"/"+target].Mode
}

func (s *State) popDown(pop string) bool { return s.mode("pop", pop) == "down" }
func (s *State) tunnelDown(siteA, siteB string) bool {
	return s.mode("tunnel", SitePair(siteA, siteB)) != ""
}
func (s *State) osdMode(id int) string { return s.mode("osd", strconv.Itoa(id)) }

// impairs reports whether a failure lies beneath the workloads of a cluster at site: a
// tunnel of its site is down (its calls across it time out), or an OSD is down or slow
// and its pods' volumes live on the site's Ceph cluster (withCeph). Their replayed
// answers then fail with 503, so the map sees the flows err over the failure.
func (s *State) impairs(site string, withCeph bool) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, f := range s.failures {
		a, b, _ := strings.Cut(f.Target, "-")
		if f.Kind == "tunnel" && (a == site || b == site) || f.Kind == "osd" && withCeph {
			return true
		}
	}
	return false
}

// ParseFailure reads CLI words: "pop nuremberg", "tunnel newyork-nuremberg",
// "osd 3 slow", "osd 3 down", "vrrp paris".
func ParseFailure(words []string) (Failure, error) {
	if len(words) < 2 || len(words) > 3 {
		return Failure{}, fmt.Errorf("want KIND TARGET [MODE], e.g. \"pop nuremberg\", \"tunnel newyork-nuremberg\", \"osd 3 slow\", \"vrrp paris\"")
	}
	f := Failure{Kind: words[0], Target: words[1]}
	if len(words) == 3 {
		f.Mode = words[2]
	}
	return f, nil
}

// Handler serves the control API: GET /lab/state, POST /lab/fail (JSON Failure),
// POST /lab/heal.
func (s *State) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /lab/state", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"failures": s.Failures()})
	})
	mux.HandleFunc("POST /lab/fail", func(w http.ResponseWriter, r *http.Request) {
		var f Failure
		if err := jsonbody.DecodeRequest(w, r, 4096, &f); err != nil {
			http.Error(w, "lab fail: bad request body: "+err.Error(), http.StatusBadRequest)
			return
		}
		if err := s.Fail(f); err != nil {
			http.Error(w, "lab fail: "+err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "failed %s\n", f)
	})
	mux.HandleFunc("POST /lab/heal", func(w http.ResponseWriter, _ *http.Request) {
		s.Heal()
		fmt.Fprintln(w, "healed")
	})
	return mux
}

// validator checks failure targets against the world.
type validator struct{ l *Lab }

func (v validator) validate(f Failure) error {
	switch f.Kind {
	case "pop", "vrrp":
		if _, ok := v.l.inv.POP(f.Target); !ok {
			return fmt.Errorf("unknown POP %q (POPs: %s)", f.Target, strings.Join(v.l.popNames(), ", "))
		}
		if f.Mode != "down" {
			return fmt.Errorf("%s failures take mode down, not %q", f.Kind, f.Mode)
		}
	case "tunnel":
		a, b, ok := strings.Cut(f.Target, "-")
		_, okA := v.l.inv.Site(a)
		_, okB := v.l.inv.Site(b)
		if !ok || !okA || !okB || a == b {
			return fmt.Errorf("tunnel target %q is not SITE-SITE (sites: %s)", f.Target, strings.Join(siteNames(v.l.inv), ", "))
		}
		if f.Mode != "down" {
			return fmt.Errorf("tunnel failures take mode down, not %q", f.Mode)
		}
	case "osd":
		id, err := strconv.Atoi(f.Target)
		if err != nil || id < 0 || id >= OSDs {
			return fmt.Errorf("osd target %q is not an OSD id 0..%d", f.Target, OSDs-1)
		}
		if f.Mode != "down" && f.Mode != "slow" {
			return fmt.Errorf("osd failures take mode down or slow, not %q", f.Mode)
		}
	default:
		return fmt.Errorf("unknown failure kind %q (pop, tunnel, osd, vrrp)", f.Kind)
	}
	return nil
}
