"""stages.durations: fixed lengths from offset strings."""

from __future__ import annotations

import pandas as pd
import pytest

from stages.durations import fixed_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [("5min", "5min"), ("240min", "4h"), ("12h", "12h"), ("1D", "24h"), ("7D", "168h"), ("90s", "90s")],
)
def test_fixed(text, expected):
    assert fixed_duration(text, "window") == pd.Timedelta(expected)


@pytest.mark.parametrize("text", ["MS", "1W", "2ME", "0min", "soon", ""])
def test_refused_with_the_setting_named(text):
    with pytest.raises(ValueError, match=r"era_length"):
        fixed_duration(text, "era_length")
