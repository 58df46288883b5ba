from streams.attempts import AttemptLedger


def test_attempts_count_across_ledgers_on_one_file_and_are_forgotten(tmp_path):
    first, second = AttemptLedger(tmp_path, "g"), AttemptLedger(tmp_path, "g")  # two workers of one group
    era = AttemptLedger.era_id("gh:1", 2, 40)
    assert first.start(era) == 0 and second.start(era) == 1 and first.start(era) == 2
    assert AttemptLedger(tmp_path, "other").start(era) == 0  # groups count apart
    second.forget([era])
    assert first.start(era) == 0
    assert AttemptLedger.era_id("gh:1", 2, 41) != era  # a replay of the era (new first offset) starts clean
