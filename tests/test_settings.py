import pytest

from streams.settings import SettingsError, load_settings


def test_defaults_match_design():
    s = load_settings()
    assert s.feature_set == "efficient"
    assert s.kafka_bootstrap_servers is None and s.clickhouse_url is None
    assert s.rolling_windows == ["5min", "15min", "60min", "240min"]
    assert s.batch_size > 0 and s.n_jobs >= 0


def test_environment_is_read(monkeypatch):
    monkeypatch.setenv("FEATURE_SET", "comprehensive")
    monkeypatch.setenv("N_JOBS", "2")
    monkeypatch.setenv("ROLLING_WINDOWS", "5min,1h")
    monkeypatch.setenv("USE_SMART_DISTRIBUTION", "false")
    s = load_settings()
    assert (s.feature_set, s.n_jobs, s.rolling_windows, s.use_smart_distribution) == ("comprehensive", 2, ["5min", "1h"], False)


def test_flags_override_environment(monkeypatch):
    monkeypatch.setenv("FEATURE_SET", "comprehensive")
    assert load_settings(feature_set="minimal").feature_set == "minimal"
    assert load_settings(feature_set=None).feature_set == "comprehensive"


def test_bad_feature_set_names_variable_and_allowed_values(monkeypatch):
    monkeypatch.setenv("FEATURE_SET", "fast")
    with pytest.raises(SettingsError) as err:
        load_settings()
    text = str(err.value)
    assert "FEATURE_SET='fast'" in text
    assert "minimal, efficient, comprehensive" in text


@pytest.mark.parametrize(
    "var,value",
    [("N_JOBS", "-3"), ("BATCH_SIZE", "0"), ("GPU_MEMORY_LIMIT", "lots"), ("ROLLING_WINDOWS", "5 minutes"), ("TOPIC_PARTITIONS", "x")],
)
def test_bad_values_fail_with_the_variable_name(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError, match=var):
        load_settings()
