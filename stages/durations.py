"""Fixed durations from pandas offset strings ("5min", "12h", "1D"), for era lengths and windows.

Calendar offsets ("MS", "W") have no single length and are refused. pandas 3 no longer
counts Day ("1D") as a Tick, but on tz-naive UTC timestamps a day is a fixed 24 h.
"""

from __future__ import annotations

import pandas as pd
from pandas.tseries.frequencies import to_offset
from pandas.tseries.offsets import Day, Tick


def fixed_duration(text: str, what: str) -> pd.Timedelta:
    """The positive length of ``text``; ValueError naming ``what`` (e.g. "era_length") otherwise."""
    try:
        offset = to_offset(text)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{what} {text!r} is not a pandas offset: {exc}") from exc
    if isinstance(offset, Day):
        length = pd.Timedelta(days=offset.n)
    elif isinstance(offset, Tick):
        length = pd.Timedelta(offset)
    else:
        length = None
    if length is None or length <= pd.Timedelta(0):
        raise ValueError(f"{what} {text!r} must be a fixed positive duration such as '5min', '12h', '1D'")
    return length
