"""The command line: every command documents itself; bad settings fail early and clearly."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from streams.cli import app

runner = CliRunner()

COMMANDS = [
    [], ["broker"], ["broker", "start"], ["broker", "stop"], ["broker", "status"], ["broker", "provision"],
    ["topics"], ["topics", "create"], ["topics", "list"], ["stage"], ["ingest"], ["run"], ["features"],
    ["replay"], ["dlq"], ["dlq", "list"], ["dlq", "replay"], ["status"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "erastream")
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    assert "--help" in result.output


def test_run_help_describes_its_options():
    out = runner.invoke(app, ["run", "--help"]).output
    for option in ("--input", "--eras", "--era-length", "--timeout"):
        assert option in out


def test_bad_setting_in_environment_fails_with_its_name(monkeypatch, tmp_path):
    monkeypatch.setenv("N_JOBS", "-3")
    result = runner.invoke(app, ["--data-dir", str(tmp_path), "broker", "status"])
    assert result.exit_code == 2
    assert "N_JOBS=-3" in result.output.replace("'", "")


def test_bad_feature_set_flag_fails_with_allowed_values(tmp_path):
    result = runner.invoke(app, ["--feature-set", "fast", "--data-dir", str(tmp_path), "broker", "status"])
    assert result.exit_code == 2
    assert "minimal, efficient, comprehensive" in result.output


def test_stage_without_a_broker_says_how_to_get_one(tmp_path):
    result = runner.invoke(app, ["--data-dir", str(tmp_path), "stage", "tsfresh"])
    assert result.exit_code == 1
    assert "erastream broker start" in result.output


def test_console_script_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "streams.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "erastream" in proc.stdout


def test_unreachable_broker_is_one_clear_line_not_a_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "streams.cli", "--bootstrap-servers", "127.0.0.1:1", "--data-dir", str(tmp_path), "status"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "Kafka" in proc.stderr and "broker" in proc.stderr
