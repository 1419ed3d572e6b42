"""The `backupctl` command line itself: global options anywhere, env defaults in help, one-line usage errors,
shell completion. Driven through real subprocesses, like operators run it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from backup_exporter.cli.push_settings import PushFlags, push_config
from backup_exporter.config import PushConfig
from backup_exporter.core.errors import UsageError
from tests.cli_helpers import FAKE_MONGODUMP, backupctl, base_env

GOOD = """storage: {type: local, path: /nonexistent-but-unused}
plans:
  orders: {mongodb_uri: "mongodb://u:TopSecret@db/", schedule: "0 3 * * *"}
"""


@pytest.fixture
def good_config(tmp_path: Path) -> Path:
    path = tmp_path / "backup.yml"
    path.write_text(GOOD)
    return path


def local_run_env(store: Path) -> dict[str, str]:
    store.mkdir(exist_ok=True)
    return base_env(MONGODB_URI="mongodb://127.0.0.1:1/", BACKUP_LOCAL_DIR=str(store), BACKUP_ENGINE="mongodump",
                    BACKUP_MONGODUMP_PATH=FAKE_MONGODUMP, FAKE_MONGODUMP_MODE="ok")


# --- global options before or after the command ----------------------------------------------------------

def test_config_is_accepted_before_and_after_the_command(good_config: Path) -> None:
    before = backupctl(["--config", str(good_config), "check-config"], base_env())
    after = backupctl(["check-config", "--config", str(good_config)], base_env())
    assert before.returncode == 0, before.stderr
    assert after.returncode == 0, after.stderr
    assert before.stdout == after.stdout
    assert f"# configuration from {good_config}: OK" in before.stdout


def test_the_commands_own_config_wins_over_the_one_before_it(good_config: Path, tmp_path: Path) -> None:
    result = backupctl(["--config", str(tmp_path / "missing.yml"), "check-config", "--config", str(good_config)],
                       base_env())
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("argv", [
    ["--log-format", "json", "-v", "run-now", "--quiet"],
    ["run-now", "--quiet", "--log-format", "json", "-v"],
    ["--log-format", "json", "run-now", "--quiet", "-v"],
])
def test_log_format_and_verbose_work_on_either_side_of_the_command(argv: list[str], tmp_path: Path) -> None:
    result = backupctl(argv, local_run_env(tmp_path / "store"))
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and all(line.startswith("{") for line in lines), result.stderr
    entries = [json.loads(line) for line in lines]
    assert any(e["level"] == "debug" for e in entries), "-v gives debug lines"
    assert {"started", "succeeded"} <= {e.get("event") for e in entries}


# --- environment defaults ------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["--help"], ["check-config", "--help"], ["run-now", "--help"]])
def test_help_names_the_environment_variable_behind_config(argv: list[str]) -> None:
    result = backupctl(argv, base_env())
    assert result.returncode == 0, result.stderr
    assert "env var: BACKUPCTL_CONFIG" in " ".join(result.stdout.split())


def test_run_now_help_names_the_settings_behind_its_push_flags() -> None:
    text = " ".join(backupctl(["run-now", "--help"], base_env()).stdout.split())
    assert "BACKUP_PUSHGATEWAY_URL" in text and "pushgateway.url" in text
    assert "BACKUP_API_TOKEN" in text


def test_backupctl_config_in_the_environment_is_the_default(good_config: Path) -> None:
    result = backupctl(["check-config"], base_env(BACKUPCTL_CONFIG=str(good_config)))
    assert result.returncode == 0, result.stderr
    assert f"# configuration from {good_config}: OK" in result.stdout


# --- usage errors ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "words"), [
    (["run-now", "--bogus"], "backupctl run-now: No such option '--bogus'"),
    (["--bogus", "status"], "backupctl: No such option '--bogus'"),
    (["status", "--log-format", "xml"], "Invalid value for '--log-format': 'xml' is not one of 'text', 'json'"),
    (["--log-format", "xml", "status"], "Invalid value for '--log-format'"),
    (["run-now", "--push-timeout", "soon"], "Invalid value for '--push-timeout': 'soon' is not a valid float"),
    (["restore", "--engine", "fast"], "Invalid value for '--engine'"),
    (["verify", "one", "two"], "Got unexpected extra argument (two)"),
    (["run-now", "--plan"], "Option '--plan' requires an argument"),
    (["frobnicate"], "No such command 'frobnicate'"),
    ([], "a command is required"),
])
def test_a_usage_error_is_one_line_naming_the_problem_with_exit_64(argv: list[str], words: str) -> None:
    result = backupctl(argv, base_env())
    assert result.returncode == 64, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert words in result.stderr
    assert "(see 'backupctl" in result.stderr
    for noise in ("Traceback", "Usage:", "Try '", "Error:"):
        assert noise not in result.stderr
    assert result.stdout == ""


def test_a_usage_error_never_shows_a_password_given_on_the_command_line() -> None:
    result = backupctl(["restore", "--latest", "--engine", "mongodb://root:Pw-9x@db/"], base_env())
    assert result.returncode == 64, result.stderr
    assert "Pw-9x" not in result.stderr


def test_help_and_version_exit_0() -> None:
    assert backupctl(["--help"], base_env()).returncode == 0
    assert backupctl(["prune", "-h"], base_env()).returncode == 0
    version = backupctl(["--version"], base_env())
    assert version.returncode == 0 and version.stdout.startswith("backupctl ")


# --- shell completion ------------------------------------------------------------------------------------

def _installed_backupctl() -> str:
    path = shutil.which("backupctl")
    if path is None:
        pytest.skip("the backupctl console script is not installed (pip install -e .)")
    return path


def test_bash_completion_prints_a_completion_script() -> None:
    result = subprocess.run([_installed_backupctl()], env=base_env(_BACKUPCTL_COMPLETE="bash_source"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "_backupctl_completion()" in result.stdout
    assert "complete -o nosort -F _backupctl_completion backupctl" in result.stdout


def test_completion_offers_commands_and_their_options() -> None:
    def complete(words: str) -> list[str]:
        env = base_env(_BACKUPCTL_COMPLETE="bash_complete", COMP_WORDS=words,
                       COMP_CWORD=str(len(words.split()) - 1))
        result = subprocess.run([_installed_backupctl()], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert "plain,run-now" in complete("backupctl ru")
    assert "plain,--pushgateway" in complete("backupctl run-now --pu")


# --- push settings merged in the CLI layer -----------------------------------------------------------------

def test_push_flags_win_over_the_configuration_and_url_credentials_move_to_basic_auth() -> None:
    base = PushConfig(url="http://config-gw:9091", job="from-config", grouping_key={"cluster": "eu"},
                      timeout_seconds=5.0)
    merged = push_config(base, PushFlags(pushgateway="https://bob:s%40cret@flag-gw:9091", grouping_key=("az=1",),
                                         push_timeout=2.5))
    assert merged.url == "https://flag-gw:9091"
    assert (merged.username, merged.password) == ("bob", "s@cret")
    assert merged.job == "from-config"
    assert dict(merged.grouping_key) == {"cluster": "eu", "az": "1"}
    assert merged.timeout_seconds == 2.5


def test_no_push_flags_leave_the_configuration_as_it_is() -> None:
    base = PushConfig(url="http://config-gw:9091", textfile="/var/lib/x.prom")
    assert push_config(base, PushFlags()) == base


def test_a_malformed_url_without_scheme_never_echoes_its_password() -> None:
    with pytest.raises(UsageError) as caught:
        push_config(PushConfig(), PushFlags(pushgateway="admin:Hunter-2@gateway:9091"))
    assert "is not an http(s) URL" in caught.value.message
    assert "Hunter-2" not in caught.value.message
