-- Alerts starting to fire and resolving, as the ruler saw them (pipeline.AlertState), so
-- a past state of the map shows the alerts firing then. A still-firing alert is restated
-- every alerts.KeyframeEvery (keyframe), so the alerts firing at an instant T are the
-- latest row per alert among those in a bounded window before T: both of the map's
-- queries are time ranges (a window before T; the rows between two playback instants),
-- hence ORDER BY time. Few rows (one per change, one per firing alert per keyframe).
CREATE TABLE IF NOT EXISTS {{table "alert_states"}} {{.OnCluster}}
(
    time      DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    collector LowCardinality(String),
    site      LowCardinality(String),
    cluster   LowCardinality(String),
    node      LowCardinality(String),
    name      String CODEC(ZSTD(1)),
    severity  LowCardinality(String),
    labels    Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    state     LowCardinality(String),
    active_at DateTime64(3, 'UTC') CODEC(ZSTD(1)),
    keyframe  Bool
)
ENGINE = {{engine "MergeTree" "alert_states"}}
PARTITION BY toDate(time)
ORDER BY time
{{ttl "alert_states"}}
{{settings}};

{{distributed "alert_states"}}
