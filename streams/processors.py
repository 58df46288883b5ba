"""Wiring of the compute stages to messages: decode an era, call the stage, encode the outputs.

The computation itself lives in stages/; this module only knows envelopes and topics.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterator

import pandas as pd

from schemas.codec import EraChunk, FeatureBatch, encode_era_chunk, encode_feature_batch
from schemas.payload import frame_from_ipc, frame_to_ipc
from streams.assembler import CompleteEra
from streams.runner import Output
from streams.settings import Settings
from streams.topics import ERAS_CLEAN, FEATURES_ROLLING, FEATURES_TSFRESH

MAX_PAYLOAD_BYTES = 900_000  # under the broker's 1 MiB default with room for the envelope


def era_frame(era: CompleteEra) -> pd.DataFrame:
    """The era's rows from all its chunks, in chunk order.

    Chunks without rows (the closing chunk of a followed era may have none) are left out; a
    column that only later chunks carry (a sensor that appeared in a later file) is NaN in
    the rows of the earlier ones.
    """
    frames = [frame_from_ipc(chunk.payload) for chunk in era.chunks]
    frames = [f for f in frames if len(f)] or frames[:1]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def era_sensors(era: CompleteEra) -> list[str]:
    """The union of the chunks' sensor lists, in order of first appearance.

    A batch ingest gives every chunk the same list; a followed era may gain sensors in later
    chunks (see stages/era_window.py).
    """
    sensors: list[str] = []
    for chunk in era.chunks:
        sensors += [s for s in chunk.sensors if s not in sensors]
    return sensors


def sized_slices(frame: pd.DataFrame, max_rows: int, max_bytes: int = MAX_PAYLOAD_BYTES) -> Iterator[tuple[int, int, bytes]]:
    """(row_start, row_end, ipc bytes) slices of at most max_rows rows and max_bytes bytes."""
    stack = [(start, min(start + max_rows, len(frame))) for start in range(0, len(frame), max_rows)][::-1]
    if not stack:
        stack = [(0, 0)]
    while stack:
        start, end = stack.pop()
        payload = frame_to_ipc(frame.iloc[start:end])
        if len(payload) > max_bytes and end - start > 1:
            mid = (start + end) // 2
            stack.extend([(mid, end), (start, mid)])
            continue
        yield start, end, payload


def era_chunks(
    frame: pd.DataFrame, template: EraChunk, stage: str, batch_size: int, stage_seconds: dict[str, float] | None = None
) -> list[EraChunk]:
    """Cut an era's frame into envelopes; the last one carries chunk_count and last=True."""
    slices = list(sized_slices(frame, batch_size))
    seconds = dict(template.stage_seconds) | (stage_seconds or {})
    return [
        EraChunk(
            era_key=template.era_key, compartment_id=template.compartment_id, era_id=template.era_id,
            run_id=template.run_id, feature_set=template.feature_set, stage=stage, chunk_index=i,
            chunk_count=len(slices) if i == len(slices) - 1 else None, last=i == len(slices) - 1,
            row_start=start, row_end=end, era_start=template.era_start, era_end=template.era_end,
            sensors=list(template.sensors), payload=payload, stage_seconds=seconds,
        )
        for i, (start, end, payload) in enumerate(slices)
    ]


@dataclass
class _BatchPart:
    kind: str
    payload: bytes


def feature_batches(
    template: EraChunk, source: str, era_rows: int, parts: list[_BatchPart], started: float
) -> list[FeatureBatch]:
    computed_at = datetime.now(timezone.utc)
    seconds = dict(template.stage_seconds) | {source: round(time.perf_counter() - started, 6)}
    return [
        FeatureBatch(
            era_key=template.era_key, compartment_id=template.compartment_id, era_id=template.era_id,
            run_id=template.run_id, feature_set=template.feature_set, source=source, kind=part.kind,
            chunk_index=i, chunk_count=len(parts) if i == len(parts) - 1 else None, last=i == len(parts) - 1,
            era_start=template.era_start, era_end=template.era_end, era_rows=era_rows,
            sensors=list(template.sensors), computed_at=computed_at, payload=part.payload,
            stage_seconds=seconds,
        )
        for i, part in enumerate(parts)
    ]


@dataclasses.dataclass
class StageProcessor:
    """An EraProcessor configured by the settings; subclasses say what one era becomes."""

    settings: Settings

    def __call__(self, era: CompleteEra) -> list[Output]:
        raise NotImplementedError


class PreprocessProcessor(StageProcessor):
    """eras.raw -> eras.clean: regular grid, imputation, binary coercion."""

    def __call__(self, era: CompleteEra) -> list[Output]:
        from stages.preprocess import preprocess_era

        started = time.perf_counter()
        sensors = era_sensors(era)
        frame = era_frame(era).reindex(columns=["timestamp", *sensors])  # a sensor no chunk carried: NaN
        clean = preprocess_era(frame, sensors)
        seconds = {"preprocess": round(time.perf_counter() - started, 6)}
        template = dataclasses.replace(era.first, sensors=sensors)
        chunks = era_chunks(clean, template, "preprocess", self.settings.batch_size, seconds)
        return [Output(ERAS_CLEAN, era.key, encode_era_chunk(c)) for c in chunks]


class TsfreshProcessor(StageProcessor):
    """eras.clean -> features.tsfresh: one long-form feature table per era."""

    def __call__(self, era: CompleteEra) -> list[Output]:
        from stages.tsfresh_features import extract_era_features

        started = time.perf_counter()
        clean = era_frame(era)
        features = extract_era_features(
            clean, list(era.first.sensors), era.first.feature_set, n_jobs=self.settings.n_jobs,
            engine=self.settings.feature_engine,
        )
        parts = [_BatchPart("features", p) for _, _, p in sized_slices(features, max(len(features), 1))]
        batches = feature_batches(era.first, "tsfresh", len(clean), parts, started)
        return [Output(FEATURES_TSFRESH, era.key, encode_feature_batch(b)) for b in batches]


class RollingProcessor(StageProcessor):
    """eras.clean -> features.rolling: the rolling time series, then per-era summaries (last)."""

    def __call__(self, era: CompleteEra) -> list[Output]:
        from stages.rolling import rolling_series, rolling_summaries

        started = time.perf_counter()
        clean = era_frame(era)
        series = rolling_series(clean, list(era.first.sensors), self.settings.rolling_windows)
        summaries = rolling_summaries(series)
        parts = [_BatchPart("series", p) for _, _, p in sized_slices(series, 200_000)] if len(series) else []
        parts += [_BatchPart("features", p) for _, _, p in sized_slices(summaries, max(len(summaries), 1))]
        batches = feature_batches(era.first, "rolling", len(clean), parts, started)
        return [Output(FEATURES_ROLLING, era.key, encode_feature_batch(b)) for b in batches]


PROCESSORS: dict[str, type[StageProcessor]] = {
    "preprocess": PreprocessProcessor,
    "tsfresh": TsfreshProcessor,
    "rolling": RollingProcessor,
}
