-- Capacity-aware steering (steering/README.md, "Capacity"). Each tick's inputs carry the
-- POPs' measured load (new sessions per second and when it was measured), changes only,
-- complete on keyframes, like the cells; each decision the utilisation and headroom of
-- its POP as the tick read them (-1 and 0 when unknown, as for rows written before).
ALTER TABLE {{table "steering_inputs"}} {{.OnCluster}} ADD COLUMN IF NOT EXISTS load_pop Array(LowCardinality(String));
ALTER TABLE {{table "steering_inputs"}} {{.OnCluster}} ADD COLUMN IF NOT EXISTS load_rate Array(Float64) CODEC(ZSTD(1));
ALTER TABLE {{table "steering_inputs"}} {{.OnCluster}} ADD COLUMN IF NOT EXISTS load_seen Array(DateTime64(9, 'UTC')) CODEC(ZSTD(1));
ALTER TABLE {{table "steering_decisions"}} {{.OnCluster}} ADD COLUMN IF NOT EXISTS utilisation Float64 DEFAULT -1;
ALTER TABLE {{table "steering_decisions"}} {{.OnCluster}} ADD COLUMN IF NOT EXISTS headroom Float64;
{{if .Cluster}}
ALTER TABLE {{.DB}}.steering_inputs {{.OnCluster}} ADD COLUMN IF NOT EXISTS load_pop Array(LowCardinality(String));
ALTER TABLE {{.DB}}.steering_inputs {{.OnCluster}} ADD COLUMN IF NOT EXISTS load_rate Array(Float64);
ALTER TABLE {{.DB}}.steering_inputs {{.OnCluster}} ADD COLUMN IF NOT EXISTS load_seen Array(DateTime64(9, 'UTC'));
ALTER TABLE {{.DB}}.steering_decisions {{.OnCluster}} ADD COLUMN IF NOT EXISTS utilisation Float64 DEFAULT -1;
ALTER TABLE {{.DB}}.steering_decisions {{.OnCluster}} ADD COLUMN IF NOT EXISTS headroom Float64;
{{end}}
