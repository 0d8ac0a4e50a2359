-- Rollups for the dashboards and the map: per-minute aggregate states, merged at query
-- time with the -Merge combinators (see storage/README.md).

-- Flows per workload edge per minute.
CREATE TABLE IF NOT EXISTS {{table "flows_1m"}} {{.OnCluster}}
(
    minute        DateTime('UTC') CODEC(DoubleDelta, ZSTD(1)),
    cluster       LowCardinality(String),
    src_namespace LowCardinality(String),
    src_workload  LowCardinality(String),
    dst_namespace LowCardinality(String),
    dst_workload  LowCardinality(String),
    l4_protocol   LowCardinality(String),
    dst_port      UInt16,
    flows         AggregateFunction(count),
    drops         AggregateFunction(countIf, UInt8),
    requests      AggregateFunction(countIf, UInt8),
    errors        AggregateFunction(countIf, UInt8),
    latency       AggregateFunction(quantilesIf(0.5, 0.9, 0.99), Int64, UInt8)
)
ENGINE = {{engine "AggregatingMergeTree" "flows_1m"}}
PARTITION BY toDate(minute)
ORDER BY (cluster, src_namespace, src_workload, dst_namespace, dst_workload, l4_protocol, dst_port, minute)
{{ttlOn "flows_1m" "minute"}}
{{settings}};

CREATE MATERIALIZED VIEW IF NOT EXISTS {{table "flows_1m_mv"}} {{.OnCluster}}
TO {{table "flows_1m"}} AS
SELECT
    toStartOfMinute(time) AS minute,
    cluster, src_namespace, src_workload, dst_namespace, dst_workload, l4_protocol, dst_port,
    countState() AS flows,
    countIfState(toUInt8(verdict = 'DROPPED')) AS drops,
    countIfState(toUInt8(l7_type != '' AND NOT is_reply)) AS requests,
    countIfState(toUInt8(http_code >= 500 OR (l7_type = 'DNS' AND is_reply AND dns_rcode != 0))) AS errors,
    quantilesIfState(0.5, 0.9, 0.99)(l7_latency, toUInt8(l7_latency > 0)) AS latency
FROM {{table "flows"}}
GROUP BY minute, cluster, src_namespace, src_workload, dst_namespace, dst_workload, l4_protocol, dst_port;

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
