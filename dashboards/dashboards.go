// Package dashboards holds Meridian's Grafana dashboards (*.json) and the Grafana
// provisioning files for them (provisioning/): ClickHouse panels through the
// grafana-clickhouse-datasource plugin, PromQL panels over the series Meridian exports
// and its SLO rules record. chhttp is the ClickHouse HTTP endpoint that lets Grafana read
// the embedded engine.
package dashboards

import "embed"

// FS holds the dashboards and provisioning files, for tools that ship or install them.
//
//go:embed *.json provisioning
var FS embed.FS
