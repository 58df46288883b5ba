-- One row per era and run: bounds, rows, sensors, and when each stage's results were stored.
CREATE TABLE IF NOT EXISTS eras
(
    compartment_id String,
    era_id String,
    run_id LowCardinality(String),
    feature_set LowCardinality(String),
    era_start DateTime64(3, 'UTC'),
    era_end DateTime64(3, 'UTC'),
    rows UInt64,
    sensors Array(String),
    tsfresh_features UInt32,
    rolling_features UInt32,
    tsfresh_at Nullable(DateTime64(3, 'UTC')),
    rolling_at Nullable(DateTime64(3, 'UTC')),
    stored_at DateTime64(3, 'UTC'),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (compartment_id, era_id, run_id);
