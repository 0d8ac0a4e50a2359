package steering

import (
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/meridianhq/meridian/inventory"
)

// Override is a manual drain or pin. Empty Service or Region means every one.
type Override struct {
	ID      string    `yaml:"-" json:"id"`
	Action  string    `yaml:"action" json:"action"` // drain, pin
	POP     string    `yaml:"pop" json:"pop"`
	Service string    `yaml:"service" json:"service,omitempty"`
	Region  string    `yaml:"region" json:"region,omitempty"`
	Reason  string    `yaml:"reason" json:"reason,omitempty"`
	Created time.Time `yaml:"-" json:"created"`
	Source  string    `yaml:"-" json:"source"` // config, api
}

type overrideSet struct {
	mu   sync.RWMutex
	inv  *inventory.Inventory // what overrides are checked against; the engine's, as of its last tick
	list []Override
	next int
}

func newOverrideSet(cfg []Override, inv *inventory.Inventory) (*overrideSet, error) {
	s := &overrideSet{inv: inv}
	return s, s.replaceConfig(cfg)
}

// replaceConfig makes list the overrides from the configuration, in place of the
// previous ones; those set through the API stay. An override in both lists keeps its ID
// and creation time, so reloading an unchanged file changes nothing. On error nothing
// changes.
func (s *overrideSet) replaceConfig(list []Override) error {
	fresh := make([]Override, 0, len(list))
	for i, o := range list {
		o, err := s.prepare(o)
		if err != nil {
			return fmt.Errorf("steering.overrides[%d]: %w", i, err)
		}
		o.Source = "config"
		fresh = append(fresh, o)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := slices.DeleteFunc(slices.Clone(s.list), func(o Override) bool { return o.Source != "config" })
	api := slices.DeleteFunc(slices.Clone(s.list), func(o Override) bool { return o.Source == "config" })
	for i, o := range fresh {
		if j := slices.IndexFunc(old, o.same); j >= 0 {
			fresh[i] = old[j]
			old = slices.Delete(old, j, j+1)
			continue
		}
		fresh[i] = s.stamp(o)
	}
	s.list = append(fresh, api...)
	return nil
}

// same reports whether two overrides say the same thing, whatever their ID.
func (o Override) same(p Override) bool {
	return o.Action == p.Action && o.POP == p.POP && o.Service == p.Service && o.Region == p.Region && o.Reason == p.Reason
}

// MaxReasonBytes bounds an override's reason: it is stored, logged and recorded with
// every decision it causes, so a client must not be able to make it arbitrarily large.
const MaxReasonBytes = 1024

// validate refuses overrides that name unknown things or would break residency: a pin
// to a POP a region may not use is an error, not a silent no-op.
func (s *overrideSet) validate(o Override) error {
	s.mu.RLock()
	inv := s.inv
	s.mu.RUnlock()
	if o.Action != "drain" && o.Action != "pin" {
		return fmt.Errorf("action %q: want drain or pin", o.Action)
	}
	if len(o.Reason) > MaxReasonBytes {
		return fmt.Errorf("reason is %d bytes, at most %d allowed", len(o.Reason), MaxReasonBytes)
	}
	if _, ok := inv.POP(o.POP); !ok {
		return fmt.Errorf("unknown POP %q", o.POP)
	}
	if o.Service != "" && !slices.ContainsFunc(inv.Services, func(v inventory.Service) bool { return dns.CanonicalName(v.Name) == o.Service }) {
		return fmt.Errorf("unknown service %q", o.Service)
	}
	if o.Region == "" {
		return nil
	}
	i := slices.IndexFunc(inv.ClientRegions, func(r inventory.ClientRegion) bool { return r.Name == o.Region })
	if i < 0 && o.Region != DefaultRegion {
		return fmt.Errorf("unknown client region %q", o.Region)
	}
	if o.Action == "pin" && i >= 0 {
		if allowed := inv.ClientRegions[i].AllowedPOPs; len(allowed) > 0 && !slices.Contains(allowed, o.POP) {
			return fmt.Errorf("pin of region %q to POP %q violates its residency (allowed: %v)", o.Region, o.POP, allowed)
		}
	}
	return nil
}

// setInventory checks overrides made from now on against inv. Those in force stay: one
// naming a POP that left matches nothing until it comes back.
func (s *overrideSet) setInventory(inv *inventory.Inventory) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inv = inv
}

// prepare puts o's service name in canonical form and validates it.
func (s *overrideSet) prepare(o Override) (Override, error) {
	if o.Service != "" {
		o.Service = dns.CanonicalName(o.Service)
	}
	return o, s.validate(o)
}

// stamp gives o the next ID and, unless it has one, a creation time; s.mu is held.
func (s *overrideSet) stamp(o Override) Override {
	s.next++
	o.ID = strconv.Itoa(s.next)
	if o.Created.IsZero() {
		o.Created = time.Now()
	}
	return o
}

func (s *overrideSet) add(o Override) (Override, error) {
	o, err := s.prepare(o)
	if err != nil {
		return Override{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o = s.stamp(o)
	s.list = append(s.list, o)
	return o, nil
}

func (s *overrideSet) remove(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.list)
	s.list = slices.DeleteFunc(s.list, func(o Override) bool { return o.ID == id })
	return len(s.list) != n
}

func (s *overrideSet) all() []Override {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Clone(s.list)
}

func (o Override) matches(svc, region string) bool {
	return (o.Service == "" || o.Service == svc) && (o.Region == "" || o.Region == region)
}

// drainedBy reports whether an override in list drains pop for the service and region.
func drainedBy(list []Override, svc, region, pop string) bool {
	return slices.ContainsFunc(list, func(o Override) bool {
		return o.Action == "drain" && o.POP == pop && o.matches(svc, region)
	})
}

// pinnedBy returns the pinned POPs among candidates; pins outside the candidates (another
// region's POP) are ignored so that a broad pin can never break residency.
func pinnedBy(list []Override, svc, region string, candidates []string) []string {
	var out []string
	for _, o := range list {
		if o.Action == "pin" && o.matches(svc, region) && slices.Contains(candidates, o.POP) && !slices.Contains(out, o.POP) {
			out = append(out, o.POP)
		}
	}
	return out
}
