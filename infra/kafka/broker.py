"""A real, single-node Apache Kafka (KRaft) broker for development, tests and the local job.

The broker's jars come from Maven Central (see pom.xml beside this file) and are
cached outside the repository, so only the first start downloads. One node is
both controller and broker; internal topics use replication factor 1 so that
transactions work.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

KAFKA_VERSION = "4.4.0"
POM = Path(__file__).with_name("pom.xml")
LOG4J_PROPERTIES = Path(__file__).with_name("log4j2.properties")

Log = Callable[[str], None]


class BrokerError(RuntimeError):
    """The local broker could not be provisioned, started or stopped."""


def cache_root() -> Path:
    """Where downloaded jars live: ERASTREAM_CACHE_DIR, else ~/.cache/erastream."""
    env = os.environ.get("ERASTREAM_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "erastream"


@dataclass(frozen=True)
class KafkaRuntime:
    home: Path

    @property
    def libs(self) -> Path:
        return self.home / "libs"

    @property
    def classpath(self) -> str:
        return str(self.libs / "*")

    def download_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.libs.glob("*.jar"))


def provision(cache: Path | None = None, log: Log = print) -> KafkaRuntime:
    """Resolve the broker's jars once; later calls return the cached copy without Maven."""
    pom_hash = hashlib.sha256(POM.read_bytes()).hexdigest()[:10]
    home = (cache or cache_root()) / f"kafka-{KAFKA_VERSION}-{pom_hash}"
    runtime = KafkaRuntime(home)
    if (home / ".complete").exists():
        return runtime
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven (mvn) is needed once to fetch the Kafka jars; install it (apt-get install maven)")
    if shutil.which("java") is None:
        raise BrokerError("Java 17+ is needed to run the Kafka broker; install a JDK (apt-get install openjdk-17-jre)")
    home.mkdir(parents=True, exist_ok=True)
    staging = home / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    log(f"fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central into {home} (once)")
    started = time.monotonic()
    cmd = [
        mvn, "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}", "-DincludeScope=runtime",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise BrokerError(f"Maven could not resolve org.apache.kafka:kafka_2.13:{KAFKA_VERSION}:\n{tail}")
    shutil.rmtree(runtime.libs, ignore_errors=True)
    staging.rename(runtime.libs)
    (home / ".complete").write_text(json.dumps({"seconds": round(time.monotonic() - started, 1)}))
    log(f"fetched {runtime.download_bytes() / 1e6:.1f} MB of jars in {time.monotonic() - started:.1f} s")
    return runtime


@dataclass(frozen=True)
class SaslSslListener:
    """An extra SASL_SSL listener beside PLAINTEXT, for testing clients' security settings.

    TLS uses a PKCS12 keystore holding the broker's key and certificate. PLAIN users live in
    the listener's JAAS config; SCRAM-SHA-512 users are written into the cluster metadata
    when the storage is formatted (KRaft keeps SCRAM credentials there), so they are fixed
    at the first start of a state directory. The broker-to-broker and controller traffic
    stays on PLAINTEXT.
    """

    keystore: Path
    keystore_password: str
    plain_users: dict[str, str] = field(default_factory=dict)
    scram_users: dict[str, str] = field(default_factory=dict)

    def properties(self) -> dict[str, str]:
        plain = " ".join(f'user_{name}="{pw}"' for name, pw in self.plain_users.items())
        prefix = "listener.name.sasl_ssl."
        return {
            "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512",
            f"{prefix}plain.sasl.jaas.config": f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain};",
            f"{prefix}scram-sha-512.sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            f"{prefix}ssl.keystore.type": "PKCS12",
            f"{prefix}ssl.keystore.location": str(Path(self.keystore).resolve()),
            f"{prefix}ssl.keystore.password": self.keystore_password,
            f"{prefix}ssl.key.password": self.keystore_password,
        }

    def format_args(self) -> list[str]:
        args: list[str] = []
        for name, pw in self.scram_users.items():
            args += ["--add-scram", f"SCRAM-SHA-512=[name={name},password={pw}]"]
        return args


@dataclass
class BrokerState:
    pid: int
    port: int
    controller_port: int
    started_at: float
    sasl_ssl_port: int | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_ssl_bootstrap(self) -> str | None:
        return f"127.0.0.1:{self.sasl_ssl_port}" if self.sasl_ssl_port else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def _is_kafka(pid: int) -> bool:
    try:
        return b"kafka.Kafka" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class LocalBroker:
    """One KRaft node whose state, config and logs live in `state_dir`.

    Ports are chosen on the first start and kept, so clients reconnect to the
    same address after a restart.
    """

    def __init__(
        self,
        state_dir: Path,
        runtime: KafkaRuntime | None = None,
        heap: str = "768m",
        log: Log = print,
        sasl_ssl: SaslSslListener | None = None,
    ):
        self.state_dir = Path(state_dir).resolve()
        self.sasl_ssl = sasl_ssl
        self._runtime = runtime
        self.heap = heap
        self.log = log
        self._child: subprocess.Popen[bytes] | None = None

    # paths
    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "logs" / "server.log"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "kraft-data"

    @property
    def runtime(self) -> KafkaRuntime:
        if self._runtime is None:
            self._runtime = provision(log=self.log)
        return self._runtime

    def status(self) -> BrokerState | None:
        """The running broker's state, or None when it is not running."""
        state = self._read_state()
        if state and state.pid and _pid_alive(state.pid) and _is_kafka(state.pid):
            return state
        return None

    @property
    def bootstrap(self) -> str:
        state = self.status()
        if state is None:
            raise BrokerError(f"the local broker in {self.state_dir} is not running")
        return state.bootstrap

    def start(self, timeout: float = 120.0) -> BrokerState:
        running = self.status()
        if running:
            return running
        runtime = self.runtime
        previous = self._read_state()
        port = previous.port if previous else free_port()
        cport = previous.controller_port if previous else free_port()
        sport = None
        if self.sasl_ssl is not None:
            sport = previous.sasl_ssl_port if previous and previous.sasl_ssl_port else free_port()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        config = self._write_config(port, cport, sport)
        if not (self.data_dir / "meta.properties").exists():
            self._format(runtime, config)
        started = time.monotonic()
        with open(self.log_file, "ab") as out:
            self._child = subprocess.Popen(
                self._java(runtime, "kafka.Kafka", str(config)),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.state_dir,
            )
        state = BrokerState(pid=self._child.pid, port=port, controller_port=cport, started_at=time.time(), sasl_ssl_port=sport)
        self.state_file.write_text(json.dumps(asdict(state)))
        self._wait_ready(state, started + timeout)
        return state

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM, then SIGKILL after `timeout`. Returns False if it was not running."""
        state = self.status()
        if state is None:
            return False
        os.kill(state.pid, signal.SIGTERM)
        if not self._wait_exit(state.pid, timeout):
            self.log(f"broker pid {state.pid} ignored SIGTERM for {timeout:.0f} s; killing it")
            os.kill(state.pid, signal.SIGKILL)
            self._wait_exit(state.pid, 10)
        return True

    def kill(self) -> None:
        """SIGKILL without a clean shutdown (for crash tests)."""
        state = self.status()
        if state:
            os.kill(state.pid, signal.SIGKILL)
            self._wait_exit(state.pid, 10)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # internals
    def _java(self, runtime: KafkaRuntime, main: str, *args: str) -> list[str]:
        return [
            "java", f"-Xmx{self.heap}", "-Xms128m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={LOG4J_PROPERTIES}",
            f"-Dkafka.logs.dir={self.log_file.parent}",
            "-cp", runtime.classpath, main, *args,
        ]

    def _write_config(self, port: int, cport: int, sport: int | None = None) -> Path:
        config = self.state_dir / "server.properties"
        listeners = f"PLAINTEXT://127.0.0.1:{port}"
        protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        if sport is not None:
            listeners += f",SASL_SSL://127.0.0.1:{sport}"
            protocols += ",SASL_SSL:SASL_SSL"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{cport}",
            "listeners": f"{listeners},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": listeners,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": protocols,
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.hours": "168",
            "log.segment.bytes": str(64 * 1024 * 1024),
        }
        if sport is not None and self.sasl_ssl is not None:
            props.update(self.sasl_ssl.properties())
        config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        config.chmod(0o600)  # it may hold the listener's passwords
        return config

    def _format(self, runtime: KafkaRuntime, config: Path) -> None:
        cluster_id = "-"
        while cluster_id.startswith("-"):  # the storage tool would read a leading "-" as an option
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        proc = subprocess.run(
            self._java(
                runtime, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config),
                *(self.sasl_ssl.format_args() if self.sasl_ssl else []),
            ),
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise BrokerError(f"formatting KRaft storage failed:\n{(proc.stdout + proc.stderr)[-3000:]}")

    def _wait_ready(self, state: BrokerState, deadline: float) -> None:
        from confluent_kafka.admin import AdminClient  # heavy import, only when starting

        admin = AdminClient({"bootstrap.servers": state.bootstrap, "log_level": 0, "logger": _silent_logger()})
        while time.monotonic() < deadline:
            if not _pid_alive(state.pid):
                raise BrokerError(f"the Kafka broker exited during start; log tail:\n{self.log_tail()}")
            try:
                admin.list_topics(timeout=2)
                return
            except Exception:
                time.sleep(0.3)
        raise BrokerError(f"the Kafka broker did not answer metadata in time; log tail:\n{self.log_tail()}")

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._child is not None and self._child.pid == pid:
                try:
                    self._child.wait(timeout=0.2)
                    return True
                except subprocess.TimeoutExpired:
                    continue
            if not _pid_alive(pid):
                return True
            time.sleep(0.2)
        return not _pid_alive(pid)

    def _read_state(self) -> BrokerState | None:
        try:
            return BrokerState(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def _silent_logger():
    import logging

    logger = logging.getLogger("erastream.broker.probe")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger
