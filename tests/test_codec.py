from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from schemas import (
    EraChunk, FeatureBatch, MessageDecodeError, decode_era_chunk, decode_feature_batch, encode_era_chunk,
    encode_feature_batch, frame_from_ipc, frame_to_ipc,
)


def _frame(n=50):
    rng = np.random.default_rng(1)
    return pd.DataFrame({"timestamp": pd.date_range("2024-01-01", periods=n, freq="min"),
                         "air_temp_c": rng.normal(20, 2, n), "rain_status": rng.integers(0, 2, n).astype(float)})


def _chunk(payload: bytes) -> EraChunk:
    return EraChunk(era_key="gh1:e1", compartment_id="gh1", era_id="e1", run_id="r1", feature_set="minimal",
                    stage="ingest", chunk_index=2, last=True, chunk_count=3, row_start=100, row_end=150,
                    sensors=["air_temp_c", "rain_status"], payload=payload,
                    era_start=datetime(2024, 1, 1, tzinfo=timezone.utc), era_end=datetime(2024, 1, 2, tzinfo=timezone.utc),
                    stage_seconds={"preprocess": 0.25})


def test_era_chunk_round_trip_keeps_every_field_and_the_columns():
    frame = _frame()
    frame.loc[3, "air_temp_c"] = np.nan
    chunk = _chunk(frame_to_ipc(frame))
    back = decode_era_chunk(encode_era_chunk(chunk))
    assert back == chunk
    pd.testing.assert_frame_equal(frame_from_ipc(back.payload), frame)


def test_feature_batch_round_trip():
    feats = pd.DataFrame({"sensor": ["a", "a"], "feature": ["mean", 'agg__f_agg_"mean"'], "value": [1.5, np.nan]})
    batch = FeatureBatch(era_key="gh1:e1", compartment_id="gh1", era_id="e1", run_id="r", feature_set="minimal",
                         source="tsfresh", kind="features", chunk_index=0, last=True, era_rows=10, sensors=["a"],
                         computed_at=datetime(2024, 1, 1, 12, tzinfo=timezone.utc), payload=frame_to_ipc(feats))
    back = decode_feature_batch(encode_feature_batch(batch))
    assert back == batch
    pd.testing.assert_frame_equal(frame_from_ipc(back.payload), feats)


@pytest.mark.parametrize("data,reason", [
    (None, "no value"),
    (b"", "bad magic"),
    (b"{\"json\": true}", "bad magic"),
    (b"\xe5\x09abc", "version 9"),
])
def test_undecodable_messages_name_topic_partition_offset(data, reason):
    with pytest.raises(MessageDecodeError) as err:
        decode_era_chunk(data, topic="eras.raw", partition=3, offset=42)
    assert "eras.raw[3]@42" in str(err.value) and reason in str(err.value)
    assert (err.value.topic, err.value.partition, err.value.offset) == ("eras.raw", 3, 42)


def test_truncated_and_padded_envelopes_are_rejected():
    good = encode_era_chunk(_chunk(frame_to_ipc(_frame())))
    with pytest.raises(MessageDecodeError, match="corrupt"):
        decode_era_chunk(good[: len(good) // 2], topic="t", partition=0, offset=1)
    with pytest.raises(MessageDecodeError, match="trailing"):
        decode_era_chunk(good + b"xx", topic="t", partition=0, offset=1)
