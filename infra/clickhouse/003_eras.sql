-- One row per era and run (after FINAL): bounds, rows, sensors, and when each stage's results
-- were stored. The sink only ever inserts (no read-modify-write): every column folds with an
-- aggregate, so the tsfresh and the rolling writes of one era merge instead of replacing each
-- other. The *_chunks maps hold (chunk_index -> feature rows); maxMap makes a re-sent chunk
-- count once, and era_status() sums them into tsfresh_features / rolling_features.
CREATE TABLE IF NOT EXISTS eras
(
    compartment_id String,
    era_id String,
    run_id LowCardinality(String),
    feature_set SimpleAggregateFunction(any, LowCardinality(String)),
    era_start SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    era_end SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    rows SimpleAggregateFunction(max, UInt64),
    sensors SimpleAggregateFunction(any, Array(String)),
    tsfresh_chunks SimpleAggregateFunction(maxMap, Tuple(Array(UInt32), Array(UInt64))),
    rolling_chunks SimpleAggregateFunction(maxMap, Tuple(Array(UInt32), Array(UInt64))),
    tsfresh_at SimpleAggregateFunction(max, Nullable(DateTime64(3, 'UTC'))),
    rolling_at SimpleAggregateFunction(max, Nullable(DateTime64(3, 'UTC'))),
    stored_at SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (compartment_id, era_id, run_id);
