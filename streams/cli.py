"""The `erastream` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from streams.settings import Settings, SettingsError, load_settings

app = typer.Typer(
    help="erastream: streaming per-era feature extraction for greenhouse sensor data (Kafka -> ClickHouse).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
broker_app = typer.Typer(help="Manage the local Apache Kafka broker (KRaft, one node) used when KAFKA_BOOTSTRAP_SERVERS is unset.", no_args_is_help=True)
topics_app = typer.Typer(help="Create and list the pipeline's topics.", no_args_is_help=True)
app.add_typer(broker_app, name="broker")
app.add_typer(topics_app, name="topics")

console = Console(stderr=True)


class State:
    """Global CLI flags, turned into Settings lazily so `--help` never fails on a bad env."""

    overrides: dict = {}


def settings() -> Settings:
    try:
        return load_settings(**State.overrides)
    except SettingsError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


@app.callback()
def main_options(
    feature_set: Optional[str] = typer.Option(None, "--feature-set", help="minimal | efficient | comprehensive [env FEATURE_SET]"),
    n_jobs: Optional[int] = typer.Option(None, "--n-jobs", help="tsfresh worker processes per stage process [env N_JOBS]"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="rows per era chunk [env BATCH_SIZE]"),
    bootstrap: Optional[str] = typer.Option(None, "--bootstrap-servers", help="Kafka brokers; unset: the local broker [env KAFKA_BOOTSTRAP_SERVERS]"),
    clickhouse_url: Optional[str] = typer.Option(None, "--clickhouse-url", help="http(s)://user:pass@host:port/db; unset: embedded chDB [env CLICKHOUSE_URL]"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="local state directory [env DATA_DIR, default ./data]"),
    partitions: Optional[int] = typer.Option(None, "--partitions", help="partitions per topic [env TOPIC_PARTITIONS]"),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="run id stamped on messages and rows [env RUN_ID]"),
    log_level: Optional[str] = typer.Option(None, "--log-level", help="DEBUG | INFO | WARNING | ERROR [env LOG_LEVEL]"),
) -> None:
    State.overrides = dict(
        feature_set=feature_set, n_jobs=n_jobs, batch_size=batch_size, kafka_bootstrap_servers=bootstrap,
        clickhouse_url=clickhouse_url, data_dir=data_dir, topic_partitions=partitions, run_id=run_id,
        log_level=log_level,
    )


# ---------------------------------------------------------------- broker
def _local_broker():
    from infra.kafka.broker import LocalBroker

    return LocalBroker(settings().broker_state_dir, log=lambda m: console.print(m))


@broker_app.command("provision")
def broker_provision() -> None:
    """Fetch the Kafka jars from Maven Central into the cache (once; later calls do nothing)."""
    from infra.kafka.broker import BrokerError, provision

    try:
        runtime = provision(log=lambda m: console.print(m))
    except BrokerError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"Kafka runtime ready: {runtime.home} ({runtime.download_bytes() / 1e6:.1f} MB)")


@broker_app.command("start")
def broker_start(timeout: float = typer.Option(120, help="seconds to wait for the broker to answer")) -> None:
    """Start the local broker in the background (state and logs under DATA_DIR/broker)."""
    from infra.kafka.broker import BrokerError

    broker = _local_broker()
    try:
        state = broker.start(timeout=timeout)
    except BrokerError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"broker running: bootstrap {state.bootstrap}, pid {state.pid}, logs {broker.log_file}")
    print(state.bootstrap)


@broker_app.command("stop")
def broker_stop(timeout: float = typer.Option(30, help="seconds to wait after SIGTERM before SIGKILL")) -> None:
    """Stop the local broker cleanly (SIGTERM, then SIGKILL after the timeout)."""
    if _local_broker().stop(timeout=timeout):
        console.print("broker stopped")
    else:
        console.print("broker was not running")


@broker_app.command("status")
def broker_status() -> None:
    """Say whether the local broker runs, and where. Exit code 1 when it does not."""
    broker = _local_broker()
    state = broker.status()
    if state is None:
        console.print(f"broker not running (state dir {broker.state_dir})")
        raise typer.Exit(1)
    print(f"running pid={state.pid} bootstrap={state.bootstrap} logs={broker.log_file}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
