"""The `erastream` command line."""

from __future__ import annotations

import functools
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

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


@dataclass(frozen=True)
class GlobalOption:
    """A setting every command accepts, before the command or after it (the later one wins)."""

    setting: str  # the Settings field it overrides
    flag: str
    kind: type
    help: str

    @property
    def param(self) -> str:
        return f"global_{self.setting}"

    def parameter(self) -> inspect.Parameter:
        return inspect.Parameter(self.param, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[self.kind],
                                 default=typer.Option(None, self.flag, help=self.help, rich_help_panel="Global options"))


GLOBAL_OPTIONS: tuple[GlobalOption, ...] = (
    GlobalOption("feature_set", "--feature-set", str, "minimal | efficient | comprehensive [env FEATURE_SET]"),
    GlobalOption("n_jobs", "--n-jobs", int, "tsfresh worker processes per stage process [env N_JOBS; default: cores left over by the stage's workers]"),
    GlobalOption("feature_engine", "--feature-engine", str, "fast (tsfresh's numbers, own kernels) | tsfresh [env FEATURE_ENGINE]"),
    GlobalOption("batch_size", "--batch-size", int, "rows per era chunk [env BATCH_SIZE]"),
    GlobalOption("kafka_bootstrap_servers", "--bootstrap-servers", str, "Kafka brokers; unset: the local broker [env KAFKA_BOOTSTRAP_SERVERS]"),
    GlobalOption("clickhouse_url", "--clickhouse-url", str, "http(s)://user:pass@host:port/db; unset: embedded chDB [env CLICKHOUSE_URL]"),
    GlobalOption("data_dir", "--data-dir", Path, "local state directory [env DATA_DIR, default ./data]"),
    GlobalOption("topic_partitions", "--partitions", int, "partitions per topic [env TOPIC_PARTITIONS]"),
    GlobalOption("run_id", "--run-id", str, "run id stamped on messages and rows [env RUN_ID]"),
    GlobalOption("log_level", "--log-level", str, "DEBUG | INFO | WARNING | ERROR [env LOG_LEVEL]"),
)


def _take_globals(kwargs: dict) -> None:
    """Move the global options out of a command's arguments into State.overrides (given ones only)."""
    for opt in GLOBAL_OPTIONS:
        value = kwargs.pop(opt.param, None)
        if value is not None:
            State.overrides[opt.setting] = value


def _option_flags(func) -> set[str]:
    flags: set[str] = set()
    for param in inspect.signature(func).parameters.values():
        flags.update(d for d in getattr(param.default, "param_decls", None) or () if d.startswith("--"))
    return flags


def accept_global_options(func):
    """The command with every global option added, except those whose flag it defines itself
    (`replay --run-id` is the replay's new run id, `topics create --partitions` its own count)."""
    own = _option_flags(func)
    extra = [opt for opt in GLOBAL_OPTIONS if opt.flag not in own]

    @functools.wraps(func)
    def command(*args, **kwargs):
        _take_globals(kwargs)
        return func(*args, **kwargs)

    params = list(inspect.signature(func).parameters.values())
    command.__signature__ = inspect.signature(func).replace(parameters=[*params, *(opt.parameter() for opt in extra)])
    return command


def main_options(**kwargs) -> None:
    State.overrides = {}
    _take_globals(kwargs)


main_options.__signature__ = inspect.Signature([opt.parameter() for opt in GLOBAL_OPTIONS])
app.callback()(main_options)


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


# ---------------------------------------------------------------- topics
@topics_app.command("create")
def topics_create(partitions: Optional[int] = typer.Option(None, "--partitions", "-p", help="partitions per topic [env TOPIC_PARTITIONS, default 4]")) -> None:
    """Create every pipeline topic and its dead-letter twin (existing topics are left alone)."""
    from streams.topics import create_topics

    cfg = settings()
    admin = _admin(cfg)
    infos = create_topics(admin, partitions or cfg.topic_partitions)
    for info in infos:
        console.print(f"{'created' if info.created else 'exists '} {info.name} ({info.partitions} partitions)")


@topics_app.command("list")
def topics_list() -> None:
    """List topics with their partition counts."""
    from streams.topics import list_topics

    for name, count in list_topics(_admin(settings())).items():
        print(f"{name}\t{count}")


def _admin(cfg: Settings):
    from streams.kafka import NoBrokerError, admin_client

    try:
        return admin_client(cfg)
    except NoBrokerError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


# ---------------------------------------------------------------- stages
@app.command("stage")
def stage(
    name: str = typer.Argument(..., help="preprocess | tsfresh | rolling | sink"),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="processes in the stage's consumer group"),
    group: Optional[str] = typer.Option(None, "--group", help="consumer group (default erastream.<stage>)"),
) -> None:
    """Run one stage as a long-lived consumer until SIGTERM/Ctrl-C.

    With --workers N (N > 1) the command supervises N child processes in one consumer group and
    restarts one that dies (1 s, 2 s, 4 s ... up to 60 s between deaths in a row).
    """
    from streams.workers import STAGES, default_n_jobs, run_stage, spawn_worker, supervise

    if name not in STAGES:
        console.print(f"[red]error:[/red] unknown stage {name!r}; stages: {', '.join(STAGES)}")
        raise typer.Exit(2)
    cfg = settings()
    _logging(cfg)
    _require_broker(cfg)
    if name == "sink" and workers > 1 and not cfg.clickhouse_url:
        console.print("[red]error:[/red] embedded chDB allows one sink process; set CLICKHOUSE_URL to run more sink workers")
        raise typer.Exit(2)
    cfg = default_n_jobs(cfg, workers)
    if workers == 1:
        from streams.runner import ComputeAbandoned
        from streams.workers import replace_process

        try:
            run_stage(cfg, name, group_id=group)
        except ComputeAbandoned as exc:  # a compute thread cannot be stopped: a fresh process goes on
            replace_process(str(exc))
        return
    # each worker is a child process; one that dies is restarted with backoff until SIGTERM/Ctrl-C
    raise typer.Exit(supervise(lambda i: spawn_worker(cfg, name, i, group_id=group), workers))


def _require_broker(cfg: Settings) -> str:
    from streams.kafka import NoBrokerError, bootstrap_servers

    try:
        return bootstrap_servers(cfg)
    except NoBrokerError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


def _logging(cfg: Settings) -> None:
    import logging

    logging.basicConfig(level=cfg.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("librdkafka").setLevel(logging.ERROR)


# ---------------------------------------------------------------- ingest
@app.command("ingest")
def ingest(
    path: Path = typer.Argument(..., help="a CSV/CSV.gz/Parquet file or a directory of them"),
    eras: Optional[Path] = typer.Option(None, "--eras", help="era labels CSV: era_id, compartment_id, start_time, end_time"),
    era_length: str = typer.Option("1D", "--era-length", help="fixed era length when no --eras file (pandas offset: 1D, 12h)"),
    follow: bool = typer.Option(False, "--follow", help="keep watching PATH (a directory) and publish new files as they land, until SIGTERM/Ctrl-C"),
    grace: str = typer.Option("10min", "--grace", help="with --follow: close an open era once the clock passes its end by this much (10min, 2h; 0: at once; never: only when later data arrives)"),
    poll: float = typer.Option(5.0, "--poll", help="with --follow: seconds between directory scans (a file is read once its size held for one scan)"),
) -> None:
    """Validate sensor files and publish their eras to eras.raw (one transaction per call).

    With --follow, PATH is a landing directory: each new file is published once (remembered across restarts under DATA_DIR/follow/); eras stay open across files and close when data past their end arrives or their end passes by the grace period.
    """
    from stages.ingest import InputError
    from streams.ingest import NothingIngested, publish

    cfg = settings()
    _logging(cfg)
    _require_broker(cfg)
    if follow:
        _follow(cfg, path, eras, era_length, grace, poll)
        return
    try:
        with _progress() as progress:
            task = progress.add_task("publishing eras", total=None)
            report = publish(cfg, path, eras, era_length, progress=lambda what, done, total, detail="": progress.update(
                task, completed=done, total=total, description=f"publishing eras ({detail})"))
    except NothingIngested as exc:
        _print_ingest(exc.report)
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except InputError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    _print_ingest(report)
    if report.failed:
        raise typer.Exit(1)


def _follow(cfg: Settings, path: Path, eras: Optional[Path], era_length: str, grace: str, poll: float) -> None:
    from stages.era_window import parse_grace
    from stages.ingest import InputError
    from streams.follow import DirectoryFollower, FollowError
    from streams.workers import StopSignal

    try:
        follower = DirectoryFollower(cfg, path, eras, era_length, parse_grace(grace), poll, on_event=lambda m: console.print(m))
        totals = follower.run(StopSignal())  # SIGTERM/Ctrl-C: stop after the current poll
    except (InputError, FollowError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    except ValueError as exc:  # a bad --grace or --era-length
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print(f"stopped: {totals.files} file(s) published ({totals.rows:,} rows, {totals.chunks} chunks), "
                  f"{totals.failed} failed, {totals.eras_closed} era(s) closed, {totals.late_rows:,} late row(s) dropped")


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True, disable=not console.is_terminal)


def _print_ingest(report) -> None:
    console.print(
        f"ingested {len(report.files)} file(s): {report.rows:,} rows, {len(report.eras)} eras, {report.chunks} chunks, "
        f"{report.bytes / 1e6:.2f} MB in {report.seconds:.2f} s ({report.mb_per_s:.1f} MB/s)"
    )
    for bad in report.bad_rows[:20]:
        console.print(f"[yellow]bad row[/yellow] {escape(str(bad))}", highlight=False, soft_wrap=True)
    if len(report.bad_rows) > 20:
        console.print(f"[yellow]... {len(report.bad_rows) - 20} more bad rows[/yellow]")
    if report.bad_rows:
        console.print(f"[yellow]{len(report.bad_rows)} bad row(s) skipped[/yellow]")
    for text in report.warnings:
        console.print(f"[yellow]warning[/yellow] {escape(text)}", highlight=False, soft_wrap=True)
    for path, why in report.failed.items():
        console.print(f"[red]file failed, nothing of it published:[/red] {why}")


# ---------------------------------------------------------------- run
@app.command("run")
def run(
    input: Path = typer.Option(..., "--input", "-i", help="a CSV/CSV.gz/Parquet file or a directory of them"),
    eras: Optional[Path] = typer.Option(None, "--eras", help="era labels CSV: era_id, compartment_id, start_time, end_time"),
    era_length: str = typer.Option("1D", "--era-length", help="fixed era length without --eras (pandas offset)"),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="give up after this many seconds"),
    tsfresh_workers: int = typer.Option(1, "--tsfresh-workers", min=1, help="tsfresh stage processes (one consumer group)"),
    preprocess_workers: int = typer.Option(1, "--preprocess-workers", min=1, help="preprocess stage processes"),
    rolling_workers: int = typer.Option(1, "--rolling-workers", min=1, help="rolling stage processes"),
) -> None:
    """All-in-one local job: broker, topics, every stage as a process, ingest, wait, summary.

    Ends once every era is stored or dead-lettered. Exit codes: 0 all stored; 3 some eras were
    dead-lettered (listed with their errors; see `erastream dlq list`); 1 a stage died, the input
    was bad or --timeout passed; 130 Ctrl-C (SIGINT), 143 SIGTERM, after stopping the stages and
    the broker the run started.
    """
    from stages.ingest import InputError
    from streams.ingest import NothingIngested
    from streams.local_run import RunFailed, RunInterrupted, interruptible, run_local

    cfg = settings()
    _logging(cfg)
    try:
        with interruptible(), RunProgress(console) as progress:
            workers = {"tsfresh": tsfresh_workers, "preprocess": preprocess_workers, "rolling": rolling_workers}
            summary = run_local(cfg, input, eras, era_length, timeout=timeout, on_progress=progress.update, workers=workers)
    except RunInterrupted as exc:
        console.print(f"[yellow]interrupted ({exc}): stages stopped[/yellow]")
        raise typer.Exit(128 + exc.signum) from None
    except NothingIngested as exc:
        _print_ingest(exc.report)
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except (InputError, RunFailed) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    _print_ingest(summary.ingest)
    _print_summary(summary, cfg)
    if summary.failed:
        console.print(f"[red]{len(summary.failed)} era(s) dead-lettered, not stored:[/red]")
        for dead in summary.failed.values():
            console.print(f"  {dead.era_key}: {dead.stage} -> {dead.topic}: {dead.error}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(3)


class RunProgress:
    """The run's live progress on a terminal: eras published, eras stored per feature source and
    in all, each with count / total, elapsed time and an ETA from the rate so far."""

    LABELS = {"eras": "published eras", "tsfresh": "tsfresh stored", "rolling": "rolling stored", "stored": "eras in ClickHouse"}

    def __init__(self, out: Console, transient: bool = True):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(), console=out, transient=transient,
                                 disable=not out.is_terminal)
        self.tasks: dict[str, int] = {}

    def update(self, what: str, done: int, total: int, detail: str = "") -> None:
        label = self.LABELS.get(what, what)
        if what not in self.tasks:
            self.tasks[what] = self.progress.add_task(label, total=total)
        self.progress.update(self.tasks[what], completed=done, total=total, description=f"{label} ({detail})" if detail else label)

    def __enter__(self) -> "RunProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)


def _print_summary(summary, cfg: Settings) -> None:
    from rich.table import Table

    table = Table(title=f"run {cfg.run_id}: {len(summary.eras)} eras, feature set {cfg.feature_set}")
    for col in ("era", "rows", "tsfresh features", "rolling features"):
        table.add_column(col, justify="right" if col != "era" else "left", no_wrap=True)
    for row in summary.eras.itertuples():
        table.add_row(f"{row.compartment_id}:{row.era_id}", f"{row.rows:,}", str(row.tsfresh_features), str(row.rolling_features))
    Console(width=max(Console().width, 100)).print(table)
    secs = ", ".join(f"{k} {v:.2f} s" for k, v in sorted(summary.stage_seconds.items()))
    print(f"seconds per stage (summed over eras): {secs}")
    if summary.selection:
        print(f"selection: kept {summary.selection['kept']} of {summary.selection['features']} features over {summary.selection['eras']} eras")
    if summary.first_stored_seconds is not None:
        print(f"first era stored after {summary.first_stored_seconds:.1f} s")
    print(f"wall time {summary.wall_seconds:.1f} s")


# ---------------------------------------------------------------- replay
@app.command("replay")
def replay(
    stage_name: str = typer.Option(..., "--stage", help="preprocess | tsfresh | rolling | sink"),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="reprocess everything the input topic holds"),
    from_timestamp: Optional[str] = typer.Option(None, "--from-timestamp", help="reprocess messages published at or after this ISO 8601 time (UTC unless an offset is given)"),
    new_run_id: Optional[str] = typer.Option(None, "--run-id", help="store results under this new run id (a consumer group of its own); default: overwrite the same run"),
    run_now: bool = typer.Option(True, "--run/--no-run", help="process until caught up with the topic's end as of now (default), or only move the offsets"),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="give up processing after this many seconds"),
    force: bool = typer.Option(False, "--force", help="move the group even past records it has not processed yet (they are then skipped)"),
) -> None:
    """Backfill: move a stage's consumer group to the beginning or a timestamp and reprocess.

    From a timestamp, each partition starts at the first chunk of any era whose chunks span that
    time. A group is never moved forward past records it has not processed without --force.
    """
    import time as _time

    from streams.replay import CaughtUp, ReplayError, parse_timestamp, plan_replay
    from streams.runner import ComputeAbandoned
    from streams.workers import run_stage

    if from_beginning == (from_timestamp is not None):
        console.print("[red]error:[/red] give exactly one of --from-beginning and --from-timestamp")
        raise typer.Exit(2)
    cfg = settings()
    _logging(cfg)
    _require_broker(cfg)
    try:
        when = parse_timestamp(from_timestamp) if from_timestamp else None
        plan = plan_replay(cfg, stage_name, when, new_run_id, force=force)
    except ReplayError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"group {plan.group_id} moved; {plan.messages} message(s) to reprocess")
    if not run_now:
        console.print(f"start the stage to reprocess: erastream stage {stage_name}" + ("" if not new_run_id else f" --group {plan.group_id}"))
        return
    caught_up = CaughtUp(cfg, plan)
    deadline = None if timeout is None else _time.monotonic() + timeout
    try:
        run_stage(cfg, stage_name, group_id=plan.group_id, run_id=new_run_id,
                  until=lambda: caught_up() or (deadline is not None and _time.monotonic() > deadline))
    except ComputeAbandoned as exc:
        console.print(f"[red]error:[/red] {exc}; its chunks are in the dead-letter topic and group "
                      f"{plan.group_id} has committed up to it: run the replay's stage again to go on")
        raise typer.Exit(1) from None
    if not caught_up():
        console.print("[yellow]stopped before catching up[/yellow]")
        raise typer.Exit(1)
    console.print(f"replay of {stage_name} caught up" + (f"; results under run id {new_run_id}" if new_run_id else ""))


# ---------------------------------------------------------------- features
@app.command("features")
def features(
    output: Path = typer.Option(..., "--output", "-o", help="file to write"),
    fmt: str = typer.Option("csv", "--format", "-f", help="csv | parquet"),
    raw: bool = typer.Option(False, "--raw", help="every feature in long form instead of the selected matrix"),
    era: Optional[str] = typer.Option(None, "--era", help="only this era id"),
) -> None:
    """Export the selected era x feature matrix (or, with --raw, every feature in long form)."""
    from stages.clickhouse import ClickHouseError, connect, feature_matrix, latest_selection, raw_features

    if fmt not in ("csv", "parquet"):
        console.print(f"[red]error:[/red] --format must be csv or parquet, not {fmt!r}")
        raise typer.Exit(2)
    cfg = settings()
    try:
        client = connect(cfg.clickhouse_url, cfg.clickhouse_path)
    except ClickHouseError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if raw:
        frame = raw_features(client, cfg.run_id, era)
    else:
        matrix = feature_matrix(client, cfg.run_id, era)
        selection = latest_selection(client, cfg.run_id)
        if not matrix.empty and len(selection):
            kept = [f for f in selection.loc[selection["kept"].astype(bool), "feature"] if f in matrix.columns]
            matrix = matrix[kept]
        frame = matrix.reset_index()
    if frame.empty:
        console.print(f"[yellow]no features stored for run {cfg.run_id!r}{' era ' + era if era else ''}[/yellow]")
    output.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        frame.to_csv(output, index=False)
    else:
        frame.to_parquet(output, index=False)
    console.print(f"wrote {len(frame)} rows x {frame.shape[1]} columns to {output}")


# ---------------------------------------------------------------- dead letters, status
dlq_app = typer.Typer(help="Inspect the dead letters in the .dlq topics and replay them after a fix.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


@dlq_app.command("list")
def dlq_list(
    topic: Optional[list[str]] = typer.Option(None, "--topic", "-t", help="a dlq topic or the topic it twins (repeatable; default: all four)"),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", min=1, help="show at most N dead letters"),
    as_json: bool = typer.Option(False, "--json", help="JSON for machines"),
) -> None:
    """Show dead letters: where they failed (source topic, partition, offset, stage) and the error."""
    from streams.dead_letters import list_dead_letters, rich_table, to_json, to_tsv

    cfg = settings()
    _require_broker(cfg)
    letters = list_dead_letters(cfg, topic, limit)
    out = Console()
    if as_json:
        print(to_json(letters))
    elif out.is_terminal:
        Console(width=max(out.width, 120)).print(rich_table(letters))
    else:
        print(to_tsv(letters))


@dlq_app.command("replay")
def dlq_replay(
    topic: Optional[list[str]] = typer.Option(None, "--topic", "-t", help="a dlq topic or the topic it twins (repeatable; default: all four)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show what would be replayed, send nothing"),
    as_json: bool = typer.Option(False, "--json", help="JSON for machines"),
    timeout: float = typer.Option(120.0, "--timeout", help="give up after this many seconds (what was sent stays sent, once)"),
    group: str = typer.Option("erastream.dlq-replay", "--group", help="consumer group that remembers what was replayed"),
) -> None:
    """Send dead letters back to their source topic, each once (consumer group erastream.dlq-replay)."""
    import json

    from streams.dead_letters import ReplayError, replay_dead_letters

    cfg = settings()
    _logging(cfg)
    _require_broker(cfg)
    try:
        report = replay_dead_letters(cfg, topic, dry_run=dry_run, group_id=group, timeout=timeout)
    except ReplayError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        verb = "would replay" if dry_run else "replayed"
        targets = ", ".join(f"{n} to {t}" for t, n in report.by_target.items())
        print(f"{verb} {len(report.letters)} dead letter(s)" + (f": {targets}" if targets else ""))
    if not report.complete:
        console.print("[yellow]timed out before reaching the end of every dlq partition; run it again for the rest[/yellow]")
        raise typer.Exit(1)


@app.command("status")
def status(
    as_json: bool = typer.Option(False, "--json", help="JSON for machines"),
    scan_limit: int = typer.Option(10_000, "--scan-limit", min=1, help="read at most this many waiting messages per partition"),
) -> None:
    """Per stage: group state and members, lag, eras in flight, eras completed; dead letters per topic."""
    import json

    from streams.status import collect_status, render

    cfg = settings()
    _require_broker(cfg)
    report = collect_status(cfg, scan_limit=scan_limit)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        render(report, Console(width=max(Console().width, 120)))


def _register_global_options(typer_app: typer.Typer) -> None:
    for info in typer_app.registered_commands:
        info.callback = accept_global_options(info.callback)
    for group in typer_app.registered_groups:
        _register_global_options(group.typer_instance)


_register_global_options(app)


def main() -> None:
    from confluent_kafka import KafkaException

    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except KafkaException as exc:  # an unreachable or misconfigured broker: no traceback, say what failed
        error = exc.args[0] if exc.args else exc
        console.print(f"[red]error:[/red] Kafka: {getattr(error, 'str', lambda: error)()} "
                      "(is the broker running? check KAFKA_BOOTSTRAP_SERVERS or `erastream broker status`)")
        sys.exit(1)


if __name__ == "__main__":
    main()
