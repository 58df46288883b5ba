"""Prometheus metrics of every stage; exported when METRICS_PORT is set."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

MESSAGES = Counter("erastream_messages_total", "Messages consumed", ["stage"])
ERAS = Counter("erastream_eras_total", "Eras finished", ["stage"])
ERA_SECONDS = Histogram(
    "erastream_era_seconds", "Seconds spent computing one era", ["stage"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
)
DEAD_LETTERS = Counter("erastream_dead_letters_total", "Messages sent to a dead-letter topic", ["stage"])
STALLED = Counter("erastream_eras_stalled_total", "Unfinished eras dead-lettered after ERA_STALL_TIMEOUT", ["stage"])
POISON = Counter("erastream_eras_poison_total", "Eras dead-lettered after ending their worker ERA_MAX_ATTEMPTS times", ["stage"])
TIMED_OUT = Counter("erastream_eras_timed_out_total", "Eras dead-lettered after their compute passed ERA_COMPUTE_TIMEOUT_S", ["stage"])
IN_FLIGHT = Gauge("erastream_eras_in_flight", "Eras buffered but not yet complete", ["stage"])
CONSUMER_LAG = Gauge("erastream_consumer_lag", "Messages behind the end of the partition", ["stage", "topic", "partition"])


def serve(port: int) -> None:
    """Expose /metrics on `port` (0 disables)."""
    if port:
        start_http_server(port)


def record_lag(stage: str, stats: dict) -> None:
    """Consumer lag from librdkafka's statistics callback (statistics.interval.ms)."""
    for topic, tdata in stats.get("topics", {}).items():
        for partition, pdata in tdata.get("partitions", {}).items():
            lag = pdata.get("consumer_lag", -1)
            if partition != "-1" and lag is not None and lag >= 0:
                CONSUMER_LAG.labels(stage, topic, partition).set(lag)
