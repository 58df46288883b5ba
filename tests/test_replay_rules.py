"""The pure rule behind a backfill's start: which eras were open at a start, and where they began."""

from streams.replay import OpenEras

A, B, C = ("r", "gh:a"), ("r", "gh:b"), ("r", "gh:c")


def _walk(chunks: list[tuple[tuple[str, str], int, bool]], start: int) -> OpenEras:
    """Feed chunks (given oldest first, at offsets 0..) newest first, as the walk back does."""
    eras = OpenEras()
    for offset in reversed(range(len(chunks))):
        eras.see(*chunks[offset], offset)
        if not eras.searching:
            break
    return eras


def test_an_era_open_at_the_start_and_continued_after_it_moves_the_start_to_its_chunk_0():
    eras = _walk([(A, 0, False), (B, 0, False), (B, 1, True), (A, 1, False)], start=4)
    assert eras.first_chunk == {A: 0}
    assert eras.start(4, continued={A}) == 0


def test_an_open_era_that_never_goes_on_does_not_move_the_start():
    eras = _walk([(A, 0, False), (B, 0, False), (A, 1, False)], start=3)
    assert eras.first_chunk == {A: 0, B: 1}
    assert eras.start(3, continued={B}) == 1  # A was open but never goes on
    assert eras.start(3, continued=set()) == 3


def test_an_era_finished_before_the_start_is_decided_by_its_last_chunk():
    eras = _walk([(A, 0, False), (A, 1, True)], start=2)
    assert eras.first_chunk == {} and not eras.searching
    assert eras.start(2, continued={A}) == 2


def test_the_walk_goes_on_until_every_open_era_has_its_chunk_0():
    eras = OpenEras()
    assert eras.searching  # nothing seen yet
    eras.see(C, 3, False, 9)
    assert eras.searching
    eras.see(C, 2, False, 8)
    eras.see(C, 0, False, 5)
    assert not eras.searching and eras.first_chunk == {C: 5}


def test_an_era_whose_chunk_0_is_gone_moves_nothing():
    eras = OpenEras()
    eras.see(A, 2, False, 7)
    assert eras.first_chunk == {A: None}
    assert eras.start(8, continued={A}) == 8
