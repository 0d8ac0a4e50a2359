-- Each POP's front door (collectors/haproxy, collectors/keepalived). The map and the
-- front-door dashboard read the latest row per POP and node over the last minutes, and a
-- POP's time series: both start with (pop, node), then time.

CREATE TABLE IF NOT EXISTS {{table "haproxy_stats"}} {{.OnCluster}}
(
    time         DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    collector    LowCardinality(String),
    site         LowCardinality(String),
    cluster      LowCardinality(String),
    node         LowCardinality(String),
    pop          LowCardinality(String),
    proxy        LowCardinality(String),
    server       LowCardinality(String),
    type         LowCardinality(String),
    status       LowCardinality(String),
    check_status LowCardinality(String),
    sessions     UInt64 CODEC(T64, ZSTD(1)),
    session_max  UInt64 CODEC(T64, ZSTD(1)),
    session_rate Float64 CODEC(Gorilla, ZSTD(1)),
    bytes_in     Float64 CODEC(Gorilla, ZSTD(1)),
    bytes_out    Float64 CODEC(Gorilla, ZSTD(1)),
    queue        UInt64 CODEC(T64, ZSTD(1)),
    http_4xx     Float64 CODEC(Gorilla, ZSTD(1)),
    http_5xx     Float64 CODEC(Gorilla, ZSTD(1)),
    response_ms  Float64 CODEC(Gorilla, ZSTD(1)),
    utilisation  Float64 CODEC(Gorilla, ZSTD(1))
)
ENGINE = {{engine "MergeTree" "haproxy_stats"}}
PARTITION BY toDate(time)
ORDER BY (pop, node, type, proxy, server, time)
{{ttl "haproxy_stats"}}
{{settings}};

{{distributed "haproxy_stats"}}

CREATE TABLE IF NOT EXISTS {{table "vrrp_states"}} {{.OnCluster}}
(
    time      DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    collector LowCardinality(String),
    site      LowCardinality(String),
    cluster   LowCardinality(String),
    node      LowCardinality(String),
    pop       LowCardinality(String),
    instance  LowCardinality(String),
    state     LowCardinality(String),
    priority  UInt32 CODEC(T64, ZSTD(1)),
    vips      Array(LowCardinality(String)),
    holds_vip Bool,
    since     DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1))
)
ENGINE = {{engine "MergeTree" "vrrp_states"}}
PARTITION BY toDate(time)
ORDER BY (pop, instance, node, time)
{{ttl "vrrp_states"}}
{{settings}};

{{distributed "vrrp_states"}}

-- Every VRRP state change; failovers carry the time the VIP had no holder (nanoseconds).
CREATE TABLE IF NOT EXISTS {{table "vrrp_transitions"}} {{.OnCluster}}
(
    time            DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    collector       LowCardinality(String),
    site            LowCardinality(String),
    cluster         LowCardinality(String),
    node            LowCardinality(String),
    pop             LowCardinality(String),
    instance        LowCardinality(String),
    from_state      LowCardinality(String),
    to_state        LowCardinality(String),
    priority        UInt32 CODEC(T64, ZSTD(1)),
    failover        Bool,
    previous_master LowCardinality(String),
    duration        Int64 CODEC(T64, ZSTD(1)),
    duration_ms     Float64 ALIAS duration / 1e6
)
ENGINE = {{engine "MergeTree" "vrrp_transitions"}}
PARTITION BY toDate(time)
ORDER BY (pop, instance, time)
{{ttl "vrrp_transitions"}}
{{settings}};

{{distributed "vrrp_transitions"}}
