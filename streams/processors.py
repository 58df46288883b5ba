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
import pyarrow as pa

from schemas.codec import EraChunk, FeatureBatch, encode_era_chunk, encode_feature_batch
from schemas.payload import frame_from_ipc, table_to_ipc
from streams.assembler import CompleteEra
from streams.runner import Output
from streams.settings import Settings
from streams.topics import ERAS_CLEAN, FEATURES_ROLLING, FEATURES_TSFRESH

MAX_PAYLOAD_BYTES = 900_000  # under the broker's 1 MiB default with room for the envelope


def era_frame(era: CompleteEra) -> pd.DataFrame:
    """The era's rows from all its chunks, in chunk order.

    Consecutive chunks with the same (row_start, row_end) are column groups of those rows (a
    frame too wide for one payload, see :func:`era_slices`) and are joined side by side.
    Chunks without rows (the closing chunk of a followed era may have none) are left out; a
    column that only later chunks carry (a sensor that appeared in a later file) is NaN in
    the rows of the earlier ones.
    """
    groups: list[list[pd.DataFrame]] = []
    previous: tuple[int, int] | None = None
    for chunk in era.chunks:
        frame = frame_from_ipc(chunk.payload)
        rows = (chunk.row_start, chunk.row_end)
        if groups and rows == previous:
            if len(frame) != len(groups[-1][0]):
                raise ValueError(f"era {era.key}: chunk {chunk.chunk_index} has {len(frame)} rows, its column "
                                 f"group (rows {rows[0]}-{rows[1]}) {len(groups[-1][0])}")
            seen = {c for f in groups[-1] for c in f.columns}
            groups[-1].append(frame[[c for c in frame.columns if c not in seen]])
        else:
            groups.append([frame])
        previous = rows
    frames = [g[0] if len(g) == 1 else pd.concat(g, axis=1) for g in groups]
    frames = [f for f in frames if len(f)] or frames[:1]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def era_sensors(era: CompleteEra) -> list[str]:
    """The union of the chunks' sensor lists, in order of first appearance.

    A batch ingest gives every chunk the same list, unless the era is cut into column groups
    (each chunk lists its group's sensors); a followed era may gain sensors in later chunks
    (see stages/era_window.py).
    """
    sensors: list[str] = []
    for chunk in era.chunks:
        sensors += [s for s in chunk.sensors if s not in sensors]
    return sensors


@dataclass(frozen=True)
class Slice:
    start: int  # rows [start, end) of the frame
    end: int
    payload: bytes
    columns: list[str] | None = None  # the non-key columns this payload holds; None: all of them


def era_slices(
    frame: pd.DataFrame, max_rows: int, max_bytes: int = MAX_PAYLOAD_BYTES, key_columns: tuple[str, ...] = ("timestamp",)
) -> Iterator[Slice]:
    """Slices of at most max_rows rows and (where one row allows it) max_bytes bytes.

    The frame goes to Arrow once and slices of that table are encoded: converting each
    candidate slice from pandas again cost 0.4 s per try at 6,000 columns. A frame so wide
    that one row takes more than a quarter of max_bytes (thousands of sensors: the schema
    alone is about 240 bytes a column) is cut into column groups, each with the key
    columns; all groups of one row range come out one after the other with the same
    (start, end), which :func:`era_frame` joins again.
    """
    tables = [(None, pa.Table.from_pandas(frame, preserve_index=False))]
    others = [c for c in frame.columns if c not in key_columns]
    one_row = len(table_to_ipc(tables[0][1].slice(0, 1)))
    if key_columns and len(others) > 1 and one_row > max_bytes // 4:
        n_groups = min(len(others), -(-one_row // (max_bytes // 4)))
        size = -(-len(others) // n_groups)
        keys = [c for c in frame.columns if c in key_columns]
        tables = [(group, pa.Table.from_pandas(frame[keys + group], preserve_index=False))
                  for group in (others[i:i + size] for i in range(0, len(others), size))]
    stack = [(start, min(start + max_rows, len(frame))) for start in range(0, len(frame), max_rows)][::-1]
    if not stack:
        stack = [(0, 0)]
    while stack:
        start, end = stack.pop()
        payloads = [table_to_ipc(table.slice(start, end - start)) for _, table in tables]
        if end - start > 1 and any(len(p) > max_bytes for p in payloads):
            mid = (start + end) // 2
            stack.extend([(mid, end), (start, mid)])
            continue
        for (group, _), payload in zip(tables, payloads):
            yield Slice(start, end, payload, group)


def sized_slices(frame: pd.DataFrame, max_rows: int, max_bytes: int = MAX_PAYLOAD_BYTES) -> Iterator[tuple[int, int, bytes]]:
    """(row_start, row_end, ipc bytes) slices of at most max_rows rows and max_bytes bytes (rows only)."""
    for piece in era_slices(frame, max_rows, max_bytes, key_columns=()):
        yield piece.start, piece.end, piece.payload


def era_chunks(
    frame: pd.DataFrame, template: EraChunk, stage: str, batch_size: int, stage_seconds: dict[str, float] | None = None
) -> list[EraChunk]:
    """Cut an era's frame into envelopes; the last one carries chunk_count and last=True.

    A chunk of a column group lists only its group's sensors (see :func:`era_slices`)."""
    slices = list(era_slices(frame, batch_size))
    seconds = dict(template.stage_seconds) | (stage_seconds or {})
    return [
        EraChunk(
            era_key=template.era_key, compartment_id=template.compartment_id, era_id=template.era_id,
            run_id=template.run_id, feature_set=template.feature_set, stage=stage, chunk_index=i,
            chunk_count=len(slices) if i == len(slices) - 1 else None, last=i == len(slices) - 1,
            row_start=piece.start, row_end=piece.end, era_start=template.era_start, era_end=template.era_end,
            sensors=list(template.sensors) if piece.columns is None else [s for s in template.sensors if s in piece.columns],
            payload=piece.payload, stage_seconds=seconds,
        )
        for i, piece in enumerate(slices)
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
        template = dataclasses.replace(era.first, sensors=era_sensors(era))
        features = extract_era_features(
            clean, list(template.sensors), era.first.feature_set, n_jobs=self.settings.n_jobs,
            engine=self.settings.feature_engine,
        )
        parts = [_BatchPart("features", p) for _, _, p in sized_slices(features, max(len(features), 1))]
        batches = feature_batches(template, "tsfresh", len(clean), parts, started)
        return [Output(FEATURES_TSFRESH, era.key, encode_feature_batch(b)) for b in batches]


class RollingProcessor(StageProcessor):
    """eras.clean -> features.rolling: the rolling time series, then per-era summaries (last)."""

    def __call__(self, era: CompleteEra) -> list[Output]:
        from stages.rolling import rolling_series, rolling_summaries

        started = time.perf_counter()
        clean = era_frame(era)
        template = dataclasses.replace(era.first, sensors=era_sensors(era))
        series = rolling_series(clean, list(template.sensors), self.settings.rolling_windows)
        summaries = rolling_summaries(series)
        parts = [_BatchPart("series", p) for _, _, p in sized_slices(series, 200_000)] if len(series) else []
        parts += [_BatchPart("features", p) for _, _, p in sized_slices(summaries, max(len(summaries), 1))]
        batches = feature_batches(template, "rolling", len(clean), parts, started)
        return [Output(FEATURES_ROLLING, era.key, encode_feature_batch(b)) for b in batches]


PROCESSORS: dict[str, type[StageProcessor]] = {
    "preprocess": PreprocessProcessor,
    "tsfresh": TsfreshProcessor,
    "rolling": RollingProcessor,
}
