"""Kafka client security and secrets.

The integration tests start a broker of their own (not the session one) with a SASL_SSL
listener: a CA and the broker's certificate are made here with openssl, the broker's
keystore with keytool; PLAIN users sit in the listener's JAAS config and SCRAM-SHA-512
users are written into the cluster metadata when the storage is formatted.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
from confluent_kafka import KafkaError, KafkaException

from infra.kafka.broker import LocalBroker, SaslSslListener
from streams import kafka
from streams.settings import SettingsError, load_settings, read_client_config
from streams.workers import settings_env
from stages.clickhouse import ClickHouseError, connect, redact_url

ROOT = Path(__file__).resolve().parents[1]
KEYSTORE_PASSWORD = "ks-pass-7f3a"
PLAIN_USER, PLAIN_PASSWORD = "alice", "alice-pw-91c2"
SCRAM_USER, SCRAM_PASSWORD = "bob", "bob-pw-4d8e"
WRONG_PASSWORD = "wrong-pw-s3cret"


# ------------------------------------------------------------------ settings (pure)
def _load(monkeypatch, **env: str):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings()


@pytest.mark.parametrize(
    "env, names",
    [
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, ["KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM"]),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u"},
         ["KAFKA_SASL_PASSWORD"]),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_PASSWORD": "pw"},
         ["KAFKA_SASL_USERNAME"]),
        ({"KAFKA_SASL_USERNAME": "u"}, ["KAFKA_SASL_USERNAME", "KAFKA_SECURITY_PROTOCOL"]),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u",
          "KAFKA_SASL_PASSWORD": "pw", "KAFKA_SSL_CA_LOCATION": __file__}, ["KAFKA_SSL_CA_LOCATION", "TLS"]),
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, ["KAFKA_SECURITY_PROTOCOL"]),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "GSSAPI"}, ["KAFKA_SASL_MECHANISM"]),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_LOCATION": "/no/such/ca.pem"}, ["KAFKA_SSL_CA_LOCATION", "no such file"]),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTIFICATE_LOCATION": __file__}, ["KAFKA_SSL_KEY_LOCATION"]),
        ({"KAFKA_CLIENT_CONFIG": "/no/such/client.properties"}, ["KAFKA_CLIENT_CONFIG"]),
    ],
)
def test_bad_security_settings_fail_at_load_naming_the_variable(monkeypatch, env, names):
    with pytest.raises(SettingsError) as err:
        _load(monkeypatch, **env)
    for name in names:
        assert name in str(err.value), str(err.value)


def test_client_config_file_merges_under_explicit_settings(monkeypatch, tmp_path):
    props = tmp_path / "client.properties"
    props.write_text(
        "# a comment\n! another\n\nbootstrap.servers = broker.example:9093\nsecurity.protocol=SASL_SSL\n"
        "sasl.mechanism=PLAIN\nsasl.username=from-file\nsasl.password=file-pw\nclient.rack=r1\n"
    )
    s = _load(monkeypatch, KAFKA_CLIENT_CONFIG=str(props), KAFKA_SASL_MECHANISM="SCRAM-SHA-512", KAFKA_SASL_USERNAME="explicit")
    got = s.kafka_security_properties()
    assert got["sasl.mechanism"] == "SCRAM-SHA-512" and got["sasl.username"] == "explicit"
    assert got["sasl.password"] == "file-pw" and got["client.rack"] == "r1"
    assert kafka.bootstrap_servers(s) == "broker.example:9093"  # the file's, as KAFKA_BOOTSTRAP_SERVERS is unset
    s2 = _load(monkeypatch, KAFKA_BOOTSTRAP_SERVERS="explicit:9092")
    assert kafka.bootstrap_servers(s2) == "explicit:9092"


def test_client_config_bad_line_names_file_and_line_not_its_text(monkeypatch, tmp_path):
    props = tmp_path / "client.properties"
    props.write_text("security.protocol=SASL_SSL\nsasl.password hunter2-secret\n")
    with pytest.raises(ValueError) as err:
        read_client_config(props)
    assert f"{props} line 2" in str(err.value) and "hunter2" not in str(err.value)
    with pytest.raises(SettingsError) as err:
        _load(monkeypatch, KAFKA_CLIENT_CONFIG=str(props))
    assert "KAFKA_CLIENT_CONFIG" in str(err.value) and "line 2" in str(err.value) and "hunter2" not in str(err.value)


def test_unknown_client_property_is_an_error_naming_the_file_setting(monkeypatch, tmp_path):
    props = tmp_path / "client.properties"
    props.write_text("no.such.property=1\n")
    s = _load(monkeypatch, KAFKA_CLIENT_CONFIG=str(props), KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")
    with pytest.raises(KafkaException) as err:
        kafka.admin_client(s)
    assert "no.such.property" in err.value.args[0].str() and "KAFKA_CLIENT_CONFIG" in err.value.args[0].str()


def test_passwords_are_secret_in_repr_but_reach_child_processes(monkeypatch, tmp_path):
    key = tmp_path / "client.key"
    key.write_text("k")
    s = _load(
        monkeypatch, KAFKA_SECURITY_PROTOCOL="sasl_ssl", KAFKA_SASL_MECHANISM="scram-sha-512", KAFKA_SASL_USERNAME="u",
        KAFKA_SASL_PASSWORD="pw-s3cret", KAFKA_SSL_CERTIFICATE_LOCATION=str(key), KAFKA_SSL_KEY_LOCATION=str(key),
        KAFKA_SSL_KEY_PASSWORD="key-s3cret",
    )
    assert "s3cret" not in repr(s) and "s3cret" not in str(s)
    env = settings_env(s)
    assert env["KAFKA_SASL_PASSWORD"] == "pw-s3cret" and env["KAFKA_SSL_KEY_PASSWORD"] == "key-s3cret"
    assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL" and env["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    for name, value in env.items():  # what a child reads back is what the parent had
        monkeypatch.setenv(name, value)
    child = load_settings()
    assert child.kafka_sasl_password.get_secret_value() == "pw-s3cret"
    assert child.kafka_security_properties() == s.kafka_security_properties()


# ------------------------------------------------------------------ ClickHouse URL secrets
BAD_URL = "http://u:s3cret@127.0.0.1:1/db"


def test_redact_url():
    assert redact_url(BAD_URL) == "http://u:***@127.0.0.1:1/db"
    assert redact_url("https://u:p%40ss@h:8443/d") == "https://u:***@h:8443/d"
    assert redact_url("http://h:8123/default") == "http://h:8123/default"


@pytest.mark.parametrize("url", [BAD_URL, "ftp://u:s3cret@127.0.0.1:1/db"])
def test_clickhouse_connect_errors_never_show_the_password(url, tmp_path):
    with pytest.raises(ClickHouseError) as err:
        connect(url, tmp_path)
    text = str(err.value)
    assert "s3cret" not in text and "127.0.0.1" in text
    assert err.value.__cause__ is None or "s3cret" not in str(err.value.__cause__)


def test_status_names_the_clickhouse_server_without_its_password(monkeypatch, tmp_path):
    from streams.status import completed_eras

    where, note, counts = completed_eras(_load(monkeypatch, CLICKHOUSE_URL=BAD_URL, DATA_DIR=str(tmp_path)))
    assert where == "http://u:***@127.0.0.1:1/db" and counts is None
    assert "cannot reach ClickHouse" in note and "s3cret" not in note


def test_clickhouse_password_absent_from_cli_output(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CLICKHOUSE_URL": BAD_URL, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    for args in (["features", "-o", str(tmp_path / "f.csv")], ["status", "--json"]):
        proc = subprocess.run(
            [sys.executable, "-m", "streams.cli", "--data-dir", str(tmp_path), *args],
            env=env, capture_output=True, text=True, timeout=120,
        )
        out = proc.stdout + proc.stderr
        assert "s3cret" not in out and "Traceback" not in out, out
        if args[0] == "features":
            assert proc.returncode == 1 and "cannot reach ClickHouse" in out, out


# ------------------------------------------------------------------ the SASL_SSL broker
def _sh(*cmd: str, cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stderr[-2000:]}"


def make_ca(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    _sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
        "-days", "2", "-subj", f"/CN={name}", cwd=directory)
    return directory / f"{name}.pem"


def make_broker_keystore(directory: Path) -> Path:
    """A PKCS12 keystore (keytool) with a key whose certificate (SAN 127.0.0.1) the test CA signed (openssl)."""
    if shutil.which("keytool") is None or shutil.which("openssl") is None:
        pytest.skip("keytool and openssl are needed to make the test certificates")
    store = directory / "broker.p12"
    ks = ["-keystore", str(store), "-storepass", KEYSTORE_PASSWORD, "-storetype", "PKCS12"]
    _sh("keytool", "-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048", "-validity", "2",
        "-dname", "CN=127.0.0.1", "-ext", "SAN=IP:127.0.0.1,DNS:localhost", "-keypass", KEYSTORE_PASSWORD, *ks, cwd=directory)
    _sh("keytool", "-certreq", "-alias", "broker", "-file", "broker.csr", "-ext", "SAN=IP:127.0.0.1,DNS:localhost", *ks, cwd=directory)
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _sh("openssl", "x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "broker.pem", "-days", "2", "-extfile", "san.ext", cwd=directory)
    _sh("keytool", "-importcert", "-noprompt", "-alias", "ca", "-file", "ca.pem", *ks, cwd=directory)
    _sh("keytool", "-importcert", "-noprompt", "-alias", "broker", "-file", "broker.pem", *ks, cwd=directory)
    return store


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory):
    """A broker of its own with PLAINTEXT (for its own readiness probe) and SASL_SSL listeners."""
    certs = tmp_path_factory.mktemp("certs")
    ca = make_ca(certs, "ca")
    listener = SaslSslListener(
        keystore=make_broker_keystore(certs), keystore_password=KEYSTORE_PASSWORD,
        plain_users={PLAIN_USER: PLAIN_PASSWORD}, scram_users={SCRAM_USER: SCRAM_PASSWORD},
    )
    broker = LocalBroker(tmp_path_factory.mktemp("secure-kafka"), log=lambda m: None, sasl_ssl=listener)
    state = broker.start()
    yield broker, state, ca
    broker.stop()


MECHANISMS = {"PLAIN": (PLAIN_USER, PLAIN_PASSWORD), "SCRAM-SHA-512": (SCRAM_USER, SCRAM_PASSWORD)}


def _secure_env(state, ca: Path, mechanism: str, password: str | None = None) -> dict[str, str]:
    user, right = MECHANISMS[mechanism]
    return {
        "KAFKA_BOOTSTRAP_SERVERS": state.sasl_ssl_bootstrap,
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": mechanism,
        "KAFKA_SASL_USERNAME": user,
        "KAFKA_SASL_PASSWORD": password or right,
        "KAFKA_SSL_CA_LOCATION": str(ca),
    }


def _secure_settings(monkeypatch, tmp_path, state, ca, mechanism, password=None):
    env = _secure_env(state, ca, mechanism, password)
    return _load(monkeypatch, **env, DATA_DIR=str(tmp_path / "data"), CONSUMER_POLL_TIMEOUT_S="0.2")


def _create_topic(settings, name: str) -> None:
    from confluent_kafka.admin import NewTopic

    admin = kafka.admin_client(settings)
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(30)


def _consume_all(settings, topic: str, expect: int, timeout: float = 30.0) -> list[bytes]:
    consumer = kafka.consumer(settings, f"sec-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < expect and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
    finally:
        consumer.close()
    return got


@pytest.mark.parametrize("mechanism", list(MECHANISMS))
def test_transactional_produce_and_consume_over_sasl_ssl(secure_broker, monkeypatch, tmp_path, mechanism):
    broker, state, ca = secure_broker
    s = _secure_settings(monkeypatch, tmp_path, state, ca, mechanism)
    topic = f"sec-{mechanism.lower()}-{uuid.uuid4().hex[:6]}"
    _create_topic(s, topic)
    producer = kafka.producer(s, transactional_id=f"sec-{uuid.uuid4().hex[:8]}")
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(5):
        producer.produce(topic, key=b"k", value=f"committed-{i}".encode())
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"aborted")
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"last")
    producer.commit_transaction(30)
    got = _consume_all(s, topic, expect=6)
    assert got == [f"committed-{i}".encode() for i in range(5)] + [b"last"]  # read_committed: the aborted one is skipped
    # The plaintext listener of the same broker serves the same data: nothing was faked on the secure side.
    for name in _secure_env(state, ca, mechanism):
        monkeypatch.delenv(name)
    plain = load_settings(kafka_bootstrap_servers=state.bootstrap, data_dir=tmp_path / "plain")
    assert plain.kafka_security_protocol is None
    assert _consume_all(plain, topic, expect=6) == got


@pytest.mark.parametrize("mechanism", list(MECHANISMS))
def test_wrong_password_is_a_clear_error_not_a_hang(secure_broker, monkeypatch, tmp_path, caplog, mechanism):
    broker, state, ca = secure_broker
    s = _secure_settings(monkeypatch, tmp_path, state, ca, mechanism, password=WRONG_PASSWORD)
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(KafkaException) as err:
            kafka.producer(s, transactional_id=f"sec-{uuid.uuid4().hex[:8]}")
    elapsed = time.monotonic() - started
    error = err.value.args[0]
    assert error.code() == KafkaError._AUTHENTICATION, error
    assert mechanism in error.str() and "KAFKA_SASL_PASSWORD" in error.str()
    assert elapsed < 10, f"took {elapsed:.1f} s to refuse"
    assert WRONG_PASSWORD not in error.str() and WRONG_PASSWORD not in caplog.text


def test_untrusted_broker_certificate_is_a_clear_error(secure_broker, monkeypatch, tmp_path):
    broker, state, _ = secure_broker
    other_ca = make_ca(tmp_path / "other", "other-ca")
    s = _secure_settings(monkeypatch, tmp_path, state, other_ca, "PLAIN")
    with pytest.raises(KafkaException) as err:
        kafka.admin_client(s)
    error = err.value.args[0]
    assert error.code() == KafkaError._SSL and "KAFKA_SSL_CA_LOCATION" in error.str(), error


def _cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=full, capture_output=True, text=True, timeout=timeout)


def test_cli_and_ingest_path_over_sasl_ssl(secure_broker, monkeypatch, tmp_path):
    """`erastream topics create` (AdminClient), ingest.publish (a transactional producer) and a
    topic_reader read (an assign-only consumer): each reaches the broker only if the settings reach it."""
    from streams import topic_reader
    from streams.ingest import publish
    from streams.topics import ERAS_RAW

    broker, state, ca = secure_broker
    env = {**_secure_env(state, ca, "SCRAM-SHA-512"), "DATA_DIR": str(tmp_path / "data")}
    proc = _cli(env, "topics", "create")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "eras.raw" in proc.stderr and SCRAM_PASSWORD not in proc.stdout + proc.stderr

    s = _secure_settings(monkeypatch, tmp_path, state, ca, "SCRAM-SHA-512")
    consumer = topic_reader.reader(s)
    parts = topic_reader.partitions(consumer, [ERAS_RAW])[ERAS_RAW]
    before = topic_reader.watermarks(consumer, [(ERAS_RAW, p) for p in parts])
    csv = tmp_path / "sensors.csv"
    times = pd.date_range("2024-01-01", periods=48, freq="h")
    pd.DataFrame({"timestamp": times, "compartment_id": "c1", "temperature": range(48)}).to_csv(csv, index=False)
    report = publish(s, csv, era_length="1D")
    assert report.rows == 48 and report.chunks >= 2
    after = topic_reader.watermarks(consumer, [(ERAS_RAW, p) for p in parts])
    spans = {tp: (before[tp][1], after[tp][1]) for tp in after}
    read = list(topic_reader.BoundedRead(consumer, spans, timeout=30))
    consumer.close()
    assert len(read) == report.chunks


def test_cli_wrong_password_fails_fast_without_printing_it(secure_broker, tmp_path):
    broker, state, ca = secure_broker
    env = {**_secure_env(state, ca, "PLAIN", password=WRONG_PASSWORD), "DATA_DIR": str(tmp_path / "data"),
           "LOG_LEVEL": "DEBUG"}
    started = time.monotonic()
    proc = _cli(env, "topics", "list", timeout=60)
    elapsed = time.monotonic() - started
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Authentication failed" in out and "KAFKA_SASL_PASSWORD" in out, out
    assert WRONG_PASSWORD not in out and "Traceback" not in out, out
    assert elapsed < 30, f"{elapsed:.1f} s"


def test_client_config_file_alone_reaches_the_clients(secure_broker, monkeypatch, tmp_path):
    broker, state, ca = secure_broker
    props = tmp_path / "client.properties"
    props.write_text(
        f"bootstrap.servers={state.sasl_ssl_bootstrap}\nsecurity.protocol=SASL_SSL\nsasl.mechanism=PLAIN\n"
        f"sasl.username={PLAIN_USER}\nsasl.password={PLAIN_PASSWORD}\nssl.ca.location={ca}\n"
    )
    env = {"KAFKA_CLIENT_CONFIG": str(props), "DATA_DIR": str(tmp_path / "data")}
    proc = _cli(env, "topics", "create")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listed = _cli(env, "topics", "list")
    assert listed.returncode == 0 and "eras.raw\t" in listed.stdout, listed.stdout + listed.stderr
