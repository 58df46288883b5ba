"""Global options after the subcommand, the N_JOBS default, and the run's progress display."""

from __future__ import annotations

import io
import os

import pytest
from rich.console import Console
from typer.testing import CliRunner

from streams import cli
from streams.cli import GLOBAL_OPTIONS, RunProgress, State, app
from streams.settings import load_settings
from streams.workers import default_n_jobs

runner = CliRunner()


def test_global_options_are_accepted_after_the_subcommand(tmp_path):
    result = runner.invoke(app, ["broker", "status", "--feature-set", "comprehensive", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1, result.output  # not running: the command itself ran
    assert "No such option" not in result.output
    assert str(tmp_path / "broker") in result.output.replace("\n", "")
    assert State.overrides["feature_set"] == "comprehensive"
    assert cli.settings().feature_set == "comprehensive"


def test_run_accepts_feature_set_after_the_command_and_validates_it(tmp_path):
    result = runner.invoke(app, ["run", "--input", str(tmp_path / "x.csv"), "--feature-set", "fast", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "No such option" not in result.output
    assert "minimal, efficient, comprehensive" in result.output


def test_the_option_after_the_command_wins(tmp_path):
    result = runner.invoke(app, ["--feature-set", "minimal", "--data-dir", str(tmp_path), "stage", "tsfresh", "--feature-set", "bogus"])
    assert result.exit_code == 2
    assert "FEATURE_SET=bogus" in result.output.replace("'", "")


def test_every_command_takes_every_global_option_except_its_own_flags():
    for command in (["run"], ["stage"], ["ingest"], ["status"], ["dlq", "list"], ["broker", "start"], ["features"]):
        text = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "220", "TERMINAL_WIDTH": "220"}).output
        for opt in GLOBAL_OPTIONS:
            assert opt.flag in text, (command, opt.flag)
    replay = runner.invoke(app, ["replay", "--help"], env={"COLUMNS": "220", "TERMINAL_WIDTH": "220"}).output
    assert "store results under this new run id" in replay
    assert "run id stamped on messages" not in replay  # replay's --run-id is its own
    create = runner.invoke(app, ["topics", "create", "--help"], env={"COLUMNS": "220", "TERMINAL_WIDTH": "220"}).output
    assert create.count("--partitions") == 1


def test_n_jobs_default_is_the_cores_the_workers_leave(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert default_n_jobs(load_settings(), 1).n_jobs == 15
    assert default_n_jobs(load_settings(), 4).n_jobs == 12
    assert default_n_jobs(load_settings(), 20).n_jobs == 1
    assert default_n_jobs(load_settings(n_jobs=3), 4).n_jobs == 3  # a flag wins
    monkeypatch.setenv("N_JOBS", "0")
    assert default_n_jobs(load_settings(), 4).n_jobs == 0  # and so does the environment


def test_run_progress_shows_each_count_with_an_eta():
    screen = io.StringIO()
    progress = RunProgress(Console(file=screen, force_terminal=True, width=140), transient=False)
    with progress:
        progress.update("eras", 4, 4, "1.2 MB")
        progress.update("tsfresh", 3, 4)
        progress.update("rolling", 1, 4)
        progress.update("stored", 1, 4, "1 dead-lettered")
    text = screen.getvalue()
    for expected in ("published eras (1.2 MB)", "4/4", "tsfresh stored", "3/4", "rolling stored", "1/4",
                     "eras in ClickHouse (1 dead-lettered)", "ETA"):
        assert expected in text, expected


def test_run_progress_draws_nothing_when_not_on_a_terminal():
    screen = io.StringIO()
    with RunProgress(Console(file=screen, force_terminal=False)) as progress:
        progress.update("stored", 1, 4)
    assert screen.getvalue() == ""
