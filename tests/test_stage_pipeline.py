"""The stages chained as the streams layer chains them, on the committed sample (no broker)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stages.ingest import assign_eras, chunk_rows, read_sensor_file
from stages.preprocess import preprocess_era
from stages.rolling import rolling_series, rolling_summaries
from stages.selection import select_features
from stages.tsfresh_features import extract_era_features, feature_names

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "greenhouse_sample.csv.gz"


def test_sample_through_every_stage():
    table = read_sensor_file(SAMPLE)
    eras = assign_eras(table.frame, era_length="6h")
    assert len(eras) == 12
    assert sum(len(f) for _, f in eras) == len(table.frame)

    rows = []
    for era, raw in eras:
        # chunks reassemble to the same era
        chunks = [raw.iloc[a:b] for a, b in chunk_rows(len(raw), 100)]
        assert pd.concat(chunks).equals(raw)
        clean = preprocess_era(raw, table.sensors)
        assert len(clean) == 360 and not clean[table.sensors].isna().any().any()
        features = extract_era_features(clean, table.sensors, "minimal")
        rolled = rolling_summaries(rolling_series(clean, table.sensors, ["15min"]))
        assert len(features) == len(table.sensors) * len(feature_names("minimal"))
        both = pd.concat([features, rolled])
        rows.append(pd.Series(both["value"].to_numpy(), index=both["sensor"] + "__" + both["feature"], name=era.key))

    matrix = pd.DataFrame(rows)
    result = select_features(matrix, pca_components=3)
    table_ = result.table.set_index("feature")
    # length is 360 in every era: constant
    assert table_.loc["air_temp_c__length", "reason"] == "low_variance"
    # sum = 360 x mean exactly: whichever comes first is kept, the other is its duplicate
    assert table_.loc["air_temp_c__mean", "reason"] == "correlated"
    assert table_.loc["air_temp_c__mean", "partner"] == "air_temp_c__sum_values"
    assert 0 < len(result.selected) < matrix.shape[1]
    assert len(result.pca_explained_variance) == 3
    assert np.all(np.diff(result.pca_explained_variance) <= 1e-12)
