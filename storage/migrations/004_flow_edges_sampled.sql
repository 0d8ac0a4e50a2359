-- Of an edge's flows, those whose raw record is not in `flows`: kept out by
-- flow_sample_rate, by the collector's overload sampling, or lost before Meridian
-- (Hubble's lost events, on the `lost` edge). Counts over raw flows scale by
-- flows / (flows - sampled); counts over edges need no scaling.
ALTER TABLE {{table "flow_edges"}} {{.OnCluster}} ADD COLUMN IF NOT EXISTS sampled UInt64 CODEC(T64, ZSTD(1)) AFTER flows;
{{if .Cluster}}
ALTER TABLE {{.DB}}.flow_edges {{.OnCluster}} ADD COLUMN IF NOT EXISTS sampled UInt64 AFTER flows;
{{end}}
