package storage_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/internal/testtime"
	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/storage"
	"github.com/meridianhq/meridian/storage/storagetest"
)

func TestMigrateTwice(t *testing.T) {
	s := storagetest.New(t) // migrated once
	ctx := context.Background()
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	out, err := s.Query(ctx, "SELECT version, count() FROM schema_migrations GROUP BY version ORDER BY version", "TabSeparated")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(out), "1\t1\n2\t1\n3\t1\n4\t1\n5\t1\n6\t1\n7\t1\n8\t1\n9\t1\n10\t1\n"; got != want {
		t.Fatalf("schema_migrations: got %q, want %q", got, want)
	}
	out, err = s.Query(ctx, "SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name", "TabSeparated")
	if err != nil {
		t.Fatal(err)
	}
	want := "alert_states ceph_health ceph_pools flow_edges flows flows_1m flows_1m_mv haproxy_stats osd_stats probes probes_1m probes_1m_mv schema_migrations steering_decisions steering_inputs tunnel_stats vrrp_states vrrp_transitions"
	if got := strings.Join(strings.Fields(string(out)), " "); got != want {
		t.Fatalf("tables:\n got %s\nwant %s", got, want)
	}
}

// TestMigrateEdgeClusters: migration 009 (dst_cluster), and 010 (src_cluster), on a
// database an older Meridian filled keep its edges, read as inside their own cluster (the
// new column empty), in flow_edges and flows_1m; edges written after roll up by that cluster.
func TestMigrateEdgeClusters(t *testing.T) {
	for _, c := range []struct {
		from   int
		column string
		set    func(e *pipeline.FlowEdge)
	}{
		{8, "dst_cluster", func(e *pipeline.FlowEdge) { e.DestCluster = "nbg" }},
		{9, "src_cluster", func(e *pipeline.FlowEdge) { e.SourceCluster = "nbg" }},
	} {
		t.Run(c.column, func(t *testing.T) {
			cfg := storagetest.Config(t)
			s, err := storage.New(cfg, storage.Deps{Registerer: prometheus.NewRegistry()})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			t.Cleanup(func() { s.Exec(ctx, "DROP DATABASE IF EXISTS "+cfg.Database); s.Close() })
			if err := s.MigrateTo(ctx, c.from); err != nil {
				t.Fatal(err)
			}
			at := testtime.Day.Add(10 * time.Hour)
			old := fmt.Sprintf(`INSERT INTO %s (time, cluster, src_namespace, src_workload, dst_namespace, dst_workload, protocol, port, flows, requests, errors)
		VALUES ('%s', 'ny', 'shop', 'web', 'shop', 'api', 'TCP', 80, 5, 2, 1)`, s.Table(pipeline.KindFlowEdge), at.Format("2006-01-02 15:04:05"))
			if err := s.Exec(ctx, old); err != nil {
				t.Fatal(err)
			}
			if err := s.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			e := &pipeline.FlowEdge{M: pipeline.Meta{Time: at.Add(time.Second), Cluster: "ny"}, Interval: time.Second, SourceNamespace: "shop", SourceWorkload: "web",
				DestNamespace: "shop", DestWorkload: "api", Protocol: "TCP", Port: 80, Flows: 3, Requests: 3, Errors: 3}
			c.set(e)
			native, err := storage.NewEncoder().Encode(pipeline.KindFlowEdge, []pipeline.Record{e})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Insert(ctx, pipeline.Block{Kind: pipeline.KindFlowEdge, Rows: 1, Token: "after-migration", Native: native}); err != nil {
				t.Fatal(err)
			}
			for _, table := range []string{"flow_edges", "flows_1m"} {
				out, err := s.Query(ctx, fmt.Sprintf("SELECT concat('[', %[1]s, ']'), sum(flows), sum(errors) FROM %[2]s GROUP BY %[1]s ORDER BY %[1]s", c.column, table), "TabSeparated")
				if want := "[]\t5\t1\n[nbg]\t3\t3\n"; err != nil || string(out) != want {
					t.Errorf("%s by %s: %q, %v; want %q", table, c.column, out, err, want)
				}
			}
		})
	}
}
