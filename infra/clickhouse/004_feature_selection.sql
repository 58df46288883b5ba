-- Each selection run over all eras seen so far: one row per feature with the verdict.
CREATE TABLE IF NOT EXISTS feature_selection
(
    selection_id String,
    run_id LowCardinality(String),
    feature String,
    variance Float64,
    kept Bool,
    reason LowCardinality(String),
    partner String,
    eras UInt32,
    created_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (run_id, selection_id, feature);
