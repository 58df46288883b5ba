"""Avro envelopes on fastavro, framed with a magic byte and a schema version.

No schema registry: both ends ship with the same .avsc files. The two-byte
header lets a consumer reject foreign bytes with a clear error instead of
mis-decoding them.
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import fastavro

MAGIC = b"\xe5"
VERSION = 1
_SCHEMA_DIR = Path(__file__).parent


class MessageDecodeError(ValueError):
    """A message's bytes are not a valid envelope. Names where the message came from."""

    def __init__(self, reason: str, *, topic: str | None, partition: int | None, offset: int | None):
        self.reason = reason
        self.topic = topic
        self.partition = partition
        self.offset = offset
        super().__init__(f"cannot decode message at {topic}[{partition}]@{offset}: {reason}")


@dataclass
class EraChunk:
    era_key: str
    compartment_id: str
    era_id: str
    run_id: str
    feature_set: str
    stage: str
    chunk_index: int
    last: bool
    row_start: int
    row_end: int
    sensors: list[str]
    payload: bytes
    chunk_count: int | None = None
    era_start: datetime | None = None
    era_end: datetime | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class FeatureBatch:
    era_key: str
    compartment_id: str
    era_id: str
    run_id: str
    feature_set: str
    source: str  # tsfresh | rolling
    kind: str  # features | series
    chunk_index: int
    last: bool
    era_rows: int
    sensors: list[str]
    computed_at: datetime
    payload: bytes
    chunk_count: int | None = None
    era_start: datetime | None = None
    era_end: datetime | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)


@cache
def load_schema(name: str) -> Any:
    """A parsed schema from schemas/<name>.avsc."""
    with open(_SCHEMA_DIR / f"{name}.avsc", encoding="utf-8") as fh:
        return fastavro.parse_schema(json.load(fh))


def _encode(schema_name: str, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    buf.write(MAGIC + bytes([VERSION]))
    fastavro.schemaless_writer(buf, load_schema(schema_name), record)
    return buf.getvalue()


T = TypeVar("T")


def _decode(schema_name: str, cls: type[T], data: bytes | None, where: dict[str, Any]) -> T:
    if data is None:
        raise MessageDecodeError("message has no value", **where)
    if len(data) < 2 or data[:1] != MAGIC:
        raise MessageDecodeError(f"not an erastream {schema_name} envelope (bad magic byte)", **where)
    if data[1] != VERSION:
        raise MessageDecodeError(f"unsupported envelope version {data[1]}", **where)
    buf = io.BytesIO(data)
    buf.seek(2)
    try:
        record = fastavro.schemaless_reader(buf, load_schema(schema_name), None)
    except Exception as exc:  # fastavro raises EOFError, ValueError, UnicodeDecodeError...
        raise MessageDecodeError(f"corrupt {schema_name} envelope ({type(exc).__name__}: {exc})", **where) from exc
    if buf.tell() != len(data):
        raise MessageDecodeError(f"{len(data) - buf.tell()} trailing bytes after {schema_name} envelope", **where)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in record.items() if k in names})


def encode_era_chunk(chunk: EraChunk) -> bytes:
    return _encode("era_chunk", dataclasses.asdict(chunk))


def decode_era_chunk(
    data: bytes | None, *, topic: str | None = None, partition: int | None = None, offset: int | None = None
) -> EraChunk:
    return _decode("era_chunk", EraChunk, data, {"topic": topic, "partition": partition, "offset": offset})


def encode_feature_batch(batch: FeatureBatch) -> bytes:
    return _encode("feature_batch", dataclasses.asdict(batch))


def decode_feature_batch(
    data: bytes | None, *, topic: str | None = None, partition: int | None = None, offset: int | None = None
) -> FeatureBatch:
    return _decode("feature_batch", FeatureBatch, data, {"topic": topic, "partition": partition, "offset": offset})
