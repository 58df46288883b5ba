"""Arrow IPC payloads: a pandas frame in, the same frame out."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

_WRITE_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd")


def frame_to_ipc(frame: pd.DataFrame) -> bytes:
    """Serialise without the index; zstd keeps feature names and repeated keys small."""
    return table_to_ipc(pa.Table.from_pandas(frame, preserve_index=False))


def table_to_ipc(table: pa.Table) -> bytes:
    """An Arrow table (e.g. a slice of a converted frame) as an IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=_WRITE_OPTIONS) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def frame_from_ipc(data: bytes) -> pd.DataFrame:
    with pa.ipc.open_stream(pa.py_buffer(data)) as reader:
        return reader.read_all().to_pandas()
