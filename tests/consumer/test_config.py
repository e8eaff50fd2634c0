"""Settings: TOML plus environment, and start-up errors that name the setting."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from consumer.config import load_settings
from consumer.errors import ConfigError

MINIMAL = """
application = "trips"
[source]
kind = "dynamodb"
table = "TripTable"
[[projections]]
name = "trip_search"
class = "projections.scenarios.trip_search:TripSearchProjection"
[projections.settings]
table = "TripSearchTable"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_minimal_file_gets_documented_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MINIMAL))
    assert settings.source.table == "TripTable"
    assert settings.lease_table == "trips-leases"
    assert settings.leases.failover_seconds == 10
    assert settings.polling.max_records == 10000
    assert settings.polling.tip_records == 1000
    assert settings.polling.prefetch_records == 10000
    assert settings.http.port == 9102
    assert (
        settings.projections[0].class_ == "projections.scenarios.trip_search:TripSearchProjection"
    )
    assert settings.projections[0].settings == {"table": "TripSearchTable"}


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_PROJECTOR_POLLING__MAX_RECORDS", "250")
    monkeypatch.setenv("STREAM_PROJECTOR_LEASES__TABLE", "custom-leases")
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/x")
    settings = load_settings(write(tmp_path, MINIMAL))
    assert settings.polling.max_records == 250
    assert settings.lease_table == "custom-leases"
    assert settings.postgres.dsn == "postgresql://db/x"


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ("[leases]\nfailover_secnds = 3\n", "leases.failover_secnds"),
        ("[polling]\nmax_records = 0\n", "polling.max_records"),
        ("[polling]\nmin_records = 2000\nmax_records = 1000\n", r"min_records \(2000\)"),
        ("[polling]\nprefetch_records = 0\n", "polling.prefetch_records"),
        ("[polling]\nparallelization_factor = 11\n", "polling.parallelization_factor"),
        ("[http]\nport = 70000\n", "http.port"),
        ("[leases]\nfailover_seconds = 2\nrenew_interval_seconds = 3\n", "renew_interval_seconds"),
    ],
)
def test_bad_setting_is_named(tmp_path: Path, extra: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_settings(write(tmp_path, MINIMAL + extra))


def test_bad_environment_value_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAM_PROJECTOR_POLLING__MAX_RECORDS", "lots")
    with pytest.raises(ConfigError, match="STREAM_PROJECTOR_POLLING__MAX_RECORDS"):
        load_settings(write(tmp_path, MINIMAL))


def test_source_must_name_a_stream(tmp_path: Path) -> None:
    text = MINIMAL.replace('table = "TripTable"\n', "", 1)
    with pytest.raises(ConfigError, match=r"source\.table or source\.stream_arn"):
        load_settings(write(tmp_path, text))


def test_at_timestamp_needs_kinesis_and_a_timestamp(tmp_path: Path) -> None:
    text = MINIMAL.replace('table = "TripTable"', 'table = "T"\ninitial_position = "AT_TIMESTAMP"')
    with pytest.raises(ConfigError, match="only on Kinesis"):
        load_settings(write(tmp_path, text))


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "application = [unclosed"))


def test_a_misspelled_key_is_named_with_the_nearest_one_and_never_its_value(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(MINIMAL + '[postgres]\ndns = "postgresql://u:Pa55-w0rd@db/shop"\n')
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    message = str(raised.value)
    assert "postgres.dns: unknown setting; did you mean postgres.dsn?" in message
    assert "Pa55-w0rd" not in message and "db/shop" not in message


def test_a_secret_setting_of_the_wrong_type_is_not_echoed(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(MINIMAL + "[postgres]\ndsn = ['postgresql://u:Pa55-w0rd@db/shop']\n")
    with pytest.raises(ConfigError, match=r"postgres\.dsn: Input should be a valid string") as e:
        load_settings(path)
    assert "Pa55-w0rd" not in str(e.value) and "got" not in str(e.value)


def test_an_unknown_key_far_from_any_lists_the_valid_ones(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(MINIMAL + "[http]\nzzz = 1\n")
    with pytest.raises(ConfigError, match=r"http\.zzz: unknown setting; expected one of heart"):
        load_settings(path)


def test_the_worker_id_is_drawn_once(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(MINIMAL)
    settings = load_settings(path)
    assert settings.worker_id and settings.worker_id == settings.worker_id
    assert load_settings(path).worker_id != settings.worker_id  # another process, another id


PLAIN_JSON = """
[source]
kind = "kinesis"
stream_name = "app-events"
format = "json"
key_fields = ["order_id"]
"""


def test_key_fields_key_plain_json_events_in_the_daemon_and_in_redrive(tmp_path: Path) -> None:
    from consumer.dead_letters.redrive import envelope_decoder
    from consumer.record import RawRecord
    from consumer.runtimes.stack import build_stack

    settings = load_settings(write(tmp_path, PLAIN_JSON), projections=[])
    assert settings.source.key_fields == ("order_id",)
    event = base64.b64encode(b'{"order_id": "o-1", "total": 30}').decode()
    raw = RawRecord("1", None, {"Data": event, "PartitionKey": "tenant-7"})
    stack = build_stack(settings, projections=[])
    try:
        decoders = [
            stack.decoder("kinesis", "app-events"),
            envelope_decoder(settings.source, {"stream": "app-events"}),
        ]
        for decoder in decoders:
            (record,) = decoder.decode(raw, "shardId-0")
            assert record.keys == {"order_id": "o-1"}
            assert record.partition_key == "tenant-7"
    finally:
        stack.close()


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ('kind = "dynamodb"\ntable = "T"\nkey_fields = ["id"]\n', "needs kind kinesis"),
        ('kind = "kinesis"\nstream_name = "s"\nformat = "dynamodb"\nkey_fields = ["id"]\n', "json"),
        ('kind = "kinesis"\nstream_name = "s"\nkey_fields = [""]\n', "cannot be empty"),
        ('kind = "kinesis"\nstream_name = "s"\nkey_fields = "id"\n', "source.key_fields"),
    ],
)
def test_key_fields_only_where_plain_json_events_are_read(
    tmp_path: Path, source: str, named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(write(tmp_path, "[source]\n" + source), projections=[])
