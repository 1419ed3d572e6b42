"""Configuration: YAML plans, environment-only mode, every error reported with its path."""

from __future__ import annotations

from pathlib import Path

import pytest

from backup_exporter import config
from backup_exporter.core.errors import ConfigError
from tests.cli_helpers import backupctl, base_env

CONN = "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=c2VjcmV0LWtleQ==;EndpointSuffix=core.windows.net"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "backup.yml"
    path.write_text(text)
    return path


def test_a_full_yaml_file_with_interpolation_and_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, """
storage:
  container: backups
  connection_string: ${AZURE_CONN}
  block_size: 16MiB
server:
  listen: 127.0.0.1:9999
  api_token: ${TOKEN:-}
defaults:
  prefix: prod
  retention: {keep_daily: 7, keep_weekly: 4}
plans:
  orders:
    mongodb_uri: ${ORDERS_URI}
    schedule: "0 */6 * * *"
    include: ["shop.*"]
  users:
    mongodb_uri: ${USERS_URI:-mongodb://users-db:27017/}
    schedule: "@daily"
    timezone: Europe/Berlin
    max_age: 26h
""")
    cfg = config.load_file(path, {"AZURE_CONN": CONN, "ORDERS_URI": "mongodb://u:p@orders:27017/"})
    assert cfg.storage.block_size == 16 << 20 and cfg.storage.container == "backups"
    assert (cfg.server.listen_host, cfg.server.listen_port) == ("127.0.0.1", 9999)
    assert cfg.server.api_token is None
    orders, users = cfg.plans["orders"], cfg.plans["users"]
    assert orders.mongodb_uri == "mongodb://u:p@orders:27017/" and orders.include == ("shop.*",)
    assert orders.prefix == users.prefix == "prod"
    assert orders.retention.keep_daily == 7 and users.retention.keep_weekly == 4
    assert users.mongodb_uri == "mongodb://users-db:27017/"
    assert users.max_age_seconds == 26 * 3600
    assert users.schedule.timezone.key == "Europe/Berlin"


def test_every_error_is_reported_at_once_with_its_path(tmp_path: Path) -> None:
    path = write(tmp_path, """
storage:
  container: backups
  conection_string: typo
plans:
  orders:
    mongodb_uri: postgres://nope
    schedule: "0 25 * * *"
    engine: mysqldump
    retention: {keep_daily: -1, keep_yearly: 3}
    mongodump_args: ["--password=x"]
  "bad name!":
    mongodb_uri: ${MISSING_URI}
""")
    with pytest.raises(ConfigError) as raised:
        config.load_file(path, {})
    errors = raised.value.errors
    text = "\n".join(errors)
    for expected in [
        "At 'storage.conection_string': unknown key",
        "At 'storage': Azure storage needs connection_string",
        "At 'plans.orders.mongodb_uri': 'postgres://nope' is not a MongoDB URI",
        "At 'plans.orders.schedule': invalid cron expression '0 25 * * *': hour field: 25 is outside 0-23",
        "At 'plans.orders.engine': 'mysqldump' is not an engine",
        "At 'plans.orders.retention.keep_daily': must be 0 or more",
        "At 'plans.orders.retention.keep_yearly': unknown key",
        "At 'plans.orders.mongodump_args': '--password' is managed by backupctl",
        "At 'plans.bad name!': plan names use letters",
        "At 'plans.bad name!.mongodb_uri': environment variable MISSING_URI is not set",
    ]:
        assert expected in text, f"missing: {expected}\n{text}"
    assert all(e.startswith(str(path)) for e in errors)


def test_environment_only_mode_builds_one_plan() -> None:
    cfg = config.from_environment({
        "MONGODB_URI": "mongodb://backup:pa$$word@db:27017/", "AZURE_STORAGE_CONNECTION_STRING": CONN,
        "AZURE_STORAGE_CONTAINER": "backups", "BACKUP_PREFIX": "prod", "BACKUP_SCHEDULE": "15 3 * * *",
        "BACKUP_ENGINE": "native", "BACKUP_KEEP_LAST": "3", "BACKUP_KEEP_WITHIN": "2d",
        "BACKUP_LISTEN_ADDRESS": ":9100"})
    plan = cfg.plan(None)
    assert plan.name == "default" and plan.engine == "native" and plan.prefix == "prod"
    assert plan.mongodb_uri == "mongodb://backup:pa$$word@db:27017/"  # a '$' in a secret is kept literally
    assert plan.retention.keep_last == 3 and plan.retention.keep_within is not None
    assert cfg.server.listen_port == 9100
    assert cfg.storage.describe() == "azure://acme/backups"


def test_environment_only_mode_with_sas_token_or_managed_identity() -> None:
    sas = config.from_environment({"MONGODB_URI": "mongodb://db/", "AZURE_STORAGE_CONTAINER": "b",
                                   "AZURE_STORAGE_ACCOUNT_URL": "https://acme.blob.core.windows.net",
                                   "AZURE_STORAGE_SAS_TOKEN": "sv=2024&sig=abc"})
    assert sas.storage.sas_token == "sv=2024&sig=abc" and not sas.storage.use_identity
    identity = config.from_environment({"MONGODB_URI": "mongodb://db/", "AZURE_STORAGE_CONTAINER": "b",
                                        "AZURE_STORAGE_ACCOUNT_URL": "https://acme.blob.core.windows.net"})
    assert identity.storage.use_identity
    local = config.from_environment({"MONGODB_URI": "mongodb://db/", "BACKUP_LOCAL_DIR": "/backups",
                                     "BACKUP_PLAN": "nightly"})
    assert local.storage.type == "local" and list(local.plans) == ["nightly"]


@pytest.mark.parametrize(("env", "words"), [
    ({}, "MONGODB_URI is not set"),
    ({"MONGODB_URI": "mongodb://db/"}, "no storage configured"),
    ({"MONGODB_URI": "mongodb://db/", "AZURE_STORAGE_CONNECTION_STRING": CONN}, "AZURE_STORAGE_CONTAINER is not set"),
    ({"MONGODB_URI": "mongodb://db/", "BACKUP_LOCAL_DIR": "/b", "BACKUP_SCHEDULE": "every day"},
     "BACKUP_SCHEDULE: invalid cron expression 'every day'"),
    ({"MONGODB_URI": "mongodb://db/", "BACKUP_LOCAL_DIR": "/b", "BACKUP_KEEP_LAST": "three"},
     "BACKUP_KEEP_LAST: 'three' is not a whole number"),
    ({"MONGODB_URI": "mongodb://db/", "BACKUP_LOCAL_DIR": "/b", "BACKUP_LISTEN_ADDRESS": "9868"},
     "BACKUP_LISTEN_ADDRESS: '9868' is not host:port"),
    ({"MONGODB_URI": "mongodb://db/", "AZURE_STORAGE_CONNECTION_STRING": "garbage", "AZURE_STORAGE_CONTAINER": "c"},
     "AZURE_STORAGE_CONNECTION_STRING: is not an Azure Storage connection string"),
    ({"MONGODB_URI": "mysql://db/", "BACKUP_LOCAL_DIR": "/b"}, "MONGODB_URI: 'mysql://db/' is not a MongoDB URI"),
])
def test_environment_errors_name_the_variable(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace("*", r"\*")):
        config.from_environment(env)


def test_masked_configuration_hides_every_secret() -> None:
    cfg = config.from_environment({"MONGODB_URI": "mongodb://backup:Sekr1t@db:27017/admin",
                                   "AZURE_STORAGE_CONNECTION_STRING": CONN, "AZURE_STORAGE_CONTAINER": "b",
                                   "BACKUP_API_TOKEN": "tok-123"})
    text = repr(config.masked(cfg))
    for secret in ("Sekr1t", "c2VjcmV0LWtleQ==", "tok-123"):
        assert secret not in text
    assert "mongodb://backup:***@db:27017/admin" in text


def test_check_config_prints_masked_config_and_next_three_runs_in_utc(tmp_path: Path) -> None:
    path = write(tmp_path, """
storage: {type: local, path: /backups}
plans:
  orders: {mongodb_uri: "mongodb://u:TopSecret@db/", schedule: "0 3 * * *"}
""")
    result = backupctl(["check-config", "--config", str(path)], base_env())
    assert result.returncode == 0, result.stderr
    assert "TopSecret" not in result.stdout
    assert "mongodb://u:***@db/" in result.stdout
    runs = result.stdout.split("next_runs:")[1]
    assert runs.count("T03:00:00Z") == 3


def test_check_config_exits_78_with_one_line_per_error_and_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "plans:\n  orders:\n    schedule: 'nope'\n")
    result = backupctl(["check-config", "--config", str(path)], base_env())
    assert result.returncode == 78
    assert "Traceback" not in result.stderr
    assert "At 'plans.orders.schedule'" in result.stderr
    assert "At 'plans.orders.mongodb_uri': is required" in result.stderr


@pytest.mark.parametrize(("args", "code", "words"), [
    (["frobnicate"], 64, "No such command 'frobnicate'"),
    ([], 64, "a command is required"),
    (["run-now", "--bogus"], 64, "No such option '--bogus'"),
    (["check-config", "--config", "/nonexistent/backup.yml"], 78, "cannot read configuration file"),
])
def test_bad_command_lines_get_one_clear_line(args: list[str], code: int, words: str) -> None:
    result = backupctl(args, base_env())
    assert result.returncode == code, result.stderr
    assert words in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "plans:\n  orders: [unclosed\n")
    result = backupctl(["check-config", "--config", str(path)], base_env())
    assert result.returncode == 78 and "line" in result.stderr and "Traceback" not in result.stderr


def test_a_timezone_without_a_schedule_applies_to_the_default_schedule(tmp_path: Path) -> None:
    path = write(tmp_path, """
storage: {type: local, path: /backups}
plans:
  orders: {mongodb_uri: "mongodb://db/", timezone: Europe/Berlin}
""")
    plan = config.load_file(path, {}).plans["orders"]
    assert plan.schedule.timezone.key == "Europe/Berlin"
    env = config.from_environment({"MONGODB_URI": "mongodb://db/", "BACKUP_LOCAL_DIR": "/b",
                                   "BACKUP_TIMEZONE": "America/New_York"})
    assert env.plan(None).schedule.timezone.key == "America/New_York"


def test_an_unknown_timezone_is_reported_at_its_own_key_even_without_a_schedule(tmp_path: Path) -> None:
    path = write(tmp_path, """
storage: {type: local, path: /backups}
plans:
  orders: {mongodb_uri: "mongodb://db/", timezone: Mars/Olympus}
""")
    with pytest.raises(ConfigError, match=r"At 'plans\.orders\.timezone': unknown time zone 'Mars/Olympus'"):
        config.load_file(path, {})
    with pytest.raises(ConfigError, match=r"^environment: BACKUP_TIMEZONE: unknown time zone 'Mars/Olympus'"):
        config.from_environment({"MONGODB_URI": "mongodb://db/", "BACKUP_LOCAL_DIR": "/b",
                                 "BACKUP_TIMEZONE": "Mars/Olympus"})


def test_durations_given_as_bare_numbers_must_be_positive(tmp_path: Path) -> None:
    path = write(tmp_path, """
storage: {type: local, path: /backups}
server: {grace_period: -5, status_refresh: 0}
plans:
  orders: {mongodb_uri: "mongodb://db/", max_age: -1, connect_timeout: .inf}
""")
    with pytest.raises(ConfigError) as raised:
        config.load_file(path, {})
    text = "\n".join(raised.value.errors)
    for key in ("server.grace_period", "server.status_refresh", "plans.orders.max_age",
                "plans.orders.connect_timeout"):
        assert f"At '{key}': invalid duration" in text, text
    assert config.load_file(write(tmp_path, """
storage: {type: local, path: /backups}
server: {grace_period: 30}
plans:
  orders: {mongodb_uri: "mongodb://db/", max_age: 3600}
"""), {}).plans["orders"].max_age_seconds == 3600


def test_a_bad_plan_name_from_the_environment_names_backup_plan() -> None:
    with pytest.raises(ConfigError, match=r"^environment: BACKUP_PLAN: plan names use letters"):
        config.from_environment({"MONGODB_URI": "mongodb://db/", "BACKUP_LOCAL_DIR": "/b",
                                 "BACKUP_PLAN": "bad name!"})


def test_an_unknown_key_under_defaults_is_reported_once_at_its_own_path(tmp_path: Path) -> None:
    path = write(tmp_path, """
storage: {type: local, path: /b}
defaults: {prefx: prod}
plans:
  a: {mongodb_uri: "mongodb://h/"}
  b: {mongodb_uri: "mongodb://h/"}
""")
    with pytest.raises(ConfigError) as raised:
        config.load_file(path, {})
    assert len(raised.value.errors) == 1
    assert "At 'defaults.prefx': unknown key" in raised.value.errors[0]
