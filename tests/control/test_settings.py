"""The control plane's settings as an API process reads them at its start
(control/settings.py, `Settings.from_environ`), from an environment mapping given in
process: the defaults, each variable parsed, a bad value refused by a `SettingError`
naming its variable, the metrics token from its variable or its file.
"""

from __future__ import annotations

import datetime as dt

import pytest

from edgepcap.control.settings import Limits, SettingError, Settings

TOKEN = "m" * 16  # the shortest token accepted


def settings(tmp_path, **environ: str) -> Settings:
    return Settings.from_environ(tmp_path, environ=environ)


def test_defaults(tmp_path):
    s = settings(tmp_path)
    assert s.data_dir == tmp_path
    assert (s.database, s.sample_store, s.metrics_token) == (None, None, None)
    assert s.limits == Limits(sample_interval=dt.timedelta(seconds=60), full_capture_rate=10)
    assert s.capture_retention == dt.timedelta(days=30)
    assert s.sample_retention == dt.timedelta(hours=24)
    assert s.sample_partition == 60
    assert s.stores.bucket_root == tmp_path / "buckets"
    assert s.stores.credentials == frozenset()
    # ClickHouse: an hour a partition unless told otherwise.
    ch = settings(tmp_path, EDGEPCAP_SAMPLE_STORE="clickhouse://ch.example/edgepcap")
    assert ch.sample_partition == 3600


def test_each_variable_is_read(tmp_path):
    s = settings(
        tmp_path,
        EDGEPCAP_DATABASE="postgresql://db.example/edgepcap",
        EDGEPCAP_SAMPLE_STORE="clickhouse://ch.example/edgepcap",
        EDGEPCAP_SAMPLE_INTERVAL="2.5",
        EDGEPCAP_FULL_CAPTURE_RATE="3",
        EDGEPCAP_CAPTURE_RETENTION="3600",
        EDGEPCAP_SAMPLE_RETENTION=" 120 ",
        EDGEPCAP_SAMPLE_PARTITION="5",
        EDGEPCAP_METRICS_TOKEN=f" {TOKEN} ",
        EDGEPCAP_BUCKET_ROOT=str(tmp_path / "elsewhere"),
        EDGEPCAP_READ_MAX_BYTES="4096",
        AWS_ACCESS_KEY_ID="k",
    )
    assert s.database == "postgresql://db.example/edgepcap"
    assert s.sample_store == "clickhouse://ch.example/edgepcap"
    assert s.limits == Limits(sample_interval=dt.timedelta(seconds=2.5), full_capture_rate=3)
    assert s.capture_retention == dt.timedelta(hours=1)
    assert s.sample_retention == dt.timedelta(minutes=2)
    assert s.sample_partition == 5
    assert s.metrics_token == TOKEN
    assert s.stores.bucket_root == tmp_path / "elsewhere"
    assert (s.stores.read_max_bytes, s.stores.credentials) == (4096, {"s3"})


def test_options_come_before_the_environment(tmp_path):
    environ = {
        "EDGEPCAP_DATA_DIR": "/from/env",
        "EDGEPCAP_DATABASE": "postgresql://env/db",
        "EDGEPCAP_SAMPLE_STORE": "clickhouse://env/db",
    }
    s = Settings.from_environ(tmp_path, "sqlite:///opt.db", "/opt/samples", environ=environ)
    assert (s.data_dir, s.database, s.sample_store) == (
        tmp_path,
        "sqlite:///opt.db",
        "/opt/samples",
    )
    # Without the option, the environment's data dir (what API workers are given).
    assert Settings.from_environ(environ=environ).data_dir.as_posix() == "/from/env"
    with pytest.raises(SettingError, match="EDGEPCAP_DATA_DIR is not set"):
        Settings.from_environ(environ={})


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("EDGEPCAP_SAMPLE_INTERVAL", "0", Limits(sample_interval=dt.timedelta(0))),
        ("EDGEPCAP_SAMPLE_INTERVAL", "0.0", Limits(sample_interval=dt.timedelta(0))),
        ("EDGEPCAP_FULL_CAPTURE_RATE", "0", Limits(full_capture_rate=0)),
    ],
)
def test_zero_means_no_limit_where_allowed(tmp_path, variable, value, expected):
    assert settings(tmp_path, **{variable: value}).limits == expected


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("EDGEPCAP_FULL_CAPTURE_RATE", "ten"),
        ("EDGEPCAP_FULL_CAPTURE_RATE", "-1"),
        ("EDGEPCAP_FULL_CAPTURE_RATE", "2.5"),
        ("EDGEPCAP_CAPTURE_RETENTION", "0"),
        ("EDGEPCAP_CAPTURE_RETENTION", "-3600"),
        ("EDGEPCAP_CAPTURE_RETENTION", "30d"),
        ("EDGEPCAP_CAPTURE_RETENTION", "1e10"),
        ("EDGEPCAP_SAMPLE_RETENTION", "0"),
        ("EDGEPCAP_SAMPLE_RETENTION", "nan"),
        ("EDGEPCAP_SAMPLE_RETENTION", "inf"),
        ("EDGEPCAP_SAMPLE_INTERVAL", "-1"),
        ("EDGEPCAP_SAMPLE_INTERVAL", "-0.5"),
        ("EDGEPCAP_SAMPLE_INTERVAL", "a minute"),
        ("EDGEPCAP_SAMPLE_PARTITION", "0"),
        ("EDGEPCAP_SAMPLE_PARTITION", "1.5"),
        ("EDGEPCAP_READ_MAX_BYTES", "many"),
        ("EDGEPCAP_READS_PER_ACCOUNT", "0"),
    ],
)
def test_a_bad_value_is_refused_naming_its_variable(tmp_path, variable, value):
    with pytest.raises(SettingError, match=variable) as refused:
        settings(tmp_path, **{variable: value})
    assert repr(value) in str(refused.value)


def test_a_superscript_count_is_refused_naming_its_variable(tmp_path):
    with pytest.raises(SettingError, match="EDGEPCAP_FULL_CAPTURE_RATE"):
        settings(tmp_path, EDGEPCAP_FULL_CAPTURE_RATE="²")


@pytest.mark.parametrize(
    "token",
    ["m" * 15, "short", "m" * 8 + " " + "m" * 8, "m" * 16 + "\x00", "m" * 8 + "\t" + "m" * 8],
)
def test_a_weak_metrics_token_is_refused(tmp_path, token):
    with pytest.raises(SettingError, match="EDGEPCAP_METRICS_TOKEN"):
        settings(tmp_path, EDGEPCAP_METRICS_TOKEN=token)


def test_an_empty_metrics_token_means_no_metrics(tmp_path):
    assert settings(tmp_path, EDGEPCAP_METRICS_TOKEN="  ").metrics_token is None


def test_the_metrics_token_file_is_read_and_wins(tmp_path):
    path = tmp_path / "token"
    path.write_text(f"{'f' * 40}\n")
    s = settings(tmp_path, EDGEPCAP_METRICS_TOKEN_FILE=str(path), EDGEPCAP_METRICS_TOKEN="e" * 40)
    assert s.metrics_token == "f" * 40


def test_a_bad_metrics_token_file_is_refused_naming_it(tmp_path):
    short = tmp_path / "short"
    short.write_text("f" * 15)
    with pytest.raises(SettingError, match=f"the metrics token file {short}"):
        settings(tmp_path, EDGEPCAP_METRICS_TOKEN_FILE=str(short))
    missing = tmp_path / "missing"
    with pytest.raises(SettingError, match=f"cannot read the metrics token file {missing}"):
        settings(tmp_path, EDGEPCAP_METRICS_TOKEN_FILE=str(missing))


def test_the_relay_host_is_an_address_the_other_processes_reach(tmp_path):
    env = {"EDGEPCAP_RELAY_HOST": "10.0.0.5"}
    assert Settings.from_environ(tmp_path, environ=env).relay_host == "10.0.0.5"
    assert Settings.from_environ(tmp_path, environ={}).relay_host == "127.0.0.1"
    for wildcard in ("0.0.0.0", "::"):  # noqa: S104 - the values refused
        with pytest.raises(SettingError, match="not the wildcard"):
            Settings.from_environ(tmp_path, environ={"EDGEPCAP_RELAY_HOST": wildcard})
