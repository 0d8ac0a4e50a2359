-- What the steering engine read on each tick, so that any past interval can be replayed
-- exactly (steering/README.md, "Replay"). One row per tick; cells, alerts and overrides
-- are the changes since the previous tick, complete on keyframes (the engine's first tick,
-- then one a minute). Times are nanoseconds: the engine's holds and ramps compare them.
CREATE TABLE IF NOT EXISTS {{table "steering_inputs"}} {{.OnCluster}}
(
    time              DateTime64(9, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    collector         LowCardinality(String),
    site              LowCardinality(String),
    cluster           LowCardinality(String),
    node              LowCardinality(String),
    started           DateTime64(9, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    keyframe          Bool,
    cell_vantage      Array(LowCardinality(String)),
    cell_pop          Array(LowCardinality(String)),
    cell_rtt          Array(Int64) CODEC(ZSTD(1)),
    cell_failures     Array(UInt32) CODEC(ZSTD(1)),
    cell_last_seen    Array(DateTime64(9, 'UTC')) CODEC(ZSTD(1)),
    cell_last_ok      Array(DateTime64(9, 'UTC')) CODEC(ZSTD(1)),
    alerts_changed    Bool,
    alert_name        Array(String),
    alert_severity    Array(LowCardinality(String)),
    alert_labels      Array(Map(String, String)),
    alert_active_at   Array(DateTime64(9, 'UTC')),
    overrides_changed Bool,
    override_action   Array(LowCardinality(String)),
    override_pop      Array(LowCardinality(String)),
    override_service  Array(LowCardinality(String)),
    override_region   Array(LowCardinality(String)),
    override_source   Array(LowCardinality(String))
)
ENGINE = {{engine "MergeTree" "steering_inputs"}}
PARTITION BY toDate(time)
ORDER BY (collector, time)
{{ttl "steering_inputs"}}
{{settings}};

{{distributed "steering_inputs"}}

-- Regret is recorded with each decision (pipeline.SteeringDecision.RegretMs).
ALTER TABLE {{table "steering_decisions"}} {{.OnCluster}} ADD COLUMN IF NOT EXISTS regret_ms Float64;
{{if .Cluster}}ALTER TABLE {{.DB}}.steering_decisions {{.OnCluster}} ADD COLUMN IF NOT EXISTS regret_ms Float64;{{end}}
