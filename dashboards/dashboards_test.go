package dashboards

import (
	"encoding/json"
	"io/fs"
	"path"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestDashboards(t *testing.T) {
	uids := map[string]string{}
	for _, d := range loadDashboards(t) {
		if d.UID == "" || len(d.UID) > 40 {
			t.Errorf("%s: uid %q must be set and at most 40 characters", d.file, d.UID)
		}
		if other, dup := uids[d.UID]; dup {
			t.Errorf("%s: uid %q already used by %s", d.file, d.UID, other)
		}
		uids[d.UID] = d.file
		if d.Title == "" || d.SchemaVersion < 39 {
			t.Errorf("%s: title %q, schemaVersion %d (want a title and the current schema, 39+)", d.file, d.Title, d.SchemaVersion)
		}
		ids := map[int]bool{}
		for _, p := range d.allPanels() {
			if ids[p.ID] {
				t.Errorf("%s: panel id %d used twice", d.file, p.ID)
			}
			ids[p.ID] = true
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no queries", d.file, p.Title)
			}
			if needsUnit[p.Type] && p.FieldConfig.Defaults.Unit == "" && !overrides(p, "unit") {
				t.Errorf("%s: panel %q (%s) sets no unit", d.file, p.Title, p.Type)
			}
			if needsThresholds[p.Type] && len(p.FieldConfig.Defaults.Thresholds) == 0 && !overrides(p, "thresholds") {
				t.Errorf("%s: panel %q (%s) sets no thresholds", d.file, p.Title, p.Type)
			}
			for _, tg := range p.Targets {
				var format int
				if tg.RawSQL != "" && (tg.EditorType != "sql" || json.Unmarshal(tg.Format, &format) != nil || (tg.QueryType != "table" && tg.QueryType != "timeseries")) {
					t.Errorf("%s: panel %q query %s: not the ClickHouse plugin's SQL query model (editorType sql, queryType, format)", d.file, p.Title, tg.RefID)
				}
			}
		}
		for _, name := range []string{"clickhouse", "prometheus"} {
			if v, ok := d.variable(name); ok && v.Type != "datasource" {
				t.Errorf("%s: variable %s must be a datasource variable", d.file, name)
			}
		}
	}
	if len(uids) < 6 {
		t.Errorf("%d dashboards, want at least 6 (overview, wireguard, ceph, hubble, slos, steering)", len(uids))
	}
}

var (
	needsUnit       = map[string]bool{"timeseries": true, "stat": true, "bargauge": true, "gauge": true, "piechart": true, "barchart": true}
	needsThresholds = map[string]bool{"stat": true, "bargauge": true, "gauge": true, "state-timeline": true}
)

func overrides(p panel, prop string) bool {
	for _, o := range p.FieldConfig.Overrides {
		for _, pr := range o.Properties {
			if pr.ID == prop {
				return true
			}
		}
	}
	return false
}

var dashboardURL = regexp.MustCompile(`/d/([A-Za-z0-9_-]+)`)

// Links between dashboards point at dashboards that exist; every dashboard links to the
// others (by the shared tag) and to the live map.
func TestLinks(t *testing.T) {
	ds := loadDashboards(t)
	uids := map[string]bool{}
	for _, d := range ds {
		uids[d.UID] = true
	}
	for _, d := range ds {
		var toMap, toOthers bool
		var urls []string
		for _, l := range d.Links {
			urls = append(urls, l.URL)
			toMap = toMap || strings.HasSuffix(l.URL, "/map/")
			toOthers = toOthers || (l.Type == "dashboards" && len(l.Tags) > 0)
		}
		for _, p := range d.allPanels() {
			for _, l := range p.FieldConfig.Defaults.Links {
				urls = append(urls, l.URL)
			}
			for _, o := range p.FieldConfig.Overrides {
				for _, pr := range o.Properties {
					if pr.ID != "links" {
						continue
					}
					var ls []link
					if err := json.Unmarshal(pr.Value, &ls); err != nil {
						t.Errorf("%s: panel %q: links override: %v", d.file, p.Title, err)
					}
					for _, l := range ls {
						urls = append(urls, l.URL)
					}
				}
			}
		}
		for _, u := range urls {
			for _, m := range dashboardURL.FindAllStringSubmatch(u, -1) {
				if !uids[m[1]] {
					t.Errorf("%s: link %q points at unknown dashboard uid %q", d.file, u, m[1])
				}
			}
			if strings.Contains(u, "${meridian}") {
				if _, ok := d.variable("meridian"); !ok {
					t.Errorf("%s: link %q uses ${meridian} but the dashboard has no such variable", d.file, u)
				}
			}
		}
		if !toMap || !toOthers {
			t.Errorf("%s: links to the live map: %v, to the other dashboards: %v; want both", d.file, toMap, toOthers)
		}
	}
}

type provisionedDS struct {
	Name     string         `yaml:"name"`
	UID      string         `yaml:"uid"`
	Type     string         `yaml:"type"`
	URL      string         `yaml:"url"`
	JSONData map[string]any `yaml:"jsonData"`
}

// provisioning reads each datasource provisioning file: a setup (embedded, server).
func provisioning(t *testing.T) map[string][]provisionedDS {
	t.Helper()
	files, _ := fs.Glob(FS, "provisioning/datasources/*.yaml")
	out := map[string][]provisionedDS{}
	for _, f := range files {
		b, _ := fs.ReadFile(FS, f)
		var doc struct {
			APIVersion  int             `yaml:"apiVersion"`
			Datasources []provisionedDS `yaml:"datasources"`
		}
		dec := yaml.NewDecoder(strings.NewReader(string(b)))
		dec.KnownFields(false)
		if err := dec.Decode(&doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if doc.APIVersion != 1 || len(doc.Datasources) == 0 {
			t.Fatalf("%s: apiVersion %d with %d datasources", f, doc.APIVersion, len(doc.Datasources))
		}
		out[strings.TrimSuffix(path.Base(f), ".yaml")] = doc.Datasources
	}
	if len(out) < 2 {
		t.Fatalf("datasource provisioning files: %v; want embedded and server", files)
	}
	return out
}

// Every query's data source exists in each provisioning setup: a literal uid must be
// provisioned; a ${var} must be a datasource variable whose plugin type each setup
// provides, and whose default is provisioned in one of them.
func TestDatasourcesProvisioned(t *testing.T) {
	setups := provisioning(t)
	uids := map[string]string{}
	for name, dss := range setups {
		types := map[string]bool{}
		for _, ds := range dss {
			if ds.UID == "" || ds.Type == "" {
				t.Errorf("%s: datasource %q needs uid and type", name, ds.Name)
			}
			uids[ds.UID] = ds.Type
			types[ds.Type] = true
		}
		if !types[clickhouseType] || !types[prometheusType] {
			t.Errorf("%s: provisions %v; want a ClickHouse and a Prometheus data source", name, types)
		}
	}
	emb := setups["embedded"]
	for _, ds := range emb {
		if ds.Type == clickhouseType && (ds.JSONData["protocol"] != "http" || ds.JSONData["path"] != "/clickhouse/") {
			t.Errorf("embedded: %s must reach Meridian's ClickHouse HTTP endpoint (protocol http, path /clickhouse/): %v", ds.UID, ds.JSONData)
		}
		if ds.Type == prometheusType && !strings.HasSuffix(ds.URL, "/prometheus") {
			t.Errorf("embedded: %s must use Meridian's /prometheus API, not %q", ds.UID, ds.URL)
		}
	}

	for _, d := range loadDashboards(t) {
		for _, q := range d.queries() {
			if q.ds.Type != clickhouseType && q.ds.Type != prometheusType {
				t.Errorf("%s: data source type %q is neither ClickHouse nor Prometheus", q.where, q.ds.Type)
				continue
			}
			if (q.ds.Type == clickhouseType) != (q.sql != "") || (q.ds.Type == prometheusType) != (q.expr != "") {
				t.Errorf("%s: a %s query needs its own language (rawSql for ClickHouse, expr for Prometheus)", q.where, q.ds.Type)
			}
			name, isVar := strings.CutPrefix(q.ds.UID, "${")
			if !isVar {
				if uids[q.ds.UID] != q.ds.Type {
					t.Errorf("%s: data source uid %q (%s) is not provisioned", q.where, q.ds.UID, q.ds.Type)
				}
				continue
			}
			v, ok := d.variable(strings.TrimSuffix(name, "}"))
			var plugin, current string
			json.Unmarshal(v.Query, &plugin)
			json.Unmarshal(v.Current.Value, &current)
			switch {
			case !ok || v.Type != "datasource":
				t.Errorf("%s: data source %q is not a datasource variable", q.where, q.ds.UID)
			case plugin != q.ds.Type:
				t.Errorf("%s: variable %s lists %q data sources, the query is %s", q.where, v.Name, plugin, q.ds.Type)
			case uids[current] != q.ds.Type:
				t.Errorf("%s: variable %s defaults to %q, which is not a provisioned %s data source", q.where, v.Name, current, q.ds.Type)
			}
		}
	}
}

// The dashboard provider loads this directory's JSON files.
func TestDashboardProvider(t *testing.T) {
	b, err := fs.ReadFile(FS, "provisioning/dashboards/meridian.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Type    string            `yaml:"type"`
			Options map[string]string `yaml:"options"`
		} `yaml:"providers"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.APIVersion != 1 || len(doc.Providers) != 1 || doc.Providers[0].Type != "file" || doc.Providers[0].Options["path"] == "" {
		t.Fatalf("dashboard provider: %+v", doc)
	}
}

func loadDashboards(t *testing.T) []*dashboard {
	t.Helper()
	ds, err := load()
	if err != nil {
		t.Fatal(err)
	}
	return ds
}
