-- A flow edge's source cluster: the client's cluster of a call across the mesh as the
-- server's relay sees it; '' is the edge's own cluster (every row written before, every
-- flow inside one cluster, and the client's relay's view, which names dst_cluster). As
-- in migration 009: flows_1m aggregates by it, so it is appended to the sorting key, and
-- the view that fills it is made again to group by it (edges another replica inserts
-- between the DROP and the CREATE, in a rolling upgrade, are not rolled up).
ALTER TABLE {{table "flow_edges"}} {{.OnCluster}} ADD COLUMN IF NOT EXISTS src_cluster LowCardinality(String) AFTER src_workload;
ALTER TABLE {{table "flows_1m"}} {{.OnCluster}}
    ADD COLUMN IF NOT EXISTS src_cluster LowCardinality(String) AFTER src_workload,
    MODIFY ORDER BY (cluster, src_namespace, src_workload, dst_namespace, dst_workload, protocol, port, minute, dst_cluster, src_cluster);
DROP VIEW IF EXISTS {{table "flows_1m_mv"}} {{.OnCluster}};
CREATE MATERIALIZED VIEW IF NOT EXISTS {{table "flows_1m_mv"}} {{.OnCluster}}
TO {{table "flows_1m"}} AS
SELECT
    toStartOfMinute(time) AS minute,
    cluster, src_namespace, src_workload, src_cluster, dst_namespace, dst_workload, dst_cluster, protocol, port,
    sum(flows) AS flows,
    sum(drops) AS drops,
    sum(requests) AS requests,
    sum(errors) AS errors,
    quantileTDigestWeightedIfState(0.5)(latency_p50, e.requests, toUInt8(latency_p50 > 0)) AS latency_p50,
    quantileTDigestWeightedIfState(0.9)(latency_p90, e.requests, toUInt8(latency_p90 > 0)) AS latency_p90,
    quantileTDigestWeightedIfState(0.99)(latency_p99, e.requests, toUInt8(latency_p99 > 0)) AS latency_p99
FROM {{table "flow_edges"}} AS e -- e.requests: the column, not the sum aliased requests
GROUP BY minute, cluster, src_namespace, src_workload, src_cluster, dst_namespace, dst_workload, dst_cluster, protocol, port;
{{if .Cluster}}
ALTER TABLE {{.DB}}.flow_edges {{.OnCluster}} ADD COLUMN IF NOT EXISTS src_cluster LowCardinality(String) AFTER src_workload;
ALTER TABLE {{.DB}}.flows_1m {{.OnCluster}} ADD COLUMN IF NOT EXISTS src_cluster LowCardinality(String) AFTER src_workload;
{{end}}
