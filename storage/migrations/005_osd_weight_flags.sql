-- What `ceph osd dump` adds to the exposition and the other CLI reads: each OSD's
-- override reweight (0 = out, 1 = full weight) and the cluster's OSD map flags (noout,
-- norebalance, pause, ...). 0 and empty where the source does not give them (the mgr
-- exposition has neither).
ALTER TABLE {{table "osd_stats"}} {{.OnCluster}} ADD COLUMN IF NOT EXISTS weight Float64 CODEC(Gorilla, ZSTD(1));
ALTER TABLE {{table "ceph_health"}} {{.OnCluster}} ADD COLUMN IF NOT EXISTS flags Array(LowCardinality(String));
{{if .Cluster}}
ALTER TABLE {{.DB}}.osd_stats {{.OnCluster}} ADD COLUMN IF NOT EXISTS weight Float64;
ALTER TABLE {{.DB}}.ceph_health {{.OnCluster}} ADD COLUMN IF NOT EXISTS flags Array(LowCardinality(String));
{{end}}
