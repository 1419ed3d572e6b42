"""Per-plan settings (compression, parallel readers, mongodump compression, age encryption, access tier) and
the pydantic models' guarantees: every error at once, in the project's words, at its path or variable."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pyrage
import pytest

from backup_exporter import config
from backup_exporter.core.errors import ConfigError
from tests.cli_helpers import backupctl, base_env

LOCAL = {"MONGODB_URI": "mongodb://db/", "BACKUP_LOCAL_DIR": "/b"}
ALICE = str(pyrage.x25519.Identity.generate().to_public())
BOB = str(pyrage.x25519.Identity.generate().to_public())


def file_config(tmp_path: Path, plan: str, extra: str = "") -> Path:
    path = tmp_path / "backup.yml"
    path.write_text(f"storage: {{type: local, path: /b}}\n{extra}plans:\n  p:\n    mongodb_uri: mongodb://db/\n"
                    + "".join(f"    {line}\n" for line in plan.splitlines()))
    return path


def errors_of(path: Path) -> str:
    with pytest.raises(ConfigError) as raised:
        config.load_file(path, {})
    return "\n".join(raised.value.errors)


@pytest.fixture
def identity_file(tmp_path: Path) -> Path:
    path = tmp_path / "identity.txt"
    path.write_text(f"# created: today\n# public key: {ALICE}\n{pyrage.x25519.Identity.generate()}\n")
    return path


def test_new_plan_settings_have_the_contract_defaults(tmp_path: Path) -> None:
    plan = config.load_file(file_config(tmp_path, ""), {}).plans["p"]
    assert (plan.compression_level, plan.parallel_collections, plan.mongodump_compress) == (1, 4, False)
    assert plan.encryption is None and plan.access_tier is None


def test_new_plan_settings_from_a_file_with_defaults_and_a_recipients_file(tmp_path: Path,
                                                                          identity_file: Path) -> None:
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(f"# the team\n{BOB}  # bob\n\n{ALICE}\n")
    path = file_config(tmp_path, f"""parallel_collections: 16
mongodump_compress: true
encryption: {{recipients: [{ALICE}], recipients_file: {recipients}, identity_file: {identity_file}}}""",
                       extra="defaults: {compression_level: 3, access_tier: cool}\n")
    plan = config.load_file(path, {}).plans["p"]
    assert (plan.compression_level, plan.parallel_collections, plan.mongodump_compress) == (3, 16, True)
    assert plan.access_tier == "Cool"
    assert plan.encryption is not None
    assert plan.encryption.recipients == (ALICE, BOB)  # merged with the file's, each once
    assert plan.encryption.identity_file == identity_file


def test_new_plan_settings_from_the_environment(tmp_path: Path, identity_file: Path) -> None:
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(f"{BOB}\n")
    plan = config.from_environment({
        **LOCAL, "BACKUP_COMPRESSION_LEVEL": "0", "BACKUP_PARALLEL_COLLECTIONS": "2",
        "BACKUP_MONGODUMP_COMPRESS": "true", "BACKUP_ACCESS_TIER": "COLD", "BACKUP_AGE_RECIPIENTS": f" {ALICE},\n",
        "BACKUP_AGE_RECIPIENTS_FILE": str(recipients), "BACKUP_AGE_IDENTITY_FILE": str(identity_file)}).plan(None)
    assert (plan.compression_level, plan.parallel_collections, plan.mongodump_compress) == (0, 2, True)
    assert plan.access_tier == "Cold"
    assert plan.encryption is not None and plan.encryption.recipients == (ALICE, BOB)
    assert plan.encryption.identity_file == identity_file


@pytest.mark.parametrize(("plan", "expected"), [
    ("compression_level: 4", "At 'plans.p.compression_level': must be between 0 and 3, got 4"),
    ("compression_level: true", "At 'plans.p.compression_level': expected a whole number, got a boolean"),
    ("parallel_collections: 0", "At 'plans.p.parallel_collections': must be between 1 and 16, got 0"),
    ("parallel_collections: 17", "At 'plans.p.parallel_collections': must be between 1 and 16, got 17"),
    ("parallel_collections: four", "At 'plans.p.parallel_collections': 'four' is not a whole number"),
    ("mongodump_compress: maybe", "At 'plans.p.mongodump_compress': 'maybe' is not true or false"),
    ("access_tier: Archive", "At 'plans.p.access_tier': 'Archive' is not an access tier (choose Hot, Cool or Cold)"),
    ("encryption: {}", "At 'plans.p.encryption': has no recipient"),
    ("encryption:", "At 'plans.p.encryption': has no recipient"),
    ("encryption: {recipients: []}", "At 'plans.p.encryption': has no recipient"),
    ("encryption: {recipients: [age1nope]}",
     "At 'plans.p.encryption.recipients[0]': 'age1nope' is not an age X25519 recipient"),
    ("encryption: {recipients_file: /nonexistent/recipients}",
     "At 'plans.p.encryption.recipients_file': cannot read recipients file /nonexistent/recipients"),
    (f"encryption: {{recipients: [{ALICE}], identity_file: /nonexistent/key}}",
     "At 'plans.p.encryption.identity_file': cannot read identity file /nonexistent/key"),
    (f"encryption: {{recipients: [{ALICE}], passphrase: x}}", "At 'plans.p.encryption.passphrase': unknown key"),
])
def test_a_bad_plan_setting_names_its_path(tmp_path: Path, plan: str, expected: str) -> None:
    assert expected in errors_of(file_config(tmp_path, plan))


def test_a_bad_line_in_a_recipients_file_is_named_and_the_rest_still_checked(tmp_path: Path) -> None:
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(f"{ALICE}\nnot-a-key\n")
    text = errors_of(file_config(tmp_path, f"encryption: {{recipients_file: {recipients}}}\naccess_tier: warm"))
    assert "At 'plans.p.encryption.recipients_file': line 2: 'not-a-key' is not an age X25519 recipient" in text
    assert "At 'plans.p.access_tier': 'warm' is not an access tier" in text


def test_an_identity_file_is_checked_without_ever_printing_it(tmp_path: Path) -> None:
    empty, broken = tmp_path / "empty.txt", tmp_path / "broken.txt"
    empty.write_text("# nothing here\n")
    broken.write_text("AGE-SECRET-KEY-1SECRETBUTBROKEN\n")
    for path, words in ((empty, "holds no age identity"), (broken, "holds a malformed age identity")):
        text = errors_of(file_config(tmp_path, f"encryption: {{recipients: [{ALICE}], identity_file: {path}}}"))
        assert f"At 'plans.p.encryption.identity_file': identity file {path} {words}" in text
        assert "SECRETBUTBROKEN" not in text


def test_an_error_in_a_default_is_reported_once_at_defaults(tmp_path: Path) -> None:
    path = tmp_path / "backup.yml"
    path.write_text("storage: {type: local, path: /b}\ndefaults: {compression_level: 9, access_tier: hot}\n"
                    "plans:\n  a: {mongodb_uri: 'mongodb://h/'}\n  b: {mongodb_uri: 'mongodb://h/', "
                    "compression_level: 12}\n")
    with pytest.raises(ConfigError) as raised:
        config.load_file(path, {})
    assert raised.value.errors == [
        f"{path}: At 'defaults.compression_level': must be between 0 and 3, got 9",
        f"{path}: At 'plans.b.compression_level': must be between 0 and 3, got 12",
    ]


@pytest.mark.parametrize(("env", "expected"), [
    ({"BACKUP_COMPRESSION_LEVEL": "5"}, "environment: BACKUP_COMPRESSION_LEVEL: must be between 0 and 3, got 5"),
    ({"BACKUP_PARALLEL_COLLECTIONS": "many"}, "environment: BACKUP_PARALLEL_COLLECTIONS: 'many' is not a whole number"),
    ({"BACKUP_MONGODUMP_COMPRESS": "perhaps"},
     "environment: BACKUP_MONGODUMP_COMPRESS: 'perhaps' is not true or false"),
    ({"BACKUP_ACCESS_TIER": "archive"}, "environment: BACKUP_ACCESS_TIER: 'archive' is not an access tier"),
    ({"BACKUP_AGE_RECIPIENTS": f"{ALICE},age1bad"},
     "environment: BACKUP_AGE_RECIPIENTS: 'age1bad' is not an age X25519 recipient"),
    ({"BACKUP_AGE_IDENTITY_FILE": "/nonexistent/key"}, "environment: BACKUP_AGE_RECIPIENTS: has no recipient"),
    ({"BACKUP_AGE_RECIPIENTS_FILE": "/nonexistent/r"},
     "environment: BACKUP_AGE_RECIPIENTS_FILE: cannot read recipients file /nonexistent/r"),
])
def test_a_bad_plan_setting_from_the_environment_names_the_variable(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        config.from_environment({**LOCAL, **env})
    assert expected in "\n".join(raised.value.errors)


def test_environment_errors_are_all_reported_together() -> None:
    with pytest.raises(ConfigError) as raised:
        config.from_environment({"BACKUP_SCHEDULE": "0 25 * * *", "BACKUP_KEEP_DAILY": "-1"})
    text = "\n".join(raised.value.errors)
    for words in ("environment: MONGODB_URI is not set", "environment: no storage configured",
                  "environment: BACKUP_SCHEDULE: invalid cron expression '0 25 * * *'",
                  "environment: BACKUP_KEEP_DAILY: must be 0 or more, got -1"):
        assert words in text, text


def test_type_errors_read_as_one_line_without_pydantic_wording_or_secret_values(tmp_path: Path) -> None:
    text = errors_of(file_config(tmp_path, "include: [1]\nprefix: [a]\nretention: daily", extra="""
server: {max_parallel_runs: 2.5, api_token: 424242}
pushgateway: {password: 31337, grouping_key: [a]}
"""))
    for words in ("At 'plans.p.include[0]': expected text, got int 1", "At 'plans.p.prefix': expected text",
                  "At 'plans.p.retention': expected a mapping, got str 'daily'",
                  "At 'server.max_parallel_runs': 2.5 is not a whole number",
                  "At 'server.api_token': expected text, got int", "At 'pushgateway.password': expected text, got int",
                  "At 'pushgateway.grouping_key': expected a mapping"):
        assert words in text, text
    assert "424242" not in text and "31337" not in text
    assert "Input should" not in text and "pydantic" not in text and "http" not in text


def test_attribute_names_are_not_yaml_keys(tmp_path: Path) -> None:
    text = errors_of(file_config(tmp_path, "max_age_seconds: 60\nname: other", extra="server: {listen_port: 1}\n"))
    for key in ("plans.p.max_age_seconds", "plans.p.name", "server.listen_port"):
        assert f"At '{key}': unknown key (known keys: " in text, text


def test_configuration_is_frozen(tmp_path: Path) -> None:
    cfg = config.load_file(file_config(tmp_path, ""), {})
    with pytest.raises(pydantic.ValidationError):
        cfg.plans["p"].compression_level = 3  # type: ignore[misc]


def test_check_config_shows_recipients_and_exits_78_on_an_empty_encryption(tmp_path: Path,
                                                                            identity_file: Path) -> None:
    path = file_config(tmp_path, f"encryption: {{recipients: [{ALICE}], identity_file: {identity_file}}}\n"
                                 "access_tier: hot")
    result = backupctl(["check-config", "--config", str(path)], base_env())
    assert result.returncode == 0, result.stderr
    assert ALICE in result.stdout and "AGE-SECRET-KEY" not in result.stdout and "access_tier: Hot" in result.stdout
    result = backupctl(["check-config", "--config", str(file_config(tmp_path, "encryption: {}"))], base_env())
    assert result.returncode == 78 and "At 'plans.p.encryption': has no recipient" in result.stderr
    assert "Traceback" not in result.stderr


def test_code_builds_models_with_attribute_names_and_they_are_still_validated() -> None:
    plan = config.PlanConfig(name="p", mongodb_uri="mongodb://h/", max_age_seconds=60, compression_level=2)
    assert (plan.name, plan.max_age_seconds, plan.compression_level, plan.schedule.expression) == (
        "p", 60, 2, "0 */6 * * *")
    with pytest.raises(pydantic.ValidationError, match="must be between 0 and 3, got 7"):
        config.PlanConfig(name="p", mongodb_uri="mongodb://h/", compression_level=7)
    with pytest.raises(pydantic.ValidationError, match="is not an age X25519 recipient"):
        config.EncryptionConfig(recipients=("age1nope",))


def test_a_plan_has_a_default_timeout_so_a_hung_dump_cannot_hold_it_forever() -> None:
    cfg = config.from_mapping({"storage": {"type": "local", "path": "/tmp"},
                               "plans": {"p": {"mongodb_uri": "mongodb://db/"}}}, {}, "t.yml")
    assert cfg.plans["p"].timeout_seconds == 8 * 3600


@pytest.mark.parametrize(("value", "expected"), [
    ("14", "At 'storage.lease_seconds': must be between 15 and 60, got 14"),
    ("61", "At 'storage.lease_seconds': must be between 15 and 60, got 61"),
    ("20.5", "At 'storage.lease_seconds': 20.5 is not a whole number"),
    ("true", "At 'storage.lease_seconds': expected a whole number, got a boolean"),
])
def test_the_azure_lease_period_is_15_to_60_whole_seconds(tmp_path: Path, value: str, expected: str) -> None:
    path = tmp_path / "backup.yml"
    path.write_text("storage:\n  container: c\n  connection_string: AccountName=a;AccountKey=k\n"
                    f"  lease_seconds: {value}\nplans:\n  p:\n    mongodb_uri: mongodb://db/\n")
    assert expected in errors_of(path)


def test_the_azure_lease_period_defaults_to_60_seconds_and_takes_a_shorter_one(tmp_path: Path) -> None:
    path = tmp_path / "backup.yml"
    text = "storage:\n  container: c\n  connection_string: AccountName=a;AccountKey=k\nplans:\n  p:\n    mongodb_uri: mongodb://db/\n"
    path.write_text(text)
    assert config.load_file(path, {}).storage.lease_seconds == 60
    path.write_text(text.replace("storage:\n", "storage:\n  lease_seconds: 15\n"))
    assert config.load_file(path, {}).storage.lease_seconds == 15
