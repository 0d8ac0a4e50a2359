-- One table per record kind of pipeline/record.go. Columns are the snake_case Go field
-- names; Meta is (time, collector, site, cluster, node); Flow endpoints are src_*/dst_*.
-- Durations are Int64 nanoseconds (with *_ms ALIAS columns for dashboards); times are
-- DateTime64 in UTC, zero Go times stored as the epoch.

CREATE TABLE IF NOT EXISTS {{table "tunnel_stats"}} {{.OnCluster}}
(
    time           DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    collector      LowCardinality(String),
    site           LowCardinality(String),
    cluster        LowCardinality(String),
    node           LowCardinality(String),
    interface      LowCardinality(String),
    public_key     String CODEC(ZSTD(1)),
    peer_node      LowCardinality(String),
    peer_site      LowCardinality(String),
    endpoint       LowCardinality(String),
    allowed_ips    Array(LowCardinality(String)),
    last_handshake DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    rx_bytes       UInt64 CODEC(Delta, ZSTD(1)),
    tx_bytes       UInt64 CODEC(Delta, ZSTD(1)),
    rx_rate        Float64 CODEC(Gorilla, ZSTD(1)),
    tx_rate        Float64 CODEC(Gorilla, ZSTD(1)),
    keepalive      Int64 CODEC(T64, ZSTD(1)),
    status         LowCardinality(String)
)
ENGINE = {{engine "MergeTree" "tunnel_stats"}}
PARTITION BY toDate(time)
ORDER BY (site, node, interface, public_key, time)
{{ttl "tunnel_stats"}}
{{settings}};

{{distributed "tunnel_stats"}}

CREATE TABLE IF NOT EXISTS {{table "osd_stats"}} {{.OnCluster}}
(
    time              DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    collector         LowCardinality(String),
    site              LowCardinality(String),
    cluster           LowCardinality(String),
    node              LowCardinality(String),
    fsid              LowCardinality(String),
    osd               UInt32 CODEC(T64, ZSTD(1)),
    host              LowCardinality(String),
    device_class      LowCardinality(String),
    up                Bool,
    `in`              Bool,
    commit_latency_ms Float64 CODEC(Gorilla, ZSTD(1)),
    apply_latency_ms  Float64 CODEC(Gorilla, ZSTD(1)),
    read_latency_ms   Float64 CODEC(Gorilla, ZSTD(1)),
    write_latency_ms  Float64 CODEC(Gorilla, ZSTD(1)),
    read_ops          Float64 CODEC(Gorilla, ZSTD(1)),
    write_ops         Float64 CODEC(Gorilla, ZSTD(1)),
    read_bytes        Float64 CODEC(Gorilla, ZSTD(1)),
    write_bytes       Float64 CODEC(Gorilla, ZSTD(1))
)
ENGINE = {{engine "MergeTree" "osd_stats"}}
PARTITION BY toDate(time)
ORDER BY (cluster, fsid, osd, time)
{{ttl "osd_stats"}}
{{settings}};

{{distributed "osd_stats"}}

CREATE TABLE IF NOT EXISTS {{table "ceph_health"}} {{.OnCluster}}
(
    time       DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    collector  LowCardinality(String),
    site       LowCardinality(String),
    cluster    LowCardinality(String),
    node       LowCardinality(String),
    fsid       LowCardinality(String),
    status     LowCardinality(String),
    checks     Array(LowCardinality(String)),
    osds_total UInt32 CODEC(T64, ZSTD(1)),
    osds_up    UInt32 CODEC(T64, ZSTD(1)),
    osds_in    UInt32 CODEC(T64, ZSTD(1))
)
ENGINE = {{engine "MergeTree" "ceph_health"}}
PARTITION BY toDate(time)
ORDER BY (cluster, fsid, time)
{{ttl "ceph_health"}}
{{settings}};

{{distributed "ceph_health"}}

CREATE TABLE IF NOT EXISTS {{table "ceph_pools"}} {{.OnCluster}}
(
    time         DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    collector    LowCardinality(String),
    site         LowCardinality(String),
    cluster      LowCardinality(String),
    node         LowCardinality(String),
    fsid         LowCardinality(String),
    pool         LowCardinality(String),
    pool_id      UInt32 CODEC(T64, ZSTD(1)),
    read_ops     Float64 CODEC(Gorilla, ZSTD(1)),
    write_ops    Float64 CODEC(Gorilla, ZSTD(1)),
    read_bytes   Float64 CODEC(Gorilla, ZSTD(1)),
    write_bytes  Float64 CODEC(Gorilla, ZSTD(1)),
    stored_bytes UInt64 CODEC(Delta, ZSTD(1))
)
ENGINE = {{engine "MergeTree" "ceph_pools"}}
PARTITION BY toDate(time)
ORDER BY (cluster, fsid, pool, time)
{{ttl "ceph_pools"}}
{{settings}};

{{distributed "ceph_pools"}}

CREATE TABLE IF NOT EXISTS {{table "flows"}} {{.OnCluster}}
(
    time              DateTime64(9, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    collector         LowCardinality(String),
    site              LowCardinality(String),
    cluster           LowCardinality(String),
    node              LowCardinality(String),
    src_namespace     LowCardinality(String),
    src_pod           LowCardinality(String),
    src_workload      LowCardinality(String),
    src_workload_kind LowCardinality(String),
    src_identity      UInt32 CODEC(T64, ZSTD(1)),
    src_ip            IPv6 CODEC(ZSTD(1)),
    src_labels        Array(LowCardinality(String)),
    dst_namespace     LowCardinality(String),
    dst_pod           LowCardinality(String),
    dst_workload      LowCardinality(String),
    dst_workload_kind LowCardinality(String),
    dst_identity      UInt32 CODEC(T64, ZSTD(1)),
    dst_ip            IPv6 CODEC(ZSTD(1)),
    dst_labels        Array(LowCardinality(String)),
    l4_protocol       LowCardinality(String),
    src_port          UInt16 CODEC(T64, ZSTD(1)),
    dst_port          UInt16 CODEC(T64, ZSTD(1)),
    verdict           LowCardinality(String),
    drop_reason       LowCardinality(String),
    direction         LowCardinality(String),
    is_reply          Bool,
    l7_type           LowCardinality(String),
    http_method       LowCardinality(String),
    http_code         UInt16 CODEC(T64, ZSTD(1)),
    http_path         String CODEC(ZSTD(3)),
    l7_latency        Int64 CODEC(T64, ZSTD(1)),
    dns_query         String CODEC(ZSTD(3)),
    dns_rcode         UInt16 CODEC(T64, ZSTD(1)),
    l7_latency_ms     Float64 ALIAS l7_latency / 1e6
)
ENGINE = {{engine "MergeTree" "flows"}}
PARTITION BY toDate(time)
ORDER BY (cluster, src_namespace, src_workload, dst_namespace, dst_workload, time)
{{ttl "flows"}}
{{settings}};

{{distributed "flows"}}

CREATE TABLE IF NOT EXISTS {{table "flow_edges"}} {{.OnCluster}}
(
    time          DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    collector     LowCardinality(String),
    site          LowCardinality(String),
    cluster       LowCardinality(String),
    node          LowCardinality(String),
    `interval`    Int64 CODEC(T64, ZSTD(1)),
    src_namespace LowCardinality(String),
    src_workload  LowCardinality(String),
    dst_namespace LowCardinality(String),
    dst_workload  LowCardinality(String),
    protocol      LowCardinality(String),
    port          UInt16 CODEC(T64, ZSTD(1)),
    flows         UInt64 CODEC(T64, ZSTD(1)),
    drops         UInt64 CODEC(T64, ZSTD(1)),
    drop_reasons  Map(LowCardinality(String), UInt64),
    requests      UInt64 CODEC(T64, ZSTD(1)),
    errors        UInt64 CODEC(T64, ZSTD(1)),
    latency_p50   Int64 CODEC(T64, ZSTD(1)),
    latency_p90   Int64 CODEC(T64, ZSTD(1)),
    latency_p99   Int64 CODEC(T64, ZSTD(1)),
    latency_p50_ms Float64 ALIAS latency_p50 / 1e6,
    latency_p90_ms Float64 ALIAS latency_p90 / 1e6,
    latency_p99_ms Float64 ALIAS latency_p99 / 1e6
)
ENGINE = {{engine "MergeTree" "flow_edges"}}
PARTITION BY toDate(time)
ORDER BY (cluster, src_namespace, src_workload, dst_namespace, dst_workload, time)
{{ttl "flow_edges"}}
{{settings}};

{{distributed "flow_edges"}}

CREATE TABLE IF NOT EXISTS {{table "probes"}} {{.OnCluster}}
(
    time          DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    collector     LowCardinality(String),
    site          LowCardinality(String),
    cluster       LowCardinality(String),
    node          LowCardinality(String),
    vantage       LowCardinality(String),
    method        LowCardinality(String),
    pop           LowCardinality(String),
    service       LowCardinality(String),
    client_region LowCardinality(String),
    target        LowCardinality(String),
    answer        String CODEC(ZSTD(1)),
    rcode         LowCardinality(String),
    success       Bool,
    rtt           Int64 CODEC(T64, ZSTD(1)),
    error         String CODEC(ZSTD(1)),
    rtt_ms        Float64 ALIAS rtt / 1e6
)
ENGINE = {{engine "MergeTree" "probes"}}
PARTITION BY toDate(time)
ORDER BY (service, pop, vantage, method, time)
{{ttl "probes"}}
{{settings}};

{{distributed "probes"}}

CREATE TABLE IF NOT EXISTS {{table "steering_decisions"}} {{.OnCluster}}
(
    time          DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    collector     LowCardinality(String),
    site          LowCardinality(String),
    cluster       LowCardinality(String),
    node          LowCardinality(String),
    service       LowCardinality(String),
    client_region LowCardinality(String),
    pop           LowCardinality(String),
    old_weight    Float64,
    new_weight    Float64,
    cause         LowCardinality(String),
    reason        String CODEC(ZSTD(1))
)
ENGINE = {{engine "MergeTree" "steering_decisions"}}
PARTITION BY toDate(time)
ORDER BY (service, client_region, pop, time)
{{ttl "steering_decisions"}}
{{settings}};

{{distributed "steering_decisions"}}
