"""Runtime settings: environment first, CLI flags override.

Variable names are those of the original deployment (no prefix), so existing
.env files and compose files keep working.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as _SourceError

FeatureSet = Literal["minimal", "efficient", "comprehensive"]
FEATURE_SETS: tuple[str, ...] = ("minimal", "efficient", "comprehensive")

_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_WINDOW_RE = re.compile(r"^\d+(min|h|s|D)$")

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
#: Settings whose values are never shown, not even in an error about them.
SECRET_FIELDS = frozenset({"kafka_sasl_password", "kafka_ssl_key_password"})
#: Each explicit Kafka security setting and the librdkafka property it sets.
KAFKA_SECURITY_PROPERTIES: dict[str, str] = {
    "kafka_security_protocol": "security.protocol",
    "kafka_sasl_mechanism": "sasl.mechanism",
    "kafka_sasl_username": "sasl.username",
    "kafka_sasl_password": "sasl.password",
    "kafka_ssl_ca_location": "ssl.ca.location",
    "kafka_ssl_certificate_location": "ssl.certificate.location",
    "kafka_ssl_key_location": "ssl.key.location",
    "kafka_ssl_key_password": "ssl.key.password",
}
_FILE_FIELDS = ("kafka_ssl_ca_location", "kafka_ssl_certificate_location", "kafka_ssl_key_location", "kafka_client_config")


class SettingsError(ValueError):
    """A setting has a value the pipeline cannot run with; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="",
        case_sensitive=False,
        extra="ignore",
        env_parse_none_str="",
    )

    # What to compute
    feature_set: FeatureSet = Field("efficient", description="tsfresh feature set")
    feature_engine: Literal["fast", "tsfresh"] = Field(
        "fast", description="fast: tsfresh's numbers from stages.feature_engine's kernels; tsfresh: tsfresh itself"
    )
    n_jobs: int = Field(1, ge=0, description="tsfresh worker processes per stage process (0: in-process)")
    batch_size: int = Field(10_000, ge=1, description="rows per era chunk message")
    rolling_windows: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["5min", "15min", "60min", "240min"],
        description="time-based rolling windows",
    )
    variance_threshold: float = Field(1e-10, ge=0, description="drop features whose variance is at most this")
    correlation_threshold: float = Field(0.95, gt=0, le=1, description="drop one of each pair with |r| above this")
    pca_components: int = Field(0, ge=0, description="PCA components to report (0: no PCA)")

    # Hardware
    cuda_visible_devices: str | None = Field(None, description="GPUs visible to GPU stages")
    gpu_memory_limit: str | None = Field(None, description="per-GPU memory limit, e.g. 8GB")
    gpu_workers: int = Field(0, ge=0, description="GPU worker processes")
    cpu_workers: int = Field(1, ge=1, description="CPU worker processes")
    gpu_threshold: int = Field(100_000, ge=0, description="eras with at least this many rows go to the GPU")
    use_smart_distribution: bool = Field(True, description="route eras to GPU or CPU by size")

    # Services
    kafka_bootstrap_servers: str | None = Field(None, description="unset: the local broker from infra/")
    clickhouse_url: str | None = Field(None, description="unset: embedded chDB under DATA_DIR/clickhouse")
    data_dir: Path = Field(Path("data"), description="local state: chDB data, broker state, follow state")
    topic_partitions: int = Field(4, ge=1, description="partitions of each pipeline topic")
    consumer_poll_timeout_s: float = Field(1.0, gt=0, description="seconds one poll waits")
    session_timeout_ms: int = Field(45_000, ge=6_000, description="consumer group session timeout")
    max_poll_interval_ms: int = Field(900_000, ge=10_000, description="must exceed the longest era")
    kafka_transaction_timeout_ms: int = Field(
        60_000, ge=1_000, description="transaction.timeout.ms of every transactional producer"
    )
    era_max_attempts: int = Field(
        3, ge=1, description="an era whose compute ended its worker this many times is dead-lettered"
    )
    era_compute_timeout_s: float = Field(
        3600.0, ge=0, description="seconds one era's compute may take; longer: abandoned, dead-lettered, worker process replaced (0: no limit)"
    )
    era_stall_timeout_s: float = Field(
        3600.0, gt=0, description="seconds without a new chunk after which an unfinished era is dead-lettered"
    )
    run_id: str = Field("default", min_length=1, description="run id stamped on every message")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    metrics_port: int = Field(0, ge=0, description="Prometheus metrics port (0: off)")

    # Kafka client security (every client: streams/kafka.py). Unset: PLAINTEXT.
    kafka_security_protocol: SecurityProtocol | None = Field(
        None, description="PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL"
    )
    kafka_sasl_mechanism: SaslMechanism | None = Field(None, description="PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512")
    kafka_sasl_username: str | None = Field(None, description="SASL user")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (never printed)")
    kafka_ssl_ca_location: Path | None = Field(None, description="PEM file of the CA that signed the broker's certificate")
    kafka_ssl_certificate_location: Path | None = Field(None, description="PEM client certificate (mutual TLS)")
    kafka_ssl_key_location: Path | None = Field(None, description="PEM private key of the client certificate")
    kafka_ssl_key_password: SecretStr | None = Field(None, description="password of the private key (never printed)")
    kafka_client_config: Path | None = Field(
        None, description="librdkafka properties file (key=value lines); the settings above win over it"
    )

    @field_validator("rolling_windows", mode="before")
    @classmethod
    def _split_windows(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [w.strip() for w in value.split(",") if w.strip()]
        return value

    @field_validator("rolling_windows")
    @classmethod
    def _check_windows(cls, value: list[str]) -> list[str]:
        bad = [w for w in value if not _WINDOW_RE.match(w)]
        if bad or not value:
            raise ValueError(f"windows look like 5min, 2h, 30s or 1D; got {bad or value}")
        return value

    @field_validator("gpu_memory_limit")
    @classmethod
    def _check_memory(cls, value: str | None) -> str | None:
        if value is not None and not _MEMORY_RE.match(value):
            raise ValueError("a size such as 8GB, 512MiB or 1073741824")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper_protocol(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator(*_FILE_FIELDS)
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None:
            value = value.expanduser()
            if not value.is_file():
                raise ValueError("no such file")
            if not os.access(value, os.R_OK):
                raise ValueError("file not readable")
        return value

    @model_validator(mode="after")
    def _check_kafka_security(self) -> "Settings":
        problems = kafka_security_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def kafka_client_properties(self) -> dict[str, str]:
        """KAFKA_CLIENT_CONFIG's properties, {} when unset."""
        return read_client_config(self.kafka_client_config) if self.kafka_client_config else {}

    def kafka_security_properties(self) -> dict[str, str]:
        """The librdkafka security properties: KAFKA_CLIENT_CONFIG's, the explicit settings over them."""
        props = self.kafka_client_properties()
        for field_name, key in KAFKA_SECURITY_PROPERTIES.items():
            value = getattr(self, field_name)
            if value is None:
                continue
            props[key] = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        return props

    @property
    def clickhouse_path(self) -> Path:
        return self.data_dir / "clickhouse"

    @property
    def broker_state_dir(self) -> Path:
        return self.data_dir / "broker"


class ClientConfigError(ValueError):
    """KAFKA_CLIENT_CONFIG cannot be read as key=value lines."""


def read_client_config(path: Path) -> dict[str, str]:
    """A librdkafka properties file: `key=value` lines, `#`/`!` comments and blank lines skipped.

    Errors name the file and line but never echo the line: it may hold a password.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ClientConfigError(f"{path}: cannot read it ({exc.__class__.__name__})") from None
    props: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#!":
            continue
        key, sep, value = stripped.partition("=")
        key = key.strip()
        if not sep or not key or " " in key:
            raise ClientConfigError(f"{path} line {number}: expected key=value (a librdkafka property)")
        props[key] = value.strip()
    return props


def kafka_security_problems(settings: Settings) -> list[str]:
    """What is wrong with the Kafka security settings taken together; each names its variables."""
    try:
        file_props = settings.kafka_client_properties()
    except ClientConfigError as exc:
        return [f"KAFKA_CLIENT_CONFIG={exc}"]
    origin = f" (from KAFKA_CLIENT_CONFIG {settings.kafka_client_config})" if settings.kafka_client_config else ""
    protocol = settings.kafka_security_protocol or file_props.get("security.protocol", "PLAINTEXT").upper()
    from_file = not settings.kafka_security_protocol and "security.protocol" in file_props
    protocol_var = f"security.protocol{origin}" if from_file else "KAFKA_SECURITY_PROTOCOL"
    problems = []
    if protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
        return [f"{protocol_var}={protocol!r} is invalid: one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"]
    sasl, tls = protocol.startswith("SASL_"), protocol.endswith("SSL")
    given = lambda *names: [n.upper() for n in names if getattr(settings, n) is not None]  # noqa: E731
    sasl_given = given("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
    if sasl_given and not sasl:
        problems.append(f"{', '.join(sasl_given)} set but {protocol_var} is {protocol}: SASL needs SASL_SSL or SASL_PLAINTEXT")
    tls_given = given("kafka_ssl_ca_location", "kafka_ssl_certificate_location", "kafka_ssl_key_location", "kafka_ssl_key_password")
    if tls_given and not tls:
        problems.append(f"{', '.join(tls_given)} set but {protocol_var} is {protocol}: TLS needs SSL or SASL_SSL")
    if sasl:
        mechanism = settings.kafka_sasl_mechanism or file_props.get("sasl.mechanism", file_props.get("sasl.mechanisms"))
        if not mechanism:
            problems.append(f"{protocol_var}={protocol} needs KAFKA_SASL_MECHANISM (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)")
        elif mechanism.upper() in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            if not (settings.kafka_sasl_username or file_props.get("sasl.username")):
                problems.append(f"SASL {mechanism.upper()} needs KAFKA_SASL_USERNAME")
            if settings.kafka_sasl_password is None and "sasl.password" not in file_props:
                problems.append(f"SASL {mechanism.upper()} needs KAFKA_SASL_PASSWORD")
    cert = settings.kafka_ssl_certificate_location or file_props.get("ssl.certificate.location")
    key = settings.kafka_ssl_key_location or file_props.get("ssl.key.location")
    if bool(cert) != bool(key):
        problems.append("KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION go together (a client certificate and its key)")
    if settings.kafka_ssl_key_password is not None and not key:
        problems.append("KAFKA_SSL_KEY_PASSWORD set without KAFKA_SSL_KEY_LOCATION")
    return problems


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment with non-None overrides (CLI flags) on top.

    Raises SettingsError naming the variable and what it accepts.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    except _SourceError as exc:  # a value the environment source itself cannot parse
        raise SettingsError(f"invalid settings: {exc}") from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if not err["loc"]:  # a check across several settings: its message names them
            lines.append(msg)
            continue
        field = str(err["loc"][0])
        if field in SECRET_FIELDS:
            lines.append(f"{field.upper()} is invalid: {msg}")
            continue
        info = Settings.model_fields.get(field)
        allowed = ""
        if field == "feature_set":
            allowed = f"; allowed values: {', '.join(FEATURE_SETS)}"
        elif info is not None and info.description:
            allowed = f" ({info.description})"
        lines.append(f"{field.upper()}={err.get('input')!r} is invalid: {msg}{allowed}")
    return "invalid settings:\n  " + "\n  ".join(lines)
