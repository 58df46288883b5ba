"""Message schemas (Avro envelopes) and their codec.

Avro describes the envelope; the columns ride inside as Arrow IPC bytes, which
keeps numbers columnar and loads straight into pandas or cuDF.
"""

from schemas.codec import (
    EraChunk,
    FeatureBatch,
    MessageDecodeError,
    decode_era_chunk,
    decode_feature_batch,
    encode_era_chunk,
    encode_feature_batch,
)
from schemas.payload import frame_from_ipc, frame_to_ipc

__all__ = [
    "EraChunk",
    "FeatureBatch",
    "MessageDecodeError",
    "decode_era_chunk",
    "decode_feature_batch",
    "encode_era_chunk",
    "encode_feature_batch",
    "frame_from_ipc",
    "frame_to_ipc",
]
