"""Pure command builders: argv never carries the connection string; --config carries it literally."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from backup_exporter import config as config_module
from backup_exporter.core import argv as commands
from backup_exporter.core.errors import UsageError
from backup_exporter.operations.run import select_engine

URI = "mongodb://dbuser:S3cr3t%40x@db-0.example.net:27017,db-1.example.net:27017/?replicaSet=rs0&authSource=admin"


def test_mongodump_argv_streams_a_gzip_archive_and_takes_the_uri_from_config() -> None:
    argv = commands.mongodump_argv("/usr/bin/mongodump", include=["shop.*"], exclude=["shop.tmp"],
                                   extra_args=["--readPreference=secondary"])
    assert argv == ("/usr/bin/mongodump", "--archive", "--gzip", "--config={config}", "--db=shop",
                    "--excludeCollection=tmp", "--readPreference=secondary")


@pytest.mark.parametrize(("include", "exclude", "expected"), [
    ([], [], ()),
    (["shop.orders"], [], ("--db=shop", "--collection=orders")),
    (["shop.*"], ["shop.tmp_*", "shop.cache"], ("--db=shop", "--excludeCollectionsWithPrefix=tmp_",
                                                "--excludeCollection=cache")),
])
def test_mongodump_gets_the_filters_it_understands(include: list[str], exclude: list[str],
                                                   expected: tuple[str, ...]) -> None:
    assert commands.mongodump_filters(include, exclude) == expected


@pytest.mark.parametrize(("include", "exclude"), [
    (["a.*", "b.*"], []), (["*.users"], []), (["shop.u*"], []), ([], ["shop.tmp"]), (["shop.*"], ["crm.x"]),
])
def test_filters_mongodump_cannot_express_are_refused_naming_the_pattern(include: list[str],
                                                                         exclude: list[str]) -> None:
    # mongodump 100.8.0 has no --nsInclude/--nsExclude: it would stop with "unknown option".
    with pytest.raises(UsageError, match="engine mongodump cannot apply the namespace filter"):
        commands.mongodump_filters(include, exclude)


def test_the_native_child_gets_the_same_contract() -> None:
    argv = commands.native_dump_argv("/venv/bin/python", include=["a.*"], connect_timeout_s=2.5)
    assert argv[:3] == ("/venv/bin/python", "-m", "backup_exporter.engines.native")
    assert "--config={config}" in argv and "--include=a.*" in argv and "--connect-timeout=2.5" in argv


def test_no_argv_ever_holds_the_uri_a_host_or_the_password() -> None:
    for argv in (commands.mongodump_argv("mongodump"), commands.native_dump_argv("python"),
                 commands.mongorestore_argv("mongorestore", ns_include=["a.*"], drop=True)):
        text = " ".join(argv)
        for secret in ("mongodb://", "S3cr3t", "dbuser", "db-0.example.net", "27017"):
            assert secret not in text


def test_the_tool_config_holds_the_uri_as_one_literal_yaml_string() -> None:
    for uri in (URI, 'mongodb://u:p"a\\ss#x@h/?a=b: c', "mongodb://ü:pä@h/"):
        assert yaml.safe_load(commands.tool_config(uri)) == {"uri": uri}


def test_engine_auto_falls_back_to_native_for_filters_mongodump_cannot_apply(tmp_path: Path) -> None:
    tool = tmp_path / "mongodump"
    tool.write_text("#!/bin/sh\nexit 0\n")
    tool.chmod(0o755)
    cfg = config_module.from_mapping({
        "storage": {"type": "local", "path": str(tmp_path)},
        "plans": {"a": {"mongodb_uri": "mongodb://db/", "engine": "auto", "mongodump_path": str(tool),
                        "include": ["*.users"]},
                  "b": {"mongodb_uri": "mongodb://db/", "engine": "auto", "mongodump_path": str(tool),
                        "include": ["shop.*"]}}}, {}, "t")
    engine, why = select_engine(cfg.plans["a"])
    assert engine.name == "native" and "cannot apply the namespace filter '*.users'" in why
    assert select_engine(cfg.plans["b"])[0].name == "mongodump"
