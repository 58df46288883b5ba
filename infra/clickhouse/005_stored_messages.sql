-- The sink's ledger: the content token of every feature message it stored. A message sent
-- again (a replay, however large, or a recomputation with the same values) is found here and
-- not stored twice. Insert deduplication tokens cover only the last
-- non_replicated_deduplication_window inserts; the sink needs them just for the retry of its
-- latest batch (streams/sink.py BatchJournal), everything older is answered by this table.
CREATE TABLE IF NOT EXISTS stored_messages
(
    run_id LowCardinality(String),
    token String,
    stored_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (run_id, token)
SETTINGS non_replicated_deduplication_window = 10000;
