-- Time-indexed rolling statistics per sensor and window.
CREATE TABLE IF NOT EXISTS rolling_features
(
    compartment_id String,
    era_id String,
    sensor LowCardinality(String),
    window LowCardinality(String),
    timestamp DateTime64(3, 'UTC'),
    mean Float64,
    std Float64,
    min Float64,
    max Float64,
    run_id LowCardinality(String),
    version UInt64,
    computed_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (compartment_id, era_id, sensor, window, timestamp, run_id)
SETTINGS non_replicated_deduplication_window = 10000;
