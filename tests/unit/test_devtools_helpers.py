"""Fast unit tests for jejaring-devtools (no broker, no database)."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jejaring_devtools import kafka, paths
from jejaring_devtools.cli import app
from jejaring_devtools.kafka import KafkaBroker, new_cluster_id, render_properties
from jejaring_devtools.postgres import PostgresServer


def test_repo_root_holds_the_pom() -> None:
    root = paths.repo_root()
    assert (root / "deploy" / "kafka" / "pom.xml").is_file()
    assert (root / "deploy" / "kafka" / "log4j2.properties").is_file()


def test_repo_root_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JEJARING_ROOT", str(tmp_path))
    with pytest.raises(paths.RepoRootNotFoundError):
        paths.repo_root()
    (tmp_path / "deploy" / "kafka").mkdir(parents=True)
    (tmp_path / "deploy" / "kafka" / "pom.xml").write_text("<project/>")
    assert paths.repo_root() == tmp_path.resolve()


def test_cache_dir_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JEJARING_CACHE_DIR", str(tmp_path / "c"))
    assert paths.cache_dir() == (tmp_path / "c").resolve()
    monkeypatch.delenv("JEJARING_CACHE_DIR")
    assert paths.cache_dir() == paths.repo_root() / ".cache"


def test_free_port_is_bindable() -> None:
    port = paths.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert not paths.port_in_use(port)


def test_server_properties_rendering(tmp_path: Path) -> None:
    props = kafka.server_properties(
        port=1234, controller_port=5678, log_dir=tmp_path / "data", extra={"num.partitions": "3"}
    )
    text = render_properties(props)
    lines = dict(
        line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert lines["process.roles"] == "broker,controller"
    assert lines["listeners"] == "PLAINTEXT://127.0.0.1:1234,CONTROLLER://127.0.0.1:5678"
    assert lines["advertised.listeners"] == "PLAINTEXT://127.0.0.1:1234"
    assert lines["controller.quorum.bootstrap.servers"] == "127.0.0.1:5678"
    assert lines["log.dirs"] == str(tmp_path / "data")
    assert lines["offsets.topic.replication.factor"] == "1"
    assert lines["num.partitions"] == "3"  # extra overrides defaults


def test_cluster_id_shape() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cid in ids:
        assert len(cid) == 22
        assert not cid.startswith("-")
        assert "=" not in cid


def test_broker_ports_fixed_and_remembered(tmp_path: Path) -> None:
    broker = KafkaBroker(tmp_path / "k")
    assert broker.port != broker.controller_port
    assert broker.bootstrap_servers == f"127.0.0.1:{broker.port}"
    broker.write_config()
    broker._write_state(pid=None)
    again = KafkaBroker.attach(tmp_path / "k")
    assert (again.port, again.controller_port) == (broker.port, broker.controller_port)
    assert not again.is_running()
    again.stop()  # stopping a stopped broker is a no-op
    explicit = KafkaBroker(tmp_path / "k", port=4242)
    assert explicit.port == 4242
    assert explicit.controller_port == broker.controller_port


def test_attach_without_state(tmp_path: Path) -> None:
    with pytest.raises(kafka.KafkaError):
        KafkaBroker.attach(tmp_path / "nothing")


def test_stale_pid_file_is_not_running(tmp_path: Path) -> None:
    broker = KafkaBroker(tmp_path / "k")
    broker.home.mkdir(parents=True)
    broker.pid_path.write_text(f"{os.getpid()}\n")  # alive, but not a Kafka broker
    assert broker.pid is None
    assert not broker.is_running()


def test_warm_jar_cache_skips_maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = kafka.kafka_home("9.9.9", cache=tmp_path)
    (base / "libs").mkdir(parents=True)
    (base / "libs" / "kafka_2.13-9.9.9.jar").write_bytes(b"")
    pom = paths.repo_root() / "deploy" / "kafka" / "pom.xml"
    marker = {"jars": ["kafka_2.13-9.9.9.jar"], "pom_sha256": kafka._pom_digest(pom)}
    (base / kafka.MARKER_NAME).write_text(json.dumps(marker))
    monkeypatch.setenv("PATH", "")  # mvn would not even be found
    assert kafka.ensure_kafka_jars("9.9.9", cache=tmp_path) == base / "libs"


def test_postgres_urls(tmp_path: Path) -> None:
    pg = PostgresServer(tmp_path / "pg", port=6543)
    assert pg.url("stock") == "postgresql+asyncpg://postgres@127.0.0.1:6543/stock"
    assert pg.dsn("stock") == "postgresql://postgres@127.0.0.1:6543/stock"
    with pytest.raises(ValueError, match="invalid database name"):
        pg.create_database('x"; DROP DATABASE postgres; --')


def test_cli_help_lists_commands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "kafka" in result.output
    assert "pg" in result.output
    result = CliRunner().invoke(app, ["kafka", "--help"])
    for command in ("fetch", "start", "stop", "status"):
        assert command in result.output


def test_cli_status_of_unknown_home(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["kafka", "status", "--home", str(tmp_path / "k")])
    assert result.exit_code == 1
    assert "never started" in result.output


def test_postgres_prepares_traversable_parents(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only relevant when running as root")
    secret = tmp_path / "secret"
    secret.mkdir(mode=0o700)
    PostgresServer(secret / "pg", port=1)._prepare_home()
    assert secret.stat().st_mode & stat.S_IXOTH
