-- Every feature of every era, tsfresh and rolling summaries alike (long form).
-- version is deterministic (the producing stage's computed_at in ms), so a retried
-- insert replaces rather than duplicates; run_id is in the key so runs sit side by side.
CREATE TABLE IF NOT EXISTS era_features
(
    compartment_id String,
    era_id String,
    sensor LowCardinality(String),
    feature LowCardinality(String),
    value Float64,
    source LowCardinality(String),
    feature_set LowCardinality(String),
    run_id LowCardinality(String),
    version UInt64,
    computed_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (compartment_id, era_id, sensor, feature, run_id)
SETTINGS non_replicated_deduplication_window = 10000;
