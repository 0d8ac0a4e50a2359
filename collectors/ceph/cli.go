package ceph

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/meridianhq/meridian/collectors/scrape"
)

// jsonError names the source and the line of a JSON syntax or type error.
func jsonError(source string, b []byte, err error) error {
	var off int64 = -1
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		off = se.Offset
	case errors.As(err, &te):
		off = te.Offset
	}
	if off < 0 || off > int64(len(b)) {
		return fmt.Errorf("%s: %w", source, err)
	}
	return &scrape.LineError{Source: source, Line: 1 + bytes.Count(b[:off], []byte{'\n'}), Err: err}
}

// ParseStatus parses `ceph -s -f json` (`ceph status`). It understands the Luminous+
// health.status/health.checks form and the older overall_status/summary form, and both
// osdmap layouts (flat since Nautilus, nested osdmap.osdmap before).
func ParseStatus(source string, b []byte) (*Snapshot, error) {
	var doc struct {
		FSID   string `json:"fsid"`
		Health struct {
			Status        string `json:"status"`
			OverallStatus string `json:"overall_status"`
			Checks        map[string]struct {
				Severity string `json:"severity"`
			} `json:"checks"`
			Summary []struct {
				Severity string `json:"severity"`
				Summary  string `json:"summary"`
			} `json:"summary"`
		} `json:"health"`
		OSDMap json.RawMessage `json:"osdmap"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, jsonError(source, b, err)
	}
	s := newSnapshot()
	s.FSID = doc.FSID
	s.Health = doc.Health.Status
	if s.Health == "" {
		s.Health = doc.Health.OverallStatus
	}
	// Without an overall status, the worst severity of the checks (or of the pre-Luminous
	// summary) is the cluster's.
	worst := ""
	for name, c := range doc.Health.Checks {
		s.Checks = append(s.Checks, name)
		worst = worse(worst, c.Severity)
	}
	for _, c := range doc.Health.Summary {
		worst = worse(worst, c.Severity)
	}
	if s.Health == "" {
		s.Health = worst
	}
	sort.Strings(s.Checks)
	if len(doc.OSDMap) > 0 {
		type counts struct {
			NumOSDs   *uint32 `json:"num_osds"`
			NumUpOSDs uint32  `json:"num_up_osds"`
			NumInOSDs uint32  `json:"num_in_osds"`
		}
		var m struct {
			counts
			Nested *counts `json:"osdmap"`
		}
		if err := json.Unmarshal(doc.OSDMap, &m); err != nil {
			return nil, fmt.Errorf("%s: osdmap: %w", source, err)
		}
		c := &m.counts
		if m.Nested != nil {
			c = m.Nested
		}
		if c.NumOSDs != nil {
			s.OSDCounts = &[3]uint32{*c.NumOSDs, c.NumUpOSDs, c.NumInOSDs}
		}
	}
	if s.Health == "" && s.OSDCounts == nil {
		return nil, fmt.Errorf("%s: neither health status nor osdmap in the document", source)
	}
	return s, nil
}

// ParseOSDPerf parses `ceph osd perf -f json`: {"osdstats":{"osd_perf_infos":[...]}} since
// Nautilus, {"osd_perf_infos":[...]} before. Latencies are taken from the *_ns fields when
// present (Pacific+, finer than whole ms) and from *_ms otherwise, always giving ms. A bad
// entry is reported and skipped; the others pass.
func ParseOSDPerf(source string, b []byte) (map[uint32]*OSD, []error) {
	var doc struct {
		OSDStats *struct {
			Infos []json.RawMessage `json:"osd_perf_infos"`
		} `json:"osdstats"`
		Infos []json.RawMessage `json:"osd_perf_infos"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, []error{jsonError(source, b, err)}
	}
	infos := doc.Infos
	if doc.OSDStats != nil {
		infos = doc.OSDStats.Infos
	}
	if infos == nil {
		return nil, []error{fmt.Errorf("%s: no osd_perf_infos in the document", source)}
	}
	out := map[uint32]*OSD{}
	var errs []error
	for i, raw := range infos {
		var e struct {
			ID    *uint32 `json:"id"`
			Stats struct {
				CommitMs *float64 `json:"commit_latency_ms"`
				ApplyMs  *float64 `json:"apply_latency_ms"`
				CommitNs *float64 `json:"commit_latency_ns"`
				ApplyNs  *float64 `json:"apply_latency_ns"`
			} `json:"perf_stats"`
		}
		if err := json.Unmarshal(raw, &e); err != nil || e.ID == nil || e.Stats.CommitMs == nil && e.Stats.CommitNs == nil {
			if err == nil {
				err = errors.New("want id and perf_stats.commit_latency_ms")
			}
			errs = append(errs, fmt.Errorf("%s: osd_perf_infos[%d]: %w", source, i, err))
			continue
		}
		o := &OSD{ID: *e.ID}
		o.CommitLatencyMs = ms(e.Stats.CommitNs, e.Stats.CommitMs)
		o.ApplyLatencyMs = ms(e.Stats.ApplyNs, e.Stats.ApplyMs)
		out[o.ID] = o
	}
	return out, errs
}

// worse returns the more severe of two health names, ignoring anything else.
func worse(a, b string) string {
	rank := map[string]int{"HEALTH_OK": 1, "HEALTH_WARN": 2, "HEALTH_ERR": 3}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

func ms(ns, msv *float64) float64 {
	if ns != nil {
		return *ns / 1e6
	}
	if msv != nil {
		return *msv
	}
	return 0
}

// ParseOSDTree parses `ceph osd tree -f json` into OSDs with host, device class, up and in
// (reweight > 0). Entries that are not OSDs give hosts; a malformed node is skipped.
// A document without `nodes` (a wrapped or foreign one) is an error, not zero OSDs.
func ParseOSDTree(source string, b []byte) (map[uint32]*OSD, []error) {
	var doc struct {
		Nodes *[]json.RawMessage `json:"nodes"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, []error{jsonError(source, b, err)}
	}
	if doc.Nodes == nil {
		return nil, []error{fmt.Errorf("%s: no nodes in the document: want the output of `ceph osd tree -f json`", source)}
	}
	type node struct {
		ID          *int    `json:"id"`
		Name        string  `json:"name"`
		Type        string  `json:"type"`
		DeviceClass string  `json:"device_class"`
		Status      string  `json:"status"`
		Reweight    float64 `json:"reweight"`
		Children    []int   `json:"children"`
	}
	var errs []error
	var nodes []node
	for i, raw := range *doc.Nodes {
		var n node
		if err := json.Unmarshal(raw, &n); err != nil || n.ID == nil {
			if err == nil {
				err = errors.New("no id")
			}
			errs = append(errs, fmt.Errorf("%s: nodes[%d]: %w", source, i, err))
			continue
		}
		nodes = append(nodes, n)
	}
	hostOf := map[int]string{}
	for _, n := range nodes {
		if n.Type == "host" {
			for _, c := range n.Children {
				hostOf[c] = n.Name
			}
		}
	}
	out := map[uint32]*OSD{}
	for _, n := range nodes {
		if n.Type != "osd" || *n.ID < 0 {
			continue
		}
		out[uint32(*n.ID)] = &OSD{ID: uint32(*n.ID), Host: hostOf[*n.ID], DeviceClass: n.DeviceClass, Up: n.Status == "up", In: n.Reweight > 0}
	}
	return out, errs
}

// OSDMap is what `ceph osd dump -f json` says beyond the tree: each OSD's up, in and
// weight (the override reweight, 0 when out) and the cluster-wide flags.
type OSDMap struct {
	Epoch uint32
	Flags []string // e.g. noout, noscrub, sortbitwise
	OSDs  map[uint32]OSDMapEntry
}

// OSDMapEntry is one OSD of an OSDMap.
type OSDMapEntry struct {
	Up, In bool
	Weight float64
	State  []string // e.g. exists, up, nearfull, full, backfillfull
}

// ParseOSDDump parses `ceph osd dump -f json`. A document without `osds` is an error;
// a malformed OSD entry is reported and skipped.
func ParseOSDDump(source string, b []byte) (*OSDMap, []error) {
	var doc struct {
		Epoch uint32             `json:"epoch"`
		Flags string             `json:"flags"`
		OSDs  *[]json.RawMessage `json:"osds"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, []error{jsonError(source, b, err)}
	}
	if doc.OSDs == nil {
		return nil, []error{fmt.Errorf("%s: no osds in the document: want the output of `ceph osd dump -f json`", source)}
	}
	m := &OSDMap{Epoch: doc.Epoch, OSDs: make(map[uint32]OSDMapEntry, len(*doc.OSDs))}
	for f := range strings.SplitSeq(doc.Flags, ",") {
		if f = strings.TrimSpace(f); f != "" {
			m.Flags = append(m.Flags, f)
		}
	}
	var errs []error
	for i, raw := range *doc.OSDs {
		var e struct {
			OSD    *int     `json:"osd"`
			Up     *int     `json:"up"`
			In     *int     `json:"in"`
			Weight *float64 `json:"weight"`
			State  []string `json:"state"`
		}
		if err := json.Unmarshal(raw, &e); err != nil || e.OSD == nil || *e.OSD < 0 || e.Up == nil || e.In == nil {
			if err == nil {
				err = errors.New("want osd (>= 0), up and in")
			}
			errs = append(errs, fmt.Errorf("%s: osds[%d]: %w", source, i, err))
			continue
		}
		o := OSDMapEntry{Up: *e.Up == 1, In: *e.In == 1, State: e.State}
		switch {
		case e.Weight != nil:
			o.Weight = *e.Weight
		case o.In: // some dumps carry no weight: in means full weight
			o.Weight = 1
		}
		m.OSDs[uint32(*e.OSD)] = o
	}
	return m, errs
}
