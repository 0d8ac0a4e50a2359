-- Rollups for the dashboards and the map: per-minute aggregate states, merged at query
-- time with the -Merge combinators (see storage/README.md).

-- Flows per workload edge per minute, rolled up from the collector's per-second edges
-- (flow_edges), not from raw flows: an edge row stands for many flows, so the view costs
-- next to nothing per stored flow (over raw flows it doubled the engine's insert CPU), and
-- the counts include flows that flow_sample_rate kept out of `flows`. Latency: per
-- quantile, a digest of the per-second edge quantiles weighted by their requests.
CREATE TABLE IF NOT EXISTS {{table "flows_1m"}} {{.OnCluster}}
(
    minute        DateTime('UTC') CODEC(DoubleDelta, ZSTD(1)),
    cluster       LowCardinality(String),
    src_namespace LowCardinality(String),
    src_workload  LowCardinality(String),
    dst_namespace LowCardinality(String),
    dst_workload  LowCardinality(String),
    protocol      LowCardinality(String),
    port          UInt16,
    flows         SimpleAggregateFunction(sum, UInt64),
    drops         SimpleAggregateFunction(sum, UInt64),
    requests      SimpleAggregateFunction(sum, UInt64),
    errors        SimpleAggregateFunction(sum, UInt64),
    latency_p50   AggregateFunction(quantileTDigestWeightedIf(0.5), Int64, UInt64, UInt8),
    latency_p90   AggregateFunction(quantileTDigestWeightedIf(0.9), Int64, UInt64, UInt8),
    latency_p99   AggregateFunction(quantileTDigestWeightedIf(0.99), Int64, UInt64, UInt8)
)
ENGINE = {{engine "AggregatingMergeTree" "flows_1m"}}
PARTITION BY toDate(minute)
ORDER BY (cluster, src_namespace, src_workload, dst_namespace, dst_workload, protocol, port, minute)
{{ttlOn "flows_1m" "minute"}}
{{settings}};

CREATE MATERIALIZED VIEW IF NOT EXISTS {{table "flows_1m_mv"}} {{.OnCluster}}
TO {{table "flows_1m"}} AS
SELECT
    toStartOfMinute(time) AS minute,
    cluster, src_namespace, src_workload, dst_namespace, dst_workload, protocol, port,
    sum(flows) AS flows,
    sum(drops) AS drops,
    sum(requests) AS requests,
    sum(errors) AS errors,
    quantileTDigestWeightedIfState(0.5)(latency_p50, e.requests, toUInt8(latency_p50 > 0)) AS latency_p50,
    quantileTDigestWeightedIfState(0.9)(latency_p90, e.requests, toUInt8(latency_p90 > 0)) AS latency_p90,
    quantileTDigestWeightedIfState(0.99)(latency_p99, e.requests, toUInt8(latency_p99 > 0)) AS latency_p99
FROM {{table "flow_edges"}} AS e -- e.requests: the column, not the sum aliased requests
GROUP BY minute, cluster, src_namespace, src_workload, dst_namespace, dst_workload, protocol, port;

{{distributed "flows_1m"}}

-- Probe RTT per vantage x POP per minute.
CREATE TABLE IF NOT EXISTS {{table "probes_1m"}} {{.OnCluster}}
(
    minute   DateTime('UTC') CODEC(DoubleDelta, ZSTD(1)),
    service  LowCardinality(String),
    pop      LowCardinality(String),
    vantage  LowCardinality(String),
    method   LowCardinality(String),
    probes   AggregateFunction(count),
    failures AggregateFunction(countIf, UInt8),
    rtt_avg       AggregateFunction(avgIf, Int64, UInt8),
    rtt_quantiles AggregateFunction(quantilesIf(0.5, 0.9, 0.99), Int64, UInt8)
)
ENGINE = {{engine "AggregatingMergeTree" "probes_1m"}}
PARTITION BY toDate(minute)
ORDER BY (service, pop, vantage, method, minute)
{{ttlOn "probes_1m" "minute"}}
{{settings}};

CREATE MATERIALIZED VIEW IF NOT EXISTS {{table "probes_1m_mv"}} {{.OnCluster}}
TO {{table "probes_1m"}} AS
SELECT
    toStartOfMinute(time) AS minute,
    service, pop, vantage, method,
    countState() AS probes,
    countIfState(toUInt8(NOT success)) AS failures,
    avgIfState(rtt, toUInt8(success)) AS rtt_avg,
    quantilesIfState(0.5, 0.9, 0.99)(rtt, toUInt8(success)) AS rtt_quantiles
FROM {{table "probes"}}
GROUP BY minute, service, pop, vantage, method;

{{distributed "probes_1m"}}
