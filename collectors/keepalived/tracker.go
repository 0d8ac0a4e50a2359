package keepalived

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/meridianhq/meridian/pipeline"
)

// Event is one line keepalived writes to its notify FIFO for a VRRP instance:
// `INSTANCE "VI_1" MASTER 150`.
type Event struct {
	Instance string
	State    string
	Priority uint32
}

var states = map[string]bool{pipeline.VRRPMaster: true, pipeline.VRRPBackup: true, pipeline.VRRPFault: true, pipeline.VRRPStop: true}

// errIgnored marks a well-formed line about something other than a VRRP instance: sync
// groups (GROUP) and LVS virtual and real servers (VS, RS).
var errIgnored = errors.New("not a VRRP instance")

// ParseLine reads one notify FIFO line.
func ParseLine(line string) (Event, error) {
	typ, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
	switch typ {
	case "INSTANCE":
	case "GROUP", "VS", "RS":
		return Event{}, errIgnored
	default:
		return Event{}, fmt.Errorf("unknown line type %q (want INSTANCE, GROUP, VS or RS)", typ)
	}
	if !strings.HasPrefix(rest, `"`) {
		return Event{}, errors.New("instance name is not quoted")
	}
	name, rest, ok := strings.Cut(rest[1:], `" `)
	if !ok || name == "" {
		return Event{}, errors.New("no instance name and state")
	}
	state, prio, _ := strings.Cut(rest, " ")
	if !states[state] {
		return Event{}, fmt.Errorf("instance %q: unknown state %q", name, state)
	}
	p, err := strconv.ParseUint(prio, 10, 8) // VRRP priorities are 0-255
	if err != nil {
		return Event{}, fmt.Errorf("instance %q: priority %q: not 0-255", name, prio)
	}
	return Event{Instance: name, State: state, Priority: uint32(p)}, nil
}

type nodeKey struct{ pop, instance, node string }
type groupKey struct{ pop, instance string }

type nodeState struct {
	state    string
	priority uint32
	since    time.Time
}

// group is one VRRP instance across the nodes of a POP: the VIP's holders.
type group struct {
	lostAt     time.Time // when the last master left with none to follow; zero while a node is MASTER or before any was
	lostMaster string
}

// Tracker keeps the state of every instance on every node and turns state changes into
// transitions, failovers included. It is not safe for concurrent use.
type Tracker struct {
	nodes  map[nodeKey]*nodeState
	groups map[groupKey]*group
}

// NewTracker returns an empty tracker: every instance UNKNOWN.
func NewTracker() *Tracker {
	return &Tracker{nodes: map[nodeKey]*nodeState{}, groups: map[groupKey]*group{}}
}

// Apply records that instance e on node of pop is now in e.State, and returns the
// transition (nil when nothing changed but, perhaps, the priority).
func (t *Tracker) Apply(at time.Time, pop, node string, e Event) *pipeline.VRRPTransition {
	k := nodeKey{pop, e.Instance, node}
	ns := t.nodes[k]
	if ns == nil {
		ns = &nodeState{state: pipeline.VRRPUnknown}
		t.nodes[k] = ns
	}
	from := ns.state
	ns.priority = e.Priority
	if from == e.State {
		return nil
	}
	ns.state, ns.since = e.State, at
	gk := groupKey{pop, e.Instance}
	g := t.groups[gk]
	if g == nil {
		g = &group{}
		t.groups[gk] = g
	}
	tr := &pipeline.VRRPTransition{M: pipeline.Meta{Time: at}, POP: pop, Instance: e.Instance, From: from, To: e.State, Priority: e.Priority}
	switch {
	case from == pipeline.VRRPMaster && t.Masters(pop, e.Instance) == 0:
		g.lostAt, g.lostMaster = at, node
	case e.State == pipeline.VRRPMaster && !g.lostAt.IsZero():
		tr.Duration, tr.PreviousMaster = at.Sub(g.lostAt), g.lostMaster
		tr.Failover = g.lostMaster != node
		g.lostAt, g.lostMaster = time.Time{}, ""
	}
	return tr
}

// Gone records that node's keepalived went away (its FIFO closed without a STOP): each of
// its instances becomes UNKNOWN, which ends its mastership.
func (t *Tracker) Gone(at time.Time, pop, node string) []*pipeline.VRRPTransition {
	var out []*pipeline.VRRPTransition
	for k, ns := range t.nodes {
		if k.pop == pop && k.node == node && ns.state != pipeline.VRRPUnknown {
			out = append(out, t.Apply(at, pop, node, Event{Instance: k.instance, State: pipeline.VRRPUnknown, Priority: ns.priority}))
		}
	}
	return out
}

// Masters counts the nodes of pop in MASTER for instance: more than one is a split brain.
func (t *Tracker) Masters(pop, instance string) int {
	n := 0
	for k, ns := range t.nodes {
		if k.pop == pop && k.instance == instance && ns.state == pipeline.VRRPMaster {
			n++
		}
	}
	return n
}

// States returns one VRRPState per instance and node (Meta.Time at; the caller maps the
// rest of Meta).
func (t *Tracker) States(at time.Time, vips func(pop string) []string) []*pipeline.VRRPState {
	out := make([]*pipeline.VRRPState, 0, len(t.nodes))
	for k, ns := range t.nodes {
		out = append(out, &pipeline.VRRPState{
			M:   pipeline.Meta{Time: at, Node: k.node},
			POP: k.pop, Instance: k.instance, State: ns.state, Priority: ns.priority,
			VIPs: vips(k.pop), HoldsVIP: ns.state == pipeline.VRRPMaster, Since: ns.since,
		})
	}
	return out
}
