"""``jejaring-dev``: run the local infrastructure (Kafka, PostgreSQL) by hand.

jejaring-dev kafka fetch
jejaring-dev kafka start [--home .data/kafka] [--port 9092]
jejaring-dev kafka status | stop
jejaring-dev pg start [--home .data/postgres] [--port 55432]
jejaring-dev pg status | stop | createdb NAME
jejaring-dev run [--database sqlite|postgresql] [--detach]   (Kafka + services + gateway)
jejaring-dev stop | status
jejaring-dev keys issue --role ops|admin|outlet:<id>|supplier:<id> | list | revoke KEY_ID
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from jejaring_devtools._proc import tail
from jejaring_devtools.kafka import KAFKA_VERSION, KafkaBroker, KafkaError, ensure_kafka_jars
from jejaring_devtools.paths import RepoRootNotFoundError, data_dir
from jejaring_devtools.postgres import PostgresError, PostgresServer
from jejaring_devtools.stack import GATEWAY, SERVICES, Stack, StackError

DEFAULT_KAFKA_PORT = 9092
DEFAULT_PG_PORT = 55432

app = typer.Typer(
    name="jejaring-dev",
    help="Jejaring developer tools: local Kafka broker and PostgreSQL, no containers.",
    no_args_is_help=True,
)
kafka_app = typer.Typer(help="Local single-node Kafka broker (KRaft).", no_args_is_help=True)
pg_app = typer.Typer(help="Local PostgreSQL server.", no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")
app.add_typer(pg_app, name="pg")

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

HomeOption = Annotated[
    Path | None,
    typer.Option("--home", help="State folder [default: <repo>/.data/kafka or .data/postgres]"),
]


@contextmanager
def _friendly_errors() -> Iterator[None]:
    try:
        yield
    except (KafkaError, PostgresError, RepoRootNotFoundError, StackError, ValueError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from exc


def _home(home: Path | None, name: str) -> Path:
    return home.resolve() if home is not None else data_dir() / name


# --------------------------------------------------------------------------- kafka


@kafka_app.command("fetch")
def kafka_fetch(
    version: Annotated[str, typer.Option(help="Kafka version")] = KAFKA_VERSION,
) -> None:
    """Download the broker jars (once) into the cache and print their folder."""
    with _friendly_errors():
        started = time.monotonic()
        libs = ensure_kafka_jars(version)
        err_console.print(f"Kafka {version} jars ready ({time.monotonic() - started:.1f}s)")
        console.print(str(libs), highlight=False)


@kafka_app.command("start")
def kafka_start(
    home: HomeOption = None,
    port: Annotated[int, typer.Option(help="PLAINTEXT listener port")] = DEFAULT_KAFKA_PORT,
    controller_port: Annotated[
        int | None, typer.Option(help="KRaft controller port [default: free port, then kept]")
    ] = None,
    heap: Annotated[str, typer.Option(help="JVM max heap (-Xmx)")] = "512m",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for readiness")] = 60,
) -> None:
    """Start the broker in the background (it outlives this command)."""
    with _friendly_errors():
        broker = KafkaBroker(_home(home, "kafka"), port, controller_port, heap)
        if broker.is_running():
            err_console.print(f"Kafka already running (pid {broker.pid}) in {broker.home}")
            broker.wait_ready(timeout)
        else:
            started = time.monotonic()
            broker.start(timeout, detach=True)
            err_console.print(
                f"Kafka started (pid {broker.pid}, {time.monotonic() - started:.1f}s); "
                f"logs in {broker.server_log_path}"
            )
        console.print(broker.bootstrap_servers, highlight=False)


@kafka_app.command("stop")
def kafka_stop(
    home: HomeOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds before SIGKILL")] = 20,
) -> None:
    """Stop the broker recorded in HOME."""
    with _friendly_errors():
        broker = KafkaBroker.attach(_home(home, "kafka"))
        if not broker.is_running():
            err_console.print("Kafka is not running")
            return
        broker.stop(timeout)
        err_console.print("Kafka stopped")


@kafka_app.command("status")
def kafka_status(home: HomeOption = None) -> None:
    """Show whether the broker runs and answers; exit 1 when it does not."""
    with _friendly_errors():
        path = _home(home, "kafka")
        try:
            broker = KafkaBroker.attach(path)
        except KafkaError:
            console.print(f"Kafka: never started in {path}")
            raise typer.Exit(1) from None
        pid = broker.pid
        if pid is None:
            console.print(f"Kafka: stopped (home {broker.home})")
            raise typer.Exit(1)
        ready = broker.is_ready()
        console.print(
            f"Kafka: running pid={pid} bootstrap={broker.bootstrap_servers} "
            f"ready={'yes' if ready else 'no'} home={broker.home}",
            highlight=False,
        )
        if not ready:
            raise typer.Exit(1)


# --------------------------------------------------------------------------- postgres


@pg_app.command("start")
def pg_start(
    home: HomeOption = None,
    port: Annotated[int, typer.Option(help="TCP port (127.0.0.1)")] = DEFAULT_PG_PORT,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for readiness")] = 60,
) -> None:
    """initdb (once) and start PostgreSQL in the background."""
    with _friendly_errors():
        server = PostgresServer(_home(home, "postgres"), port)
        server.start(timeout)
        err_console.print(f"PostgreSQL running; log in {server.log_path}")
        console.print(server.dsn("postgres"), highlight=False)


@pg_app.command("stop")
def pg_stop(home: HomeOption = None) -> None:
    """Stop the PostgreSQL server in HOME."""
    with _friendly_errors():
        server = PostgresServer(_home(home, "postgres"))
        if not server.is_running():
            err_console.print("PostgreSQL is not running")
            return
        server.stop()
        err_console.print("PostgreSQL stopped")


@pg_app.command("status")
def pg_status(home: HomeOption = None) -> None:
    """Show whether PostgreSQL runs; exit 1 when it does not."""
    with _friendly_errors():
        server = PostgresServer(_home(home, "postgres"))
        if not server.is_running():
            console.print(f"PostgreSQL: stopped (home {server.home})")
            raise typer.Exit(1)
        console.print(
            f"PostgreSQL: running port={server.port} ready={'yes' if server.is_ready() else 'no'}"
            f" home={server.home}",
            highlight=False,
        )


@pg_app.command("createdb")
def pg_createdb(
    name: Annotated[str, typer.Argument(help="Database name")],
    home: HomeOption = None,
) -> None:
    """Create a database (if missing) and print its SQLAlchemy async URL."""
    with _friendly_errors():
        server = PostgresServer(_home(home, "postgres"))
        if not server.is_running():
            err_console.print(
                "[bold red]error:[/] PostgreSQL is not running (jejaring-dev pg start)"
            )
            raise typer.Exit(1)
        console.print(server.create_database(name), highlight=False)


# =========================================================================== run
# =========================================================================== run

DataOption = Annotated[
    Path | None, typer.Option("--data", help="State folder [default: <repo>/.data]")
]


def _stack(data: Path | None, kafka_port: int, base_port: int, database: str) -> Stack:
    return Stack(
        data.resolve() if data is not None else data_dir(),
        kafka_port=kafka_port,
        base_port=base_port,
        database=database,
    )


@app.command("run")
def run(
    data: DataOption = None,
    kafka_port: Annotated[int, typer.Option(help="Kafka's port")] = DEFAULT_KAFKA_PORT,
    base_port: Annotated[
        int, typer.Option(help="Gateway port; services take the next four")
    ] = 8100,
    database: Annotated[str, typer.Option(help="sqlite or postgresql")] = "sqlite",
    detach: Annotated[bool, typer.Option(help="Leave it running and return")] = False,
) -> None:
    """Start Kafka, every service and the gateway; wait until all are ready."""
    # Closing the terminal or `kill` stops everything as Ctrl-C does: what started runs in
    # sessions of its own and would be left running, and the next run would reuse it.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupted)
    with _friendly_errors():
        stack = _stack(data, kafka_port, base_port, database)
        started = time.monotonic()
        try:
            with console.status("starting Kafka, the services and the gateway..."):
                stack.start()
        except BaseException:
            # Any failure, Ctrl-C too: what started would be left running.
            _stop(stack)
            raise
    table = Table(title=f"Jejaring is running ({time.monotonic() - started:.1f}s to ready)")
    table.add_column("what")
    table.add_column("where")
    gw = stack.url(GATEWAY)
    table.add_row("gateway", f"{gw}/readyz  {gw}/docs")
    for service in SERVICES:
        url = stack.url(service)
        # (A service's /docs needs the internal credential: the gateway's is the API's.)
        table.add_row(service.name, f"{url}/readyz  {url}/metrics")
    table.add_row("event catalog", f"{stack.url(SERVICES[0])}/asyncapi.json")
    table.add_row("dashboard", f"{gw}/dashboard/")
    table.add_row("kafka", stack.broker.bootstrap_servers)
    table.add_row("logs", str(stack.log_dir))
    console.print(table)
    try:
        admin = stack.admin_key()
        console.print(
            f"admin API key (kept in {stack.run_dir / 'admin-key'}): [bold]{admin}[/]\n"
            "more keys: jejaring-dev keys issue --role ops|outlet:<id>|supplier:<id>",
            highlight=False,
        )
    except KeyboardInterrupt:
        _stop(stack)  # Ctrl-C while the key was being issued: what started stops
        raise
    except Exception as exc:  # the stack runs without it; say why
        err_console.print(f"[yellow]could not issue the admin key:[/] {exc}", highlight=False)
    if detach:
        console.print("stop it with [bold]make stop[/] (jejaring-dev stop)")
        return
    console.print("Ctrl-C stops everything.")
    failed = False
    try:
        while not (gone := stack.exited()):
            time.sleep(1)
        # A service died (or `make stop` ran elsewhere): say so rather than run on empty.
        failed = True
        for service in gone:
            err_console.print(f"[bold red]{service.name} stopped[/]; its log ends:")
            # As it is: a log's [brackets] are not rich markup.
            err_console.out(tail(stack.log_dir / f"{service.name}.log"), highlight=False)
    except KeyboardInterrupt:
        pass
    finally:
        with console.status("stopping..."):
            _stop(stack)
        console.print("stopped.")
    if failed:
        raise typer.Exit(1)


def _interrupted(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _stop(stack: Stack) -> None:
    """Stop the stack; a second Ctrl-C (or the terminal closing) meanwhile would abandon
    the broker half-stopped."""
    held = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in held}
    try:
        stack.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@app.command(
    "keys",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def keys(
    ctx: typer.Context,
    data: DataOption = None,
    database: Annotated[str, typer.Option(help="sqlite or postgresql")] = "sqlite",
) -> None:
    """The gateway's API keys on this stack: `keys issue --role ops`, `keys list`,
    `keys revoke KEY_ID` (see jejaring-keys --help)."""
    stack = _stack(data, DEFAULT_KAFKA_PORT, 8100, database)
    done = stack.keys(*ctx.args, check=False)
    console.out(done.stdout, end="", highlight=False)
    err_console.out(done.stderr, end="", highlight=False)
    raise typer.Exit(done.returncode)


@app.command("stop")
def stop(
    data: DataOption = None,
    kafka_port: Annotated[int, typer.Option(help="Kafka's port")] = DEFAULT_KAFKA_PORT,
    base_port: Annotated[int, typer.Option()] = 8100,
) -> None:
    """Stop what `run` started."""
    with _friendly_errors():
        _stack(data, kafka_port, base_port, "sqlite").stop()
    console.print("stopped.")


@app.command("status")
def status(
    data: DataOption = None,
    kafka_port: Annotated[int, typer.Option(help="Kafka's port")] = DEFAULT_KAFKA_PORT,
    base_port: Annotated[int, typer.Option()] = 8100,
) -> None:
    """Readiness of every service; exits 1 unless all are ready."""
    state = _stack(data, kafka_port, base_port, "sqlite").readiness()
    for name, value in state.items():
        console.print(f"{name:10} {value}")
    if not all(v == "ready" for v in state.values()):
        raise typer.Exit(1)


if __name__ == "__main__":  # pragma: no cover
    app()
