"""The compose files, merged the way Docker Compose merges them.

For each combination (base; base + local override; base + cloud) the test runs
`docker compose ... config` (the Compose v2 plugin) or, without the plugin, Debian's
`docker-compose ... config` (Compose v1.29), and asserts on the merged, interpolated result.
Neither needs a Docker daemon. Without either tool the compose tests skip and say why.

Reading the merged YAML: PyYAML when the test's interpreter has it; else Compose v2's
`config --format json`; else (Compose v1 only prints YAML) the interpreter that runs
docker-compose v1 itself, which always has PyYAML because Compose v1 is built on it.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE = "docker-compose.yml"
OVERRIDE = "docker-compose.override.yml"
CLOUD = "docker-compose.cloud.yml"

STAGES = ("preprocess", "tsfresh", "rolling", "sink")
GPU_STAGES = ("preprocess", "rolling", "sink")
COMBINATIONS = {
    "base": (BASE,),
    "override": (BASE, OVERRIDE),
    "cloud": (BASE, CLOUD),
}

# Variables that the compose files interpolate or that steer compose itself: a developer's
# shell must not change what the test sees.
_SCRUB = re.compile(
    r"^(COMPOSE_.*|DOCKER_HOST|FEATURE_SET|N_JOBS|BATCH_SIZE|TOPIC_PARTITIONS|RUN_ID|LOG_LEVEL|"
    r"GPU_.*|CPU_WORKERS|CUDA_VISIBLE_DEVICES|USE_SMART_DISTRIBUTION|CLICKHOUSE_.*|KAFKA_.*|"
    r"GRAFANA_.*|ERASTREAM_.*)$"
)


# ------------------------------------------------------------------ tools
def _run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not _SCRUB.match(k)}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@functools.lru_cache(maxsize=None)
def compose_tool() -> tuple[tuple[str, ...], str] | str:
    """(command prefix, "v2" | "v1"), or the reason why neither is usable."""
    if shutil.which("docker"):
        try:
            if _run(["docker", "compose", "version"], timeout=30).returncode == 0:
                return ("docker", "compose"), "v2"
        except (OSError, subprocess.SubprocessError):
            pass
    exe = shutil.which("docker-compose")
    if exe:
        try:
            probe = _run([exe, "version", "--short"], timeout=30)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"docker-compose at {exe} does not run: {exc}"
        if probe.returncode == 0:
            version = probe.stdout.strip().lstrip("v")
            return (exe,), "v2" if version.split(".")[0] not in ("1", "") else "v1"
        return f"docker-compose at {exe} does not run: {probe.stderr.strip()[:200]}"
    return (
        "no Docker Compose: neither the `docker compose` plugin nor `docker-compose` "
        "(Debian: apt-get install docker-compose) is installed"
    )


def _pyyaml_interpreter(exe: str) -> str | None:
    """The Python that runs a docker-compose v1 script (it imports PyYAML), if it is one."""
    try:
        first = Path(exe).resolve().read_bytes()[:200].split(b"\n", 1)[0].decode()
    except (OSError, UnicodeDecodeError):
        return None
    if not first.startswith("#!"):
        return None
    parts = first[2:].split()
    if parts and parts[0].endswith("/env"):
        parts = parts[1:]
    if not parts or "python" not in Path(parts[0]).name:
        return None
    python = shutil.which(parts[0]) or parts[0]
    ok = _run([python, "-c", "import yaml"], timeout=30)
    return python if ok.returncode == 0 else None


@functools.lru_cache(maxsize=None)
def yaml_loader():
    """A function from YAML text to Python data, or the reason why there is none."""
    try:
        import yaml  # noqa: F401

        return lambda text: __import__("yaml").safe_load(text)
    except ImportError:
        pass
    tool = compose_tool()
    if not isinstance(tool, str) and tool[1] == "v1":
        python = _pyyaml_interpreter(tool[0][-1])
        if python:
            def load(text: str):
                proc = subprocess.run(
                    [python, "-c", "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
                    input=text, capture_output=True, text=True, timeout=60,
                )
                assert proc.returncode == 0, proc.stderr
                return json.loads(proc.stdout)

            return load
    return "PyYAML is not installed in this interpreter (and no docker-compose v1 interpreter has it)"


#: The passwords the compose files demand (no defaults), as a test's `.env` sets them.
TEST_PASSWORDS = {"CLICKHOUSE_PASSWORD": "ch-test-pw", "GRAFANA_PASSWORD": "gf-test-pw"}


@functools.lru_cache(maxsize=None)
def env_file(**values: str) -> str:
    """An env file with these values (Compose v1 refuses /dev/null: "is not a file")."""
    fd, path = tempfile.mkstemp(prefix="erastream-compose-", suffix=".env")
    with os.fdopen(fd, "w") as fh:
        fh.write("".join(f"{k}={v}\n" for k, v in values.items()))
    atexit.register(os.unlink, path)
    return path


def compose_config(combination: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`compose -f ... config` of one combination with only `env` as its .env (every profile enabled)."""
    tool = compose_tool()
    if isinstance(tool, str):
        pytest.skip(tool)
    prefix, version = tool
    files: list[str] = []
    for name in COMBINATIONS[combination]:
        files += ["-f", name]
    # An env file of the test's own: a developer's .env next to the compose files must not leak in.
    cmd = [*prefix, *files, "--project-directory", str(ROOT), "--env-file", env_file(**env), "--profile", "ingest", "config"]
    if isinstance(yaml_loader(), str) and version == "v2":
        cmd.append("--format=json")
    return _run(cmd)


@functools.lru_cache(maxsize=None)
def merged(combination: str) -> dict:
    """`compose -f ... config` of one combination, as data, with the test passwords set."""
    tool = compose_tool()
    if isinstance(tool, str):
        pytest.skip(tool)
    prefix, version = tool
    loader = yaml_loader()
    if isinstance(loader, str) and version != "v2":
        pytest.skip(f"{loader}; Compose v1 prints YAML only")
    proc = compose_config(combination, TEST_PASSWORDS)
    assert proc.returncode == 0, f"{' '.join(proc.args)} failed:\n{proc.stderr}"
    data = json.loads(proc.stdout) if isinstance(loader, str) else loader(proc.stdout)
    assert isinstance(data, dict) and "services" in data, proc.stdout[:500]
    return data


def load_yaml_file(path: Path):
    loader = yaml_loader()
    if isinstance(loader, str):
        pytest.skip(loader)
    return loader(path.read_text())


# ------------------------------------------------------------------ normalising helpers
def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # KEY=VALUE list form
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def command_of(service: dict) -> list[str]:
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def depends_of(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def mounts_of(service: dict) -> list[tuple[str, str]]:
    """(source, target) of every volume entry, short or long syntax."""
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, dict):
            out.append((str(v.get("source", "")), str(v.get("target", ""))))
        else:
            parts = str(v).split(":")
            if len(parts) >= 2:
                out.append((parts[0], parts[1]))
    return out


def dockerfile_of(service: dict) -> str | None:
    build = service.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        return "Dockerfile"
    return build.get("dockerfile", "Dockerfile")


def gpu_devices(service: dict) -> list[dict]:
    devices = (((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
    return [d for d in devices if d.get("driver") == "nvidia" and "gpu" in (d.get("capabilities") or [])]


# ------------------------------------------------------------------ every combination
@pytest.mark.parametrize("combination", list(COMBINATIONS))
def test_every_stage_service_present(combination):
    services = merged(combination)["services"]
    for name in (*STAGES, "kafka", "clickhouse", "topics", "ingest", "prometheus", "grafana"):
        assert name in services, f"{combination}: service {name} missing"
    for stage in STAGES:
        cmd = command_of(services[stage])
        assert cmd[:2] == ["stage", stage], f"{combination}: {stage} runs {cmd}"


@pytest.mark.parametrize("combination", list(COMBINATIONS))
def test_every_stage_depends_on_kafka_and_topics(combination):
    services = merged(combination)["services"]
    for stage in STAGES:
        deps = depends_of(services[stage])
        assert deps.get("kafka") == "service_healthy", f"{combination}: {stage} depends_on {deps}"
        assert deps.get("topics") == "service_completed_successfully", f"{combination}: {stage} depends_on {deps}"
    assert depends_of(services["sink"]).get("clickhouse") == "service_healthy"
    assert depends_of(services["topics"]).get("kafka") == "service_healthy"
    assert command_of(services["topics"]) == ["topics", "create"]
    assert "healthcheck" in services["kafka"] and "healthcheck" in services["clickhouse"]


@pytest.mark.parametrize("combination", list(COMBINATIONS))
def test_common_environment(combination):
    services = merged(combination)["services"]
    for name in (*STAGES, "topics", "ingest"):
        env = env_of(services[name])
        assert env.get("KAFKA_BOOTSTRAP_SERVERS") == "kafka:9092", name
        assert env.get("CLICKHOUSE_URL") == "http://default:ch-test-pw@clickhouse:8123/default", name
        for key in ("KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD",
                    "KAFKA_SSL_CA_LOCATION", "KAFKA_CLIENT_CONFIG"):
            assert env.get(key) == "", f"{combination}: {name} does not forward {key} (empty: unset)"
        assert env.get("METRICS_PORT") == "9108", name
        for key in ("FEATURE_SET", "N_JOBS", "BATCH_SIZE", "TOPIC_PARTITIONS", "LOG_LEVEL"):
            assert env.get(key), f"{combination}: {name} lacks {key}"


def published_ports(service: dict) -> list[tuple[str, str, str]]:
    """(host ip, host port, container port) of each published port, short or long syntax."""
    out = []
    for p in service.get("ports") or []:
        if isinstance(p, dict):  # Compose v2's long form
            out.append((str(p.get("host_ip", "")), str(p.get("published", "")), str(p.get("target", ""))))
        else:
            parts = str(p).split("/")[0].split(":")
            parts = [""] * (3 - len(parts)) + parts
            out.append((parts[0], parts[1], parts[2]))
    return out


@pytest.mark.parametrize("combination", list(COMBINATIONS))
def test_published_ports_listen_on_localhost_only(combination):
    services = merged(combination)["services"]
    published = {name: published_ports(svc) for name, svc in services.items() if svc.get("ports")}
    assert {"kafka", "clickhouse", "prometheus", "grafana"} <= set(published), published
    for name, ports in published.items():
        for host_ip, host_port, target in ports:
            assert host_ip == "127.0.0.1", f"{combination}: {name} publishes {host_port}:{target} on {host_ip or 'every address'}"
            assert host_port and target, (name, ports)


@pytest.mark.parametrize("missing", sorted(TEST_PASSWORDS))
def test_compose_refuses_to_start_without_each_password(missing):
    env = {k: v for k, v in TEST_PASSWORDS.items() if k != missing}
    proc = compose_config("base", env)
    assert proc.returncode != 0, f"compose config succeeded without {missing}"
    assert f"set {missing}" in proc.stderr, proc.stderr


def test_no_password_has_a_default_in_the_compose_files():
    for name in (BASE, OVERRIDE, CLOUD):
        text = (ROOT / name).read_text()
        defaults = re.findall(r"\$\{(\w*PASSWORD\w*):-[^}]", text)  # `:-}` (empty: unset) is no password
        assert not defaults, f"{name}: {defaults} have default values; take them from the environment"
        assert "erastream@" not in text, f"{name}: a literal password in a URL"
    example = (ROOT / ".env.example").read_text()
    for var in TEST_PASSWORDS:
        assert re.search(rf"^{var}=$", example, re.M), f".env.example lacks an empty {var}="
    assert ".env" in (ROOT / ".gitignore").read_text().split()


# ------------------------------------------------------------------ base
def test_base_defaults_and_cpu_only():
    services = merged("base")["services"]
    for stage in STAGES:
        env = env_of(services[stage])
        assert env["FEATURE_SET"] == "efficient"
        assert dockerfile_of(services[stage]) == "Dockerfile"
        assert not gpu_devices(services[stage]), f"base must run without GPUs: {stage}"


def test_base_kafka_is_single_node_kraft():
    kafka = merged("base")["services"]["kafka"]
    assert re.match(r"apache/kafka:4\.", kafka["image"]), kafka["image"]
    env = env_of(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_NODE_ID"] == "1"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert "localhost:9094" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert any(target == env["KAFKA_LOG_DIRS"] for _, target in mounts_of(kafka))
    assert any("9094" in str(p) for p in kafka.get("ports", []))


def test_base_clickhouse_and_ingest_profile():
    services = merged("base")["services"]
    ch = services["clickhouse"]
    assert re.match(r"clickhouse/clickhouse-server:2[56]\.", ch["image"]), ch["image"]
    assert env_of(ch)["CLICKHOUSE_PASSWORD"] == "ch-test-pw"
    assert env_of(services["grafana"])["GF_SECURITY_ADMIN_PASSWORD"] == "gf-test-pw"
    assert any("8123" in str(p) for p in ch.get("ports", []))
    ingest = services["ingest"]
    assert ingest.get("profiles") == ["ingest"]
    assert command_of(ingest) == ["ingest", "--follow", "/landing"]
    assert any(src.endswith("landing") and target == "/landing" for src, target in mounts_of(ingest))


# ------------------------------------------------------------------ local override
def test_override_is_minimal_cpu_debug_with_source_mounted():
    services = merged("override")["services"]
    root = str(ROOT)
    for stage in STAGES:
        svc = services[stage]
        env = env_of(svc)
        assert env["FEATURE_SET"] == "minimal", stage
        assert env["GPU_WORKERS"] == "0", stage
        assert env["BATCH_SIZE"] == "2000", stage
        assert env["LOG_LEVEL"] == "DEBUG", stage
        assert env.get("PYTHONPATH") == "/app", stage
        assert (root, "/app") in mounts_of(svc), f"{stage}: {mounts_of(svc)}"
        assert not gpu_devices(svc), stage


# ------------------------------------------------------------------ cloud
def test_cloud_is_comprehensive_with_gpu_stages():
    services = merged("cloud")["services"]
    base_partitions = int(env_of(merged("base")["services"]["topics"])["TOPIC_PARTITIONS"])
    for stage in STAGES:
        env = env_of(services[stage])
        assert env["FEATURE_SET"] == "comprehensive", stage
        assert env["GPU_WORKERS"] == "4" and env["CPU_WORKERS"] == "4", stage
        assert int(env["TOPIC_PARTITIONS"]) > base_partitions, stage
    assert int(env_of(services["topics"])["TOPIC_PARTITIONS"]) > base_partitions
    for stage in GPU_STAGES:
        assert gpu_devices(services[stage]), f"cloud: {stage} reserves no GPU"
        assert dockerfile_of(services[stage]) == "Dockerfile.gpu", stage
    tsfresh = services["tsfresh"]
    assert not gpu_devices(tsfresh)
    assert dockerfile_of(tsfresh) == "Dockerfile"
    cmd = command_of(tsfresh)
    assert "--workers" in cmd and cmd[cmd.index("--workers") + 1] == "4", cmd


# ------------------------------------------------------------------ monitoring and images
def test_prometheus_scrapes_every_stage():
    config = load_yaml_file(ROOT / "infra/prometheus/prometheus.yml")
    found = {}
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                found[name] = (sd.get("port"), job.get("metrics_path", "/metrics"))
        for sc in job.get("static_configs", []):
            for target in sc["targets"]:
                host, _, port = target.partition(":")
                found[host] = (int(port or 0), job.get("metrics_path", "/metrics"))
    for stage in STAGES:
        assert found.get(stage) == (9108, "/metrics"), f"{stage}: {found.get(stage)}"


def test_grafana_provisioning_and_dashboard():
    prov = ROOT / "infra/grafana/provisioning"
    datasource = load_yaml_file(prov / "datasources/prometheus.yml")["datasources"][0]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    provider = load_yaml_file(prov / "dashboards/erastream.yml")["providers"][0]
    grafana = merged("base")["services"]["grafana"]
    assert any(target == provider["options"]["path"] for _, target in mounts_of(grafana))
    dashboard = json.loads((ROOT / "infra/grafana/dashboards/erastream.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for metric, window in (
        ("erastream_messages_total", "[1m]"),
        ("erastream_era_seconds_bucket", "[5m]"),
        ("erastream_consumer_lag", None),
        ("erastream_dead_letters_total", "[5m]"),
    ):
        hits = [e for e in exprs if metric in e]
        assert hits, f"no panel for {metric}"
        assert all("stage" in e for e in hits), hits
        if window:
            assert any(f"rate({metric}" in e and window in e for e in hits), hits
    assert any(e.startswith("histogram_quantile(0.9,") for e in exprs)
    for target in (t for p in dashboard["panels"] for t in p.get("targets", [])):
        assert target["datasource"]["uid"] == datasource["uid"]


def test_dockerfiles():
    cpu = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", cpu, re.M)
    assert re.search(r"pip install\s+(--no-deps\s+)?\.(\s|$)", cpu)
    assert re.search(r'^ENTRYPOINT \["erastream"\]', cpu, re.M)
    gpu = (ROOT / "Dockerfile.gpu").read_text()
    assert re.search(r"rapidsai/base:26\.10-cuda12\b", gpu)
    assert ".[gpu]" in gpu
    assert re.search(r'^ENTRYPOINT \["erastream"\]', gpu, re.M)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored and "data" in ignored


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
