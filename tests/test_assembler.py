from schemas.codec import EraChunk
from streams.assembler import EraAssembler


def chunk(key, index, last=False):
    return EraChunk(era_key=key, compartment_id="c", era_id=key, run_id="r", feature_set="minimal", stage="ingest",
                    chunk_index=index, last=last, row_start=0, row_end=1, sensors=["x"], payload=b"")


def test_interleaved_eras_complete_in_chunk_order_and_hold_back_the_commit():
    asm = EraAssembler()
    assert asm.add(chunk("a", 0), 0, 10) is None
    assert asm.add(chunk("b", 0), 0, 11) is None
    assert asm.safe_offset(0) == 10
    done_b = asm.add(chunk("b", 1, last=True), 0, 12)
    assert done_b is not None and [c.chunk_index for c in done_b.chunks] == [0, 1] and done_b.offsets == [11, 12]
    assert asm.safe_offset(0) == 10  # era a still needs offset 10
    done_a = asm.add(chunk("a", 1, last=True), 0, 13)
    assert done_a is not None and asm.safe_offset(0) == 14


def test_chunk_without_its_first_is_skipped_after_a_resume():
    asm = EraAssembler()
    assert asm.add(chunk("a", 3, last=True), 1, 50) is None
    assert asm.skipped == 1 and asm.safe_offset(1) == 51


def test_revoked_partitions_drop_their_buffers():
    asm = EraAssembler()
    asm.add(chunk("a", 0), 0, 1)
    asm.add(chunk("b", 0), 1, 1)
    asm.drop([0])
    assert asm.partitions() == [1] and asm.in_flight() == 1
    assert asm.add(chunk("a", 1, last=True), 0, 2) is None  # its first chunk was dropped


def test_single_chunk_era_completes_at_once():
    asm = EraAssembler()
    era = asm.add(chunk("a", 0, last=True), 2, 7)
    assert era is not None and era.partition == 2 and asm.safe_offset(2) == 8


def test_an_era_without_its_last_chunk_stalls_after_the_timeout_and_frees_the_offset():
    asm = EraAssembler()
    asm.add(chunk("a", 0), 0, 10, now=100.0)
    asm.add(chunk("a", 1), 0, 11, now=105.0)
    asm.add(chunk("b", 0, last=True), 0, 12, now=106.0)  # b completes at once
    assert asm.safe_offset(0) == 10
    assert asm.stalled(now=164.9, timeout=60.0) == []  # 59.9 s since a's newest chunk
    (stalled,) = asm.stalled(now=165.0, timeout=60.0)
    assert stalled.key == "a" and stalled.partition == 0 and stalled.offsets == [10, 11]
    assert "last chunk never came" in stalled.reason and "0-1" in stalled.reason
    assert asm.safe_offset(0) == 13 and asm.in_flight() == 0


def test_stalled_reasons_name_missing_chunks_and_indices_beyond_the_count():
    asm = EraAssembler()
    asm.add(chunk("gap", 0), 0, 1)
    asm.add(chunk("gap", 3, last=True), 0, 2)  # 1 and 2 were dead-lettered upstream
    asm.add(chunk("over", 0), 1, 1)
    asm.add(chunk("over", 5), 1, 2)
    asm.add(chunk("over", 1, last=True), 1, 3)  # says the era has 2 chunks, but index 5 came
    reasons = {s.key: s.reason for s in asm.stalled(now=10.0, timeout=5.0)}
    assert "chunk(s) 1-2 of 4 never came" in reasons["gap"]
    assert "chunk index 5 lies beyond the era's count of 2" in reasons["over"]
