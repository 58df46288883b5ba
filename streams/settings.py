"""Runtime settings: environment first, CLI flags override.

Variable names are those of the original deployment (no prefix), so existing
.env files and compose files keep working.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as _SourceError

FeatureSet = Literal["minimal", "efficient", "comprehensive"]
FEATURE_SETS: tuple[str, ...] = ("minimal", "efficient", "comprehensive")

_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_WINDOW_RE = re.compile(r"^\d+(min|h|s|D)$")


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
    run_id: str = Field("default", min_length=1, description="run id stamped on every message")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    metrics_port: int = Field(0, ge=0, description="Prometheus metrics port (0: off)")

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

    @property
    def clickhouse_path(self) -> Path:
        return self.data_dir / "clickhouse"

    @property
    def broker_state_dir(self) -> Path:
        return self.data_dir / "broker"


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
        field = str(err["loc"][0]) if err["loc"] else "?"
        info = Settings.model_fields.get(field)
        allowed = ""
        if field == "feature_set":
            allowed = f"; allowed values: {', '.join(FEATURE_SETS)}"
        elif info is not None and info.description:
            allowed = f" ({info.description})"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{field.upper()}={err.get('input')!r} is invalid: {msg}{allowed}")
    return "invalid settings:\n  " + "\n  ".join(lines)
