package storage_test

import (
	"context"
	"strings"
	"testing"

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
	if got, want := string(out), "1\t1\n2\t1\n3\t1\n4\t1\n5\t1\n6\t1\n7\t1\n8\t1\n9\t1\n"; got != want {
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
