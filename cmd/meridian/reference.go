package main

import (
	"encoding"
	"flag"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"github.com/meridianhq/meridian/alerts/ruler"
	"github.com/meridianhq/meridian/steering"
)

// setting is one field of the configuration tree, as `meridian config reference` lists it.
type setting struct {
	Path    string // YAML path; "[]" marks the elements of a list
	Flag    string // "" when the field is YAML only
	Type    string
	Default string
	Help    string
	Reload  bool   // takes effect on a reload, without a restart
	Secret  string // for a secret's file: the environment variable read when it is unset
}

// settings walks the configuration tree from the flag defaults: every field with its YAML
// path and, where one is registered on that very field, its flag.
func settings() []setting {
	var cfg Config
	fs := flag.NewFlagSet("meridian", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	byAddr := map[uintptr]*flag.Flag{}
	fs.VisitAll(func(f *flag.Flag) {
		if p := valueAddr(f.Value); p != 0 {
			byAddr[p] = f
		}
	})
	host, _ := os.Hostname()
	var out []setting
	var walk func(v reflect.Value, path string, tag reflect.StructTag)
	walk = func(v reflect.Value, path string, tag reflect.StructTag) {
		t := v.Type()
		leaf := t.Kind() != reflect.Struct || scalar(t)
		if t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct && !scalar(t.Elem()) && !reflect.PointerTo(t).Implements(flagValue) {
			walk(reflect.New(t.Elem()).Elem(), path+"[]", "")
			return
		}
		if !leaf {
			for i := range t.NumField() {
				f := t.Field(i)
				name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
				if !f.IsExported() || name == "-" {
					continue
				}
				if strings.Contains(opts, "inline") {
					walk(v.Field(i), path, "")
					continue
				}
				if name == "" {
					name = strings.ToLower(f.Name)
				}
				p := name
				if path != "" {
					p = path + "." + name
				}
				walk(v.Field(i), p, f.Tag)
			}
			return
		}
		s := setting{Path: path, Type: typeName(t), Reload: reloadable(path), Secret: tag.Get("secret")}
		if v.CanAddr() {
			if f := byAddr[v.Addr().Pointer()]; f != nil {
				s.Flag, s.Default, s.Help = "-"+f.Name, f.DefValue, f.Usage
			}
		}
		if f := fs.Lookup(strings.ReplaceAll(path, "_", "-")); s.Flag == "" && f != nil {
			s.Flag, s.Default, s.Help = "-"+f.Name, f.DefValue, f.Usage // a flag.Func: no field address
		}
		if s.Help == "" {
			s.Help = yamlOnlyHelp[path]
		}
		if host != "" && s.Default == host {
			s.Default = "(the host name)" // the same reference on every machine
		}
		if s.Flag == "" && !v.IsZero() {
			s.Default = fmt.Sprint(v.Interface())
		}
		out = append(out, s)
	}
	walk(reflect.ValueOf(&cfg).Elem(), "", "")
	return out
}

// yamlOnlyHelp describes the settings that have no flag (lists of structures, mostly);
// the drift test requires a description for every setting.
var yamlOnlyHelp = map[string]string{
	"hubble.relays[].name":                                    "Name of the relay in metrics and resume state; default: its cluster.",
	"hubble.relays[].cluster":                                 "Inventory cluster whose flows the relay serves. The flag form is -hubble.relays cluster=host:port,...",
	"hubble.relays[].address":                                 "host:port of the Hubble Relay.",
	"hubble.relays[].tls_enabled":                             "Connect with TLS; unset: -hubble.tls-enabled.",
	"hubble.relays[].tls_cert_path":                           "Client certificate for mTLS; unset: the top-level one.",
	"hubble.relays[].tls_key_path":                            "Client key for mTLS; unset: the top-level one.",
	"hubble.relays[].tls_ca_path":                             "CA certificates to verify the relay; unset: the top-level one.",
	"hubble.relays[].tls_server_name":                         "Expected name on the relay's certificate.",
	"hubble.relays[].tls_insecure_skip_verify":                "Skip verifying the relay's certificate.",
	"hubble.relays[].tls_cipher_suites":                       "Cipher suites, comma separated.",
	"hubble.relays[].tls_min_version":                         "Minimum TLS version, e.g. VersionTLS12.",
	"hubble.relays[].whitelist":                               "Hubble flow filters (observer.FlowFilter in protobuf JSON names, e.g. source_pod: [\"ns/\"]) the relay applies: only matching flows.",
	"hubble.relays[].blacklist":                               "Hubble flow filters the relay applies: matching flows are left out.",
	"hubble.label_keys":                                       "Pod labels copied onto flow records (e.g. app, k8s-app).",
	"steering.overrides[].action":                             "drain (take the POP out) or pin (send the region or service only to it).",
	"steering.overrides[].pop":                                "Inventory POP the override applies to.",
	"steering.overrides[].service":                            "Service name; empty: every service of the POP.",
	"steering.overrides[].region":                             "Client region; empty: every region.",
	"steering.overrides[].reason":                             "Why, recorded with every decision it causes.",
	"steering.dns.zone.ns":                                    "Name servers of the zone (NS records); default ns1.<zone>.",
	"steering.dns.zone.ns_addrs":                              "Addresses of the name servers (glue A/AAAA records).",
	"inventory.sites[].name":                                  "Unique name of the site; every other section refers to sites by it.",
	"inventory.sites[].region":                                "Region of the world, e.g. europe, asia, north-america.",
	"inventory.sites[].role":                                  "brain (control plane), muscle (compute), vault (storage) or edge (POP).",
	"inventory.sites[].city":                                  "City shown on the map.",
	"inventory.sites[].lat":                                   "Latitude, -90 to 90; places the site on the map and gives distances.",
	"inventory.sites[].lon":                                   "Longitude, -180 to 180.",
	"inventory.clusters[].name":                               "Unique name of the Kubernetes cluster.",
	"inventory.clusters[].site":                               "Site the cluster runs at (one of inventory.sites).",
	"inventory.clusters[].region":                             "Region of a cluster spread over several zones (then site may be empty).",
	"inventory.clusters[].zones":                              "Zones (failure domains) the cluster runs in.",
	"inventory.clusters[].provider":                           "Cloud or hosting provider of the cluster.",
	"inventory.nodes[].pod_cidrs":                             "Pod address ranges of the node; maps pod IPs to the node.",
	"inventory_sources.kubernetes[].cluster":                  "Inventory cluster of the nodes this API lists (named kubernetes/<cluster> in metrics).",
	"inventory_sources.kubernetes[].kubeconfig":               "Kubeconfig file of the cluster; empty: the in-cluster service account.",
	"inventory_sources.kubernetes[].site":                     "Site of nodes carrying none of site_labels.",
	"inventory_sources.kubernetes[].site_labels":              "Node labels naming the site, first present wins; default topology.kubernetes.io/zone, topology.rook.io/datacenter, failure-domain.beta.kubernetes.io/zone.",
	"inventory_sources.kubernetes[].region_labels":            "Node labels naming the site's region, first present wins; default topology.kubernetes.io/region, topology.rook.io/region, failure-domain.beta.kubernetes.io/region.",
	"inventory_sources.kubernetes[].wireguard_key_annotation": "Node annotation holding its WireGuard public key; default kilo.squat.ai/key (Kilo's).",
	"inventory_sources.kubernetes[].location_annotation":      "Node annotation \"lat,lon\" placing a site the file does not place; default meridian.dev/location.",
	"inventory_sources.kubernetes[].workloads":                "Watch namespaces, Deployments and StatefulSets so flow endpoints are named after their owners; default true.",
	"inventory.nodes[].name":                                  "Unique name of the machine.",
	"inventory.nodes[].site":                                  "Site of the machine.",
	"inventory.nodes[].cluster":                               "Cluster the machine belongs to (one of inventory.clusters, at the same site); empty: none.",
	"inventory.nodes[].wireguard_key":                         "The node's WireGuard public key (base64 of 32 bytes, as wg pubkey prints); maps tunnels to nodes.",
	"inventory.nodes[].ceph_host":                             "Ceph's name for this host when it runs OSDs; default: the node name.",
	"inventory.pops[].name":                                   "Unique name of the point of presence.",
	"inventory.pops[].site":                                   "Site of the POP.",
	"inventory.pops[].vips":                                   "Virtual IPs GeoDNS answers with (A and AAAA); at least one.",
	"inventory.pops[].health_url":                             "http:// or https:// URL the probes fetch.",
	"inventory.pops[].tcp_addr":                               "host:port the TCP connect probes dial.",
	"inventory.pops[].base_weight":                            "Weight of the POP when healthy; 0: 1.",
	"inventory.services[].name":                               "DNS name of the service (FQDN, e.g. api.example.net.).",
	"inventory.services[].pops":                               "POPs serving it (names from inventory.pops); at least one.",
	"inventory.client_regions[].name":                         "Unique name of the client region.",
	"inventory.client_regions[].countries":                    "ISO 3166-1 alpha-2 codes of its clients' countries (e.g. FR).",
	"inventory.client_regions[].continents":                   "Continent codes of its clients: AF, AN, AS, EU, NA, OC, SA.",
	"inventory.client_regions[].cidrs":                        "Client prefixes that belong to the region whatever GeoIP says.",
	"inventory.client_regions[].sample_prefix":                "A client prefix of the region, used by the probes' EDNS Client Subnet queries.",
	"inventory.client_regions[].allowed_pops":                 "Residency rule: the only POPs that may serve the region; empty: any.",
	"inventory.client_regions[].preferred_pops":               "POPs tried first (within allowed_pops).",
	"inventory.client_regions[].vantage":                      "Site whose probes stand for the region's clients when ranking POPs by round trip.",
	"inventory.pops[].capacity.bandwidth":                     "Bytes per second out the POP's front door can send; HAProxy utilisation is measured against it. 0: unknown.",
	"haproxy.targets[].pop":                                   "Inventory POP whose front door this HAProxy is.",
	"haproxy.targets[].node":                                  "Name of the HAProxy node (records' node).",
	"haproxy.targets[].url":                                   "URL of HAProxy's Prometheus exporter (http-request use-service prometheus-exporter), e.g. http://10.1.0.11:8404/metrics.",
	"haproxy.targets[].socket":                                "Path of HAProxy's stats socket, read with show stat when there is no exporter (set url or socket).",
	"haproxy.targets[].frontends":                             "Frontends that carry the POP's traffic, counted in its utilisation; empty: every frontend.",
	"keepalived.nodes[].pop":                                  "Inventory POP whose VIP this keepalived holds or backs up.",
	"keepalived.nodes[].node":                                 "Name of the keepalived node (records' node).",
	"keepalived.nodes[].fifo":                                 "keepalived's global_defs notify_fifo path on this machine; made if missing.",
	"inventory.pops[].capacity.sessions_per_second":           "New sessions per second the POP's front door (HAProxy) sustains; steering sheds and spreads load against it and HAProxy utilisation is measured against it. Unset: unknown, never shed.",
}

// valueAddr is the address of the field a flag writes: the flag package's own values
// are pointers to the field; a wrapper struct holds that pointer.
func valueAddr(v flag.Value) uintptr {
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer {
		return rv.Pointer()
	}
	if rv.Kind() == reflect.Struct && rv.NumField() == 1 && rv.Field(0).Kind() == reflect.Pointer {
		return rv.Field(0).Pointer()
	}
	return 0
}

var (
	flagValue       = reflect.TypeFor[flag.Value]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// scalar reports whether a struct type is written as one YAML scalar (an address, a
// secret, a flag value).
func scalar(t reflect.Type) bool {
	pt := reflect.PointerTo(t)
	return pt.Implements(flagValue) || pt.Implements(textUnmarshaler)
}

// typeName says what a value is, in the words of the file rather than of Go.
func typeName(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[time.Duration](), reflect.TypeFor[model.Duration]():
		return "duration"
	}
	switch t.String() {
	case "netip.Addr":
		return "IP address"
	case "netip.Prefix":
		return "CIDR"
	}
	switch t.Kind() {
	case reflect.Pointer:
		return typeName(t.Elem())
	case reflect.Slice:
		if reflect.PointerTo(t).Implements(flagValue) {
			return "list (YAML list or comma-separated)"
		}
		return "list of " + typeName(t.Elem())
	case reflect.Map:
		if reflect.PointerTo(t).Implements(flagValue) {
			return "map (YAML map or k=v,...)"
		}
		return "map of " + typeName(t.Elem())
	case reflect.Float32, reflect.Float64:
		return "float"
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint32, reflect.Uint64, reflect.Uint:
		return "int"
	case reflect.Struct:
		return "string"
	}
	return t.Kind().String()
}

// reloadable reports whether a change of path applies on a reload (reload.go).
func reloadable(path string) bool {
	live := []string{"log_level", "inventory"} // the live inventory: every module follows it
	for _, f := range steering.Reloadable {
		live = append(live, "steering."+f)
	}
	for _, f := range ruler.Reloadable {
		live = append(live, "ruler."+f)
	}
	return slices.ContainsFunc(live, func(l string) bool {
		return path == l || strings.HasPrefix(path, l+".") || strings.HasPrefix(path, l+"[]")
	})
}

// reference is the Markdown of `meridian config reference`, kept in docs/config-reference.md.
func reference() string {
	var b strings.Builder
	b.WriteString(`# Configuration reference

Generated by ` + "`meridian config reference`" + ` from the configuration tree itself; a test fails when
this file and the code disagree (` + "`go run ./cmd/meridian config reference > docs/config-reference.md`" + `).

One YAML file (` + "`-config.file`" + `) holds every setting; a flag given on the command line
overrides the file. A list or map setting takes the same forms in both: a YAML list
(map), or the flag's comma-separated string. ` + "`meridian config check FILE...`" + ` reports every
problem of a file as FILE:LINE: field PATH. **reload**: yes when a change applies on
SIGHUP, ` + "`POST /-/reload`" + ` or the periodic check, without a restart. **Secrets** are never a
setting: a ` + "`*_file`" + ` field names the file holding one; when it is empty the **secret env**
variable is read. ` + "`[]`" + ` marks the fields of each element of a list.

`)
	section := ""
	for _, s := range settings() {
		top, _, _ := strings.Cut(s.Path, ".")
		top, _, _ = strings.Cut(top, "[")
		if !strings.Contains(s.Path, ".") && !strings.Contains(s.Path, "[") {
			top = "top level"
		}
		if top != section {
			section = top
			fmt.Fprintf(&b, "\n## %s\n\n| YAML path | flag | type | default | reload | secret env | description |\n|---|---|---|---|---|---|---|\n", section)
		}
		env := ""
		if s.Secret != "" {
			env = "$" + s.Secret
		}
		reload := ""
		if s.Reload {
			reload = "yes"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s | %s | %s |\n", s.Path, code(s.Flag), s.Type, code(s.Default), reload, code(env), cell(s.Help))
	}
	b.WriteString("\nFlags only (not in the file): `-config.file`, `-config.reload-interval`.\n")
	return b.String()
}

func code(s string) string {
	if s == "" {
		return ""
	}
	return "`" + strings.ReplaceAll(s, "|", `\|`) + "`"
}

func cell(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ")
}
