"""`erastream run` with an era that a stage rejects for real: the run ends once the other eras
are stored, names the dead-lettered era with its error and exits 3, long before its timeout."""

from __future__ import annotations

import io
import re
import time

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from stages.sample_data import generate_sample
from rich.console import Console

from streams import cli
from streams.cli import app

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _poison_era(path) -> str:
    """One day whose readings sit 1 ms apart and then one 23 h later: preprocess would need an
    82.8-million-point grid (limit 50 million) and raises, so the era is dead-lettered."""
    ts = list(pd.date_range("2024-03-05 00:00", periods=10, freq="1ms")) + [pd.Timestamp("2024-03-05 23:00")]
    frame = pd.DataFrame({"timestamp": [t.isoformat() for t in ts], "compartment_id": "gh_poison",
                          "air_temp_c": np.arange(11.0)})
    frame.to_csv(path, index=False)
    return "gh_poison:2024-03-05T00:00:00"


def test_a_dead_lettered_era_ends_the_run_promptly_and_is_reported(settings, tmp_path, unique, caplog, monkeypatch):
    inputs = tmp_path / "in"
    inputs.mkdir()
    generate_sample(days=2, freq="30min", seed=4, compartments=(f"gh_{unique}",)).to_csv(inputs / "good.csv", index=False)
    poison_key = _poison_era(inputs / "poison.csv")
    timeout = 400
    screen = io.StringIO()  # the run's stderr console, as a terminal: the live progress is drawn
    monkeypatch.setattr(cli, "console", Console(file=screen, force_terminal=True, width=160))
    started = time.monotonic()
    result = CliRunner().invoke(app, [
        "--bootstrap-servers", settings.kafka_bootstrap_servers, "--data-dir", str(settings.data_dir),
        "--feature-set", "minimal", "--run-id", f"dl-{unique}", "--batch-size", "100",
        "run", "--input", str(inputs), "--timeout", str(timeout)])
    took = time.monotonic() - started
    assert result.exit_code == 3, result.output
    assert took < timeout
    out = result.output
    err = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())  # colours and cursor moves out
    assert "1 era(s) dead-lettered" in err
    line = next(line for line in err.splitlines() if poison_key in line and "dead-lettered" not in line)
    assert "preprocess" in line and "eras.raw.dlq" in line and "82800001 points" in line
    # the good eras were stored and summarised
    assert f"run dl-{unique}: 2 eras" in out
    assert "timed out" not in out + err
    # the live progress showed each source and the eras stored, with the dead-lettered count
    for label in ("published eras", "tsfresh stored", "rolling stored", "eras in ClickHouse (1 dead-lettered)", "ETA"):
        assert label in err, label
    assert "2/3" in err
    assert "first era stored after" in out
    # the dead letter's transaction marker (one offset past it) is not taken for a stalled watcher
    assert not [r for r in caplog.records if "watcher stalled" in r.getMessage()]
