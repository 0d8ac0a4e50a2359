package steering

import (
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/meridianhq/meridian/alerts"
	"github.com/meridianhq/meridian/collectors/geodns"
)

// Recovery is gated on probe health, not on SLO alerts. A burn-rate alert summarises the
// probes over windows of minutes to days (the page's 30m/6h pair stays firing for about
// half an hour after a five-minute outage, a ticket's 6h/3d pair for hours), so waiting
// for it to resolve would keep a healed POP drained long after it answers again. An alert
// still drains (page) or lowers (ticket) a POP when it fires: it catches what the quorum
// does not, such as one vantage of three failing for good. But an alert that the probes
// explain — they saw the POP failing when it became active — stops holding the POP once
// no vantage sees it failing any more. The drain's hold (MinHold) and ramp then bring the
// traffic back. An alert the probes do not explain holds the POP until it resolves.

// alertLag bounds how long after the probe failures that caused it an alert may become
// active: the SLI series are scraped, then the rules evaluated on their group interval.
const alertLag = 5 * time.Minute

// probeState is what the probes say about each POP, updated every tick.
type probeState struct {
	lastBad map[string]time.Time // last tick a fresh vantage saw FailThreshold+ consecutive failures
	clean   map[string]bool      // fresh probes now, and no vantage sees FailThreshold+ failures
	// explained remembers, per firing alert, whether the probes saw its POP failing
	// within alertLag before it became active; decided when the alert is first seen.
	explained map[string]bool
}

func newProbeState() *probeState {
	return &probeState{lastBad: map[string]time.Time{}, clean: map[string]bool{}, explained: map[string]bool{}}
}

// observe folds the fresh cells of one tick in.
func (s *probeState) observe(cells []geodns.Cell, threshold int, now time.Time) {
	clear(s.clean)
	for _, c := range cells {
		if c.Failures >= threshold {
			s.lastBad[c.POP], s.clean[c.POP] = now, false
		} else if _, seen := s.clean[c.POP]; !seen {
			s.clean[c.POP] = true
		}
	}
}

// alertID identifies one firing of one alert: a new firing is judged anew.
func alertID(a alerts.Alert) string {
	var b strings.Builder
	b.WriteString(a.Name)
	for _, k := range slices.Sorted(maps.Keys(a.Labels)) {
		b.WriteString("\x00" + k + "=" + a.Labels[k])
	}
	b.WriteString("\x00" + a.ActiveAt.UTC().Format(time.RFC3339Nano))
	return b.String()
}

// alertState maps the firing SLO alerts that still hold their POP: page drains, ticket
// lowers. The key is "pop" or "service\x00pop" when the alert names a service. Alerts
// seen for the first time are judged (explained by the probes or not) here.
func (e *Engine) alertState(firing []alerts.Alert) (pages, tickets map[string]string) {
	pages, tickets = map[string]string{}, map[string]string{}
	seen := map[string]bool{}
	for _, a := range firing {
		pop := a.Labels["pop"]
		if pop == "" {
			continue
		}
		id := alertID(a)
		seen[id] = true
		if _, judged := e.probes.explained[id]; !judged {
			last, ok := e.probes.lastBad[pop]
			e.probes.explained[id] = ok && !last.Before(a.ActiveAt.Add(-alertLag))
		}
		if e.probes.explained[id] && e.probes.clean[pop] {
			continue // the probes saw the failure behind this alert, and its end
		}
		k := pop
		if s := a.Labels["service"]; s != "" {
			k = dns.CanonicalName(s) + "\x00" + pop
		}
		switch a.Severity {
		case alerts.SeverityPage:
			pages[k] = a.Name
		case alerts.SeverityTicket:
			tickets[k] = a.Name
		}
	}
	for id := range e.probes.explained {
		if !seen[id] {
			delete(e.probes.explained, id) // resolved: forget it
		}
	}
	return
}
