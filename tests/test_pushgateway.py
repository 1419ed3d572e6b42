"""`backupctl run-now --pushgateway/--textfile` end to end: the real program, a real Pushgateway, the fake
mongodump and a local storage directory. What the gateway holds is read back from its JSON API and /metrics."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import ssl
import stat
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from backup_exporter.storage.local import LocalStorage
from tests import servers
from tests.cli_helpers import FAKE_MONGODUMP, backupctl, base_env

DATA = Path(__file__).parent / "data"
GOLDEN_SIZE = (DATA / "mongodump-100.8.0-sample.archive.gz").stat().st_size
RULES = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "backup-rules.yml"
# Test-only credentials matching the bcrypt hash in tests/data/pushgateway-basic-auth.yml.
PUSH_USER, PUSH_PASSWORD = "backup", "pushgw-test-only-pw"

PLAN = "nightly"
JOB = "mongodb-backup"
GAUGES = {
    "backup_last_success_timestamp_seconds", "backup_last_exit_code", "backup_last_attempt_timestamp_seconds",
    "backup_last_duration_seconds", "backup_last_size_bytes", "backup_max_age_seconds",
    "backup_exporter_build_info",
}
GATEWAY_OWN = {"push_time_seconds", "push_failure_time_seconds"}


# --- helpers ----------------------------------------------------------------------------------------------

@dataclass
class Group:
    labels: dict[str, str]
    values: dict[str, float]  # metric name -> value of its one sample
    sample_labels: dict[str, dict[str, str]]


def fetch(url: str, auth: tuple[str, str] | None = None, context: ssl.SSLContext | None = None) -> bytes:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        return response.read()  # type: ignore[no-any-return]


def groups(base_url: str, **kwargs: Any) -> list[Group]:
    data = json.loads(fetch(f"{base_url}/api/v1/metrics", **kwargs))
    found = []
    for raw in data["data"]:
        values, sample_labels = {}, {}
        for name, family in raw.items():
            if isinstance(family, dict) and "metrics" in family:
                (sample,) = family["metrics"]
                values[name] = float(sample["value"])
                sample_labels[name] = sample["labels"]
        found.append(Group(raw["labels"], values, sample_labels))
    return found


def pushed(base_url: str, plan: str = PLAN, job: str = JOB, **kwargs: Any) -> Group:
    matches = [g for g in groups(base_url, **kwargs) if g.labels.get("job") == job and g.labels.get("plan") == plan]
    assert len(matches) == 1, f"no single group job={job} plan={plan} in {[g.labels for g in groups(base_url)]}"
    return matches[0]


def url_of(gateway: servers.Server) -> str:
    return f"http://{gateway.address}"


def run_env(store: Path, **extra: str) -> dict[str, str]:
    # mongodump_compress: the fake's gzip bytes are stored unchanged, so sizes are the golden archive's.
    return base_env(MONGODB_URI="mongodb://127.0.0.1:1/", BACKUP_LOCAL_DIR=str(store), BACKUP_PLAN=PLAN,
                    BACKUP_PREFIX="prod", BACKUP_ENGINE="mongodump", BACKUP_MONGODUMP_PATH=FAKE_MONGODUMP,
                    BACKUP_MONGODUMP_COMPRESS="true", **extra)


def run_now(env: Mapping[str, str], *args: str, mode: str = "ok") -> subprocess.CompletedProcess[str]:
    return backupctl(["run-now", "--quiet", *args], {**env, "FAKE_MONGODUMP_MODE": mode})


def archives(store: Path) -> list[Path]:
    return sorted(store.rglob("*.archive.gz"))


def stored_status(store: Path) -> dict[str, Any]:
    return json.loads((store / "prod" / PLAN / "_status.json").read_text())  # type: ignore[no-any-return]


@pytest.fixture
def gateway(server_logs: Path) -> Iterator[servers.Server]:
    server = servers.start_pushgateway(server_logs)
    yield server
    server.stop()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    path.mkdir()
    return path


# --- what is pushed ---------------------------------------------------------------------------------------

def test_a_successful_run_pushes_every_gauge_of_the_plan_with_exit_code_zero_and_no_counters(
        gateway: servers.Server, store: Path) -> None:
    before = time.time()
    result = run_now(run_env(store), "--pushgateway", url_of(gateway))
    assert result.returncode == 0, result.stderr
    group = pushed(url_of(gateway))
    assert group.labels == {"job": JOB, "plan": PLAN}
    assert set(group.values) == GAUGES | GATEWAY_OWN
    assert group.values["backup_last_exit_code"] == 0
    assert group.values["backup_last_size_bytes"] == GOLDEN_SIZE
    assert before <= group.values["backup_last_attempt_timestamp_seconds"] \
        <= group.values["backup_last_success_timestamp_seconds"] <= time.time()
    assert group.values["backup_max_age_seconds"] == 28800
    assert group.values["push_failure_time_seconds"] == 0
    status = stored_status(store)
    assert group.values["backup_last_success_timestamp_seconds"] == status["last_success"]["finished"]
    for name in GAUGES - {"backup_exporter_build_info"}:
        assert group.sample_labels[name]["plan"] == PLAN
    # The gateway's own exposition, as Prometheus scrapes it: gauges only, no counter of ours.
    families = list(text_string_to_metric_families(fetch(f"{url_of(gateway)}/metrics").decode()))
    ours = {f.name: f.type for f in families if f.name.startswith("backup_")}
    assert ours and set(ours.values()) <= {"gauge", "info"}
    assert not [n for n in ours if n.endswith("_total") or n.startswith("backup_runs")]


def test_a_failure_after_a_success_keeps_the_last_success_and_size_and_pushes_the_new_exit_code(
        gateway: servers.Server, store: Path) -> None:
    env = run_env(store)
    assert run_now(env, "--pushgateway", url_of(gateway)).returncode == 0
    good = pushed(url_of(gateway)).values
    failed = run_now(env, "--pushgateway", url_of(gateway), mode="fail")
    assert failed.returncode == 1, failed.stderr
    now = pushed(url_of(gateway)).values
    assert now["backup_last_success_timestamp_seconds"] == good["backup_last_success_timestamp_seconds"]
    assert now["backup_last_size_bytes"] == good["backup_last_size_bytes"] == GOLDEN_SIZE
    assert now["backup_last_exit_code"] == 1
    assert now["backup_last_attempt_timestamp_seconds"] > good["backup_last_attempt_timestamp_seconds"]
    assert now["push_time_seconds"] > good["push_time_seconds"]


@pytest.mark.parametrize("breakage", ["unreadable record", "volume not mounted"])
def test_a_failure_when_the_stored_status_cannot_be_trusted_leaves_the_last_success_alone(
        breakage: str, gateway: servers.Server, store: Path, tmp_path: Path) -> None:
    env = run_env(store)
    textfile = tmp_path / "backup.prom"
    assert run_now(env, "--pushgateway", url_of(gateway), "--textfile", str(textfile)).returncode == 0
    good = pushed(url_of(gateway)).values
    if breakage == "unreadable record":
        (store / "prod" / PLAN / "_status.json").write_text("{not json")  # e.g. a foreign or damaged record
        expected_code = 1
    else:
        env = run_env(tmp_path / "not-mounted")  # reads as "no record": must not mean "never succeeded"
        expected_code = 74
    failed = run_now(env, "--pushgateway", url_of(gateway), "--textfile", str(textfile), mode="fail")
    assert failed.returncode == expected_code, failed.stderr
    now = pushed(url_of(gateway)).values
    assert now["backup_last_exit_code"] == expected_code
    assert now["backup_last_success_timestamp_seconds"] == good["backup_last_success_timestamp_seconds"]
    assert now["backup_last_size_bytes"] == GOLDEN_SIZE
    # The textfile is rewritten whole, so it carries the last success over from its previous content.
    values = textfile_values(textfile)
    assert values["backup_last_exit_code"] == expected_code
    assert values["backup_last_success_timestamp_seconds"] == good["backup_last_success_timestamp_seconds"]
    assert values["backup_last_size_bytes"] == GOLDEN_SIZE


def test_a_success_after_a_failure_makes_every_gauge_current_again(gateway: servers.Server, store: Path) -> None:
    env = run_env(store)
    assert run_now(env, "--pushgateway", url_of(gateway), mode="fail").returncode == 1
    failed = pushed(url_of(gateway)).values
    assert run_now(env, "--pushgateway", url_of(gateway)).returncode == 0
    now = pushed(url_of(gateway)).values
    status = stored_status(store)
    assert now["backup_last_exit_code"] == 0
    assert now["backup_last_attempt_timestamp_seconds"] == status["last_attempt"]["started"]
    assert now["backup_last_attempt_timestamp_seconds"] > failed["backup_last_attempt_timestamp_seconds"]
    assert now["backup_last_success_timestamp_seconds"] == status["last_success"]["finished"]
    assert now["backup_last_success_timestamp_seconds"] >= now["backup_last_attempt_timestamp_seconds"]
    assert now["backup_last_size_bytes"] == GOLDEN_SIZE
    # Measured by the monotonic clock (the wall clock may jump during a run), so only near finished - started.
    assert now["backup_last_duration_seconds"] == status["last_attempt"]["elapsed"]
    assert now["backup_last_duration_seconds"] == pytest.approx(
        status["last_attempt"]["finished"] - status["last_attempt"]["started"], abs=0.05)


def test_a_first_ever_run_that_fails_pushes_its_exit_code_and_zero_for_never_succeeded(
        gateway: servers.Server, store: Path) -> None:
    result = run_now(run_env(store), "--pushgateway", url_of(gateway), mode="crash")
    assert result.returncode == 137, result.stderr
    values = pushed(url_of(gateway)).values
    assert values["backup_last_exit_code"] == 137
    assert values["backup_last_attempt_timestamp_seconds"] > 0
    # Documented meaning of 0: "none ever succeeded" (what BackupNeverSucceeded looks for); no time is invented.
    assert values["backup_last_success_timestamp_seconds"] == 0
    assert values["backup_last_size_bytes"] == 0
    assert stored_status(store)["last_success"] is None


def test_a_first_ever_run_whose_storage_is_unreachable_pushes_no_success_gauges_at_all(
        gateway: servers.Server, tmp_path: Path) -> None:
    result = run_now(run_env(tmp_path / "not-mounted"), "--pushgateway", url_of(gateway))
    assert result.returncode == 74, result.stderr
    values = pushed(url_of(gateway)).values
    assert values["backup_last_exit_code"] == 74
    assert not set(values) & {"backup_last_success_timestamp_seconds", "backup_last_size_bytes"}


def test_a_run_skipped_on_a_held_lock_exits_75_and_republishes_the_stored_record_unchanged(
        gateway: servers.Server, store: Path) -> None:
    env = run_env(store)
    assert run_now(env, "--pushgateway", url_of(gateway)).returncode == 0
    good = pushed(url_of(gateway)).values
    storage = LocalStorage(store)
    with storage.lock(f"prod/{PLAN}/_lock", "another run on host-b"):
        result = run_now(env, "--pushgateway", url_of(gateway))
    assert result.returncode == 75, result.stderr
    now = pushed(url_of(gateway)).values
    # Like the daemon, a skipped run is no failed run: the holder of the lock will publish its own result.
    assert {k: now[k] for k in GAUGES} == {k: good[k] for k in GAUGES}
    assert now["push_time_seconds"] > good["push_time_seconds"]


# --- grouping and settings --------------------------------------------------------------------------------

def test_job_and_extra_grouping_keys_become_the_labels_of_the_gateway_group(
        gateway: servers.Server, store: Path) -> None:
    result = run_now(run_env(store), "--pushgateway", url_of(gateway), "--job", "nightly-backups",
                     "--grouping-key", "env=prod", "--grouping-key", "cluster=eu/west 1")
    assert result.returncode == 0, result.stderr
    group = pushed(url_of(gateway), job="nightly-backups")
    assert group.labels == {"job": "nightly-backups", "plan": PLAN, "env": "prod", "cluster": "eu/west 1"}
    assert group.sample_labels["backup_last_exit_code"] == {**group.labels, "instance": ""}
    assert not [g for g in groups(url_of(gateway)) if g.labels.get("job") == JOB]


def test_the_pushgateway_url_and_job_can_come_from_the_environment(gateway: servers.Server, store: Path) -> None:
    env = run_env(store, BACKUP_PUSHGATEWAY_URL=url_of(gateway) + "/", BACKUP_PUSHGATEWAY_JOB="cron-backup")
    result = run_now(env)
    assert result.returncode == 0, result.stderr
    assert pushed(url_of(gateway), job="cron-backup").values["backup_last_exit_code"] == 0


@pytest.mark.parametrize(("args", "words"), [
    (["--grouping-key", "plan=other"], "grouping key 'plan' is set by backupctl"),
    (["--grouping-key", "env"], "'env' is not KEY=VALUE"),
    (["--grouping-key", "bad-name=x"], "'bad-name' is not a valid Prometheus label name"),
    (["--push-timeout", "0"], "must be more than 0 seconds"),
    (["--push-cert-file", "/nonexistent.crt"], "go together"),
])
def test_malformed_push_settings_are_usage_errors_before_any_backup_runs(
        args: list[str], words: str, gateway: servers.Server, store: Path) -> None:
    result = run_now(run_env(store), "--pushgateway", url_of(gateway), *args)
    assert result.returncode == 64, result.stderr
    assert words in result.stderr, result.stderr
    assert archives(store) == []
    assert groups(url_of(gateway)) == []


def test_a_url_that_is_not_http_is_rejected_before_the_backup(store: Path) -> None:
    result = run_now(run_env(store), "--pushgateway", "pushgateway:9091")
    assert result.returncode == 64, result.stderr
    assert "is not an http(s) URL" in result.stderr
    assert archives(store) == []


# --- authentication and TLS -------------------------------------------------------------------------------

@pytest.fixture
def auth_gateway(server_logs: Path) -> Iterator[servers.Server]:
    server = servers.start_pushgateway(
        server_logs, extra_args=[f"--web.config.file={DATA / 'pushgateway-basic-auth.yml'}"])
    yield server
    server.stop()


def test_basic_auth_with_the_password_from_a_file_is_accepted(
        auth_gateway: servers.Server, store: Path, tmp_path: Path) -> None:
    password_file = tmp_path / "push-password"
    password_file.write_text(PUSH_PASSWORD + "\n")
    result = run_now(run_env(store), "--pushgateway", url_of(auth_gateway), "--push-username", PUSH_USER,
                     "--push-password-file", str(password_file))
    assert result.returncode == 0, result.stderr
    group = pushed(url_of(auth_gateway), auth=(PUSH_USER, PUSH_PASSWORD))
    assert group.values["backup_last_exit_code"] == 0
    assert PUSH_PASSWORD not in result.stderr + result.stdout


def test_basic_auth_with_the_password_from_the_environment_is_accepted(
        auth_gateway: servers.Server, store: Path) -> None:
    env = run_env(store, BACKUP_PUSHGATEWAY_URL=url_of(auth_gateway), BACKUP_PUSHGATEWAY_USERNAME=PUSH_USER,
                  BACKUP_PUSHGATEWAY_PASSWORD=PUSH_PASSWORD)
    result = run_now(env, "-v")
    assert result.returncode == 0, result.stderr
    assert pushed(url_of(auth_gateway), auth=(PUSH_USER, PUSH_PASSWORD)).values["backup_last_exit_code"] == 0
    assert PUSH_PASSWORD not in result.stderr + result.stdout


@pytest.mark.parametrize("password", ["wrong-Secret-42", None])
def test_refused_credentials_exit_76_naming_the_gateway_keep_the_backup_and_never_print_the_password(
        password: str | None, auth_gateway: servers.Server, store: Path) -> None:
    extra = {"BACKUP_PUSHGATEWAY_USERNAME": PUSH_USER, "BACKUP_PUSHGATEWAY_PASSWORD": password} if password else {}
    env = run_env(store, **extra)
    result = run_now(env, "--pushgateway", url_of(auth_gateway), "-v")
    assert result.returncode == 76, result.stderr
    assert f"push to Pushgateway {url_of(auth_gateway)} failed: HTTP 401" in result.stderr
    assert ("check the basic-auth user and password" if password else "requires basic auth") in result.stderr
    if password:
        assert password not in result.stderr + result.stdout
    assert len(archives(store)) == 1
    assert stored_status(store)["last_attempt"]["result"] == "success"
    assert groups(url_of(auth_gateway), auth=(PUSH_USER, PUSH_PASSWORD)) == []


def test_credentials_written_into_the_url_are_used_and_never_printed(
        auth_gateway: servers.Server, store: Path) -> None:
    good = run_now(run_env(store), "--pushgateway",
                   f"http://{PUSH_USER}:{PUSH_PASSWORD}@{auth_gateway.address}")
    assert good.returncode == 0, good.stderr
    bad = run_now(run_env(store), "--pushgateway", f"http://{PUSH_USER}:Wrong-In-Url-7@{auth_gateway.address}")
    assert bad.returncode == 76, bad.stderr
    assert f"http://{auth_gateway.address}" in bad.stderr
    assert "Wrong-In-Url-7" not in bad.stderr + bad.stdout


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def tls_files(tmp_path: Path) -> Path:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    d = tmp_path / "tls"
    d.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=test-ca", "-days", "2",
             cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return d


@pytest.fixture
def tls_gateway(server_logs: Path, tls_files: Path) -> Iterator[servers.Server]:
    web = tls_files / "web.yml"
    web.write_text(yaml.safe_dump({"tls_server_config": {
        "cert_file": str(tls_files / "server.crt"), "key_file": str(tls_files / "server.key"),
        "client_auth_type": "RequireAndVerifyClientCert", "client_ca_file": str(tls_files / "ca.crt")}}))
    server = servers.start_pushgateway(server_logs, extra_args=[f"--web.config.file={web}"])
    yield server
    server.stop()


def test_a_ca_bundle_and_client_certificate_from_the_config_file_push_over_mutual_tls(
        tls_gateway: servers.Server, tls_files: Path, store: Path, tmp_path: Path) -> None:
    config = tmp_path / "backup.yml"
    config.write_text(yaml.safe_dump({
        "storage": {"type": "local", "path": str(store)},
        "pushgateway": {"url": f"https://{tls_gateway.address}", "ca_file": str(tls_files / "ca.crt"),
                        "cert_file": str(tls_files / "client.crt"), "key_file": str(tls_files / "client.key"),
                        "timeout": "5s", "grouping_key": {"env": "test"}},
        "plans": {PLAN: {"mongodb_uri": "mongodb://127.0.0.1:1/", "prefix": "prod", "engine": "mongodump",
                         "mongodump_path": FAKE_MONGODUMP, "mongodump_compress": True,
                         "schedule": "0 3 * * *"}},
    }))
    result = run_now(base_env(), "--config", str(config))
    assert result.returncode == 0, result.stderr
    context = ssl.create_default_context(cafile=str(tls_files / "ca.crt"))
    context.load_cert_chain(str(tls_files / "client.crt"), str(tls_files / "client.key"))
    group = pushed(f"https://{tls_gateway.address}", context=context)
    assert group.labels == {"job": JOB, "plan": PLAN, "env": "test"}
    assert group.values["backup_last_exit_code"] == 0


@pytest.mark.parametrize(("client_cert", "ca", "words"), [
    (False, True, "does the Pushgateway require a client certificate?"),
    (True, False, "certificate verification failed"),  # the system CAs do not know the test CA
])
def test_tls_failures_exit_76_with_the_reason_and_keep_the_backup(
        client_cert: bool, ca: bool, words: str, tls_gateway: servers.Server, tls_files: Path,
        store: Path) -> None:
    args = ["--pushgateway", f"https://{tls_gateway.address}"]
    if ca:
        args += ["--push-ca-file", str(tls_files / "ca.crt")]
    if client_cert:
        args += ["--push-cert-file", str(tls_files / "client.crt"), "--push-key-file", str(tls_files / "client.key")]
    result = run_now(run_env(store), *args)
    assert result.returncode == 76, result.stderr
    assert f"push to Pushgateway https://{tls_gateway.address} failed" in result.stderr
    assert words in result.stderr, result.stderr
    assert len(archives(store)) == 1


def test_a_missing_ca_file_fails_the_push_not_the_backup(gateway: servers.Server, store: Path) -> None:
    result = run_now(run_env(store), "--pushgateway", url_of(gateway), "--push-ca-file", "/nonexistent/ca.pem")
    assert result.returncode == 76, result.stderr
    assert "cannot load the TLS files (/nonexistent/ca.pem)" in result.stderr
    assert len(archives(store)) == 1


# --- an unreachable gateway -------------------------------------------------------------------------------

def test_an_unreachable_gateway_exits_76_names_its_url_and_keeps_the_backup(store: Path) -> None:
    url = f"http://127.0.0.1:{servers.free_port()}"
    result = run_now(run_env(store), "--pushgateway", url)
    assert result.returncode == 76, result.stderr
    assert f"push to Pushgateway {url} failed: connection refused" in result.stderr
    assert "is stored" in result.stderr
    (archive,) = archives(store)
    assert result.stdout.split("\t")[0] == archive.relative_to(store).as_posix()
    status = stored_status(store)
    assert status["last_attempt"]["result"] == "success" and status["last_success"]["size"] == GOLDEN_SIZE
    assert "Traceback" not in result.stderr


def test_a_failed_backup_with_the_gateway_down_exits_with_the_backups_own_code(store: Path) -> None:
    url = f"http://127.0.0.1:{servers.free_port()}"
    result = run_now(run_env(store), "--pushgateway", url, mode="fail")
    assert result.returncode == 1, result.stderr
    assert f"push to Pushgateway {url} failed" in result.stderr
    assert "exited with code 1" in result.stderr
    assert archives(store) == []


def test_a_gateway_that_never_answers_is_given_up_after_the_push_timeout(store: Path) -> None:
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        result = run_now(run_env(store), "--pushgateway", url, "--push-timeout", "1")
        elapsed = time.monotonic() - started
    assert result.returncode == 76, result.stderr
    assert "no answer within 1 s (timed out)" in result.stderr
    assert elapsed < 30
    assert len(archives(store)) == 1


# --- textfile ---------------------------------------------------------------------------------------------

def textfile_values(path: Path) -> dict[str, float]:
    values = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            values[sample.name] = sample.value
    return values


def test_the_textfile_holds_the_same_gauges_as_the_push_parses_and_is_replaced_atomically(
        gateway: servers.Server, store: Path, tmp_path: Path) -> None:
    directory = tmp_path / "textfile"
    directory.mkdir()
    target = directory / "mongodb-backup.prom"
    env = run_env(store)
    assert run_now(env, "--pushgateway", url_of(gateway), "--textfile", str(target)).returncode == 0
    first = target.read_text()
    families = list(text_string_to_metric_families(first))
    assert {s.name for f in families for s in f.samples} == GAUGES
    assert {f.type for f in families} <= {"gauge", "info"}
    pushed_values = pushed(url_of(gateway)).values
    assert {k: v for k, v in textfile_values(target).items()} == {k: pushed_values[k] for k in GAUGES}
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    with target.open() as reader:  # a collector in the middle of reading the old file
        result = run_now(env, "--textfile", str(target), mode="fail")
        assert result.returncode == 1, result.stderr
        assert reader.read() == first  # the old file was replaced, not rewritten in place
    assert textfile_values(target)["backup_last_exit_code"] == 1
    assert os.listdir(directory) == ["mongodb-backup.prom"]  # no temporary file left behind


def test_a_textfile_that_cannot_be_written_exits_76_and_keeps_the_backup(store: Path, tmp_path: Path) -> None:
    target = tmp_path / "missing-dir" / "backup.prom"
    result = run_now(run_env(store), "--textfile", str(target))
    assert result.returncode == 76, result.stderr
    assert f"cannot write textfile {target}" in result.stderr
    assert len(archives(store)) == 1


def test_the_textfile_path_can_come_from_the_environment(store: Path, tmp_path: Path) -> None:
    target = tmp_path / "env.prom"
    result = run_now(run_env(store, BACKUP_TEXTFILE=str(target)))
    assert result.returncode == 0, result.stderr
    assert textfile_values(target)["backup_last_size_bytes"] == GOLDEN_SIZE


# --- the alert rules on pushed metrics --------------------------------------------------------------------

def _as_promtool_series(exposition: str, job: str, rebase: float) -> list[dict[str, str]]:
    """Turn the gateway's /metrics into promtool input series for one push job, as Prometheus stores them
    (honor_labels: the pushed job label kept, empty labels dropped), with timestamps moved so that `rebase`
    (a real UNIX time) becomes 1000 s of the test's clock."""
    series = []
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.labels.get("job") != job:
                continue
            value = sample.value
            if value > 1e9 and (sample.name.endswith("timestamp_seconds") or sample.name.startswith("push_")):
                value = value - rebase + 1000
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()) if v != "")
            series.append({"series": f"{sample.name}{{{labels}}}", "values": f"{value:f}x1000"})
    return series


def _promtool_check(tmp_path: Path, series: list[dict[str, str]], fires: dict[str, list[int]]) -> None:
    """Evaluate every alert expression of the rules file (as recording rules: no `for`, no annotations)
    over `series`; `fires` maps alert name -> eval times (seconds) at which it must have a sample for our plan;
    every other alert must have none at those times."""
    rules = yaml.safe_load(RULES.read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    recorded = {"groups": [{"name": "as-records", "rules": [
        {"record": f"alert:{r['alert']}", "expr": r["expr"]} for r in alerts]}]}
    (tmp_path / "records.yml").write_text(yaml.safe_dump(recorded))
    times = sorted({t for ts in fires.values() for t in ts} | {1200})
    tests = []
    for t in times:
        for r in alerts:
            name = r["alert"]
            expected = t in fires.get(name, [])
            tests.append({"expr": f'count(alert:{name}{{plan="{PLAN}"}}) or vector(0)', "eval_time": f"{t}s",
                          "exp_samples": [{"labels": "{}", "value": 1 if expected else 0}]})
    (tmp_path / "test.yml").write_text(yaml.safe_dump({
        "rule_files": ["records.yml"], "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": tests}]}))
    check = subprocess.run(["promtool", "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.skipif(not RULES.exists() or not shutil.which("promtool"),
                    reason="deploy/prometheus/backup-rules.yml or promtool missing")
def test_the_alert_rules_fire_on_pushed_metrics_as_they_do_on_scraped_ones(
        gateway: servers.Server, store: Path, tmp_path: Path) -> None:
    env = run_env(store)

    def exposition() -> str:
        return fetch(f"{url_of(gateway)}/metrics").decode()

    # First-ever run fails: BackupJobFailed and BackupNeverSucceeded; nothing is too old.
    assert run_now(env, "--pushgateway", url_of(gateway), mode="fail").returncode == 1
    start = pushed(url_of(gateway)).values["backup_last_attempt_timestamp_seconds"]
    (tmp_path / "a").mkdir()
    _promtool_check(tmp_path / "a", _as_promtool_series(exposition(), JOB, start),
                    {"BackupJobFailed": [1200], "BackupNeverSucceeded": [1200]})
    # Success: quiet, until the success is older than backup_max_age_seconds (8h).
    assert run_now(env, "--pushgateway", url_of(gateway)).returncode == 0
    success = pushed(url_of(gateway)).values["backup_last_success_timestamp_seconds"]
    (tmp_path / "b").mkdir()
    _promtool_check(tmp_path / "b", _as_promtool_series(exposition(), JOB, success),
                    {"BackupTooOld": [1000 + 28800 + 120]})
    # Success then failure: BackupJobFailed; the kept success still ages into BackupTooOld.
    assert run_now(env, "--pushgateway", url_of(gateway), mode="fail").returncode == 1
    (tmp_path / "c").mkdir()
    _promtool_check(tmp_path / "c", _as_promtool_series(exposition(), JOB, success),
                    {"BackupJobFailed": [1200, 1000 + 28800 + 120], "BackupTooOld": [1000 + 28800 + 120]})


def test_a_retention_that_fails_after_a_pushed_backup_pushes_backup_last_retention_success_zero(
        gateway: servers.Server, store: Path) -> None:
    env = run_env(store, BACKUP_KEEP_LAST="1")
    assert run_now(env, "--pushgateway", url_of(gateway)).returncode == 0
    group = pushed(url_of(gateway))
    assert group.values["backup_last_retention_success"] == 1
    assert group.values["backup_last_retention_timestamp_seconds"] == stored_status(store)["last_success"]["finished"]
    # A leftover of a clock that once ran ahead: named months ahead of when it was written, it is "newest",
    # so retention refuses to decide (and deletes nothing) until someone looks at it.
    future = store / "prod" / PLAN / "2099-01-01T00-00-00Z.archive.gz"
    future.write_bytes(archives(store)[0].read_bytes())
    result = run_now(env, "--pushgateway", url_of(gateway))
    assert result.returncode == 0, result.stderr  # the backup itself is stored
    assert "retention of prod/nightly/ refused, nothing deleted" in result.stderr
    group = pushed(url_of(gateway))
    assert group.values["backup_last_exit_code"] == 0
    assert group.values["backup_last_retention_success"] == 0
    assert len(archives(store)) == 3
