"""``jejaring-keys``: issue, list and revoke the gateway's API keys.

jejaring-keys issue --role outlet:<id>|supplier:<id>|ops|admin [--label TEXT] [--json]
jejaring-keys list [--all] [--json]
jejaring-keys revoke KEY_ID

The database is JEJARING_GATEWAY_DATABASE_URL (or --database-url). A key is shown once,
when issued; only its SHA-256 is stored. A running gateway stops accepting a revoked key
within JEJARING_GATEWAY_KEY_CACHE_S (5 s).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from ..adapters.keystore import KeyStore
from ..config import GatewaySettings
from ..domain.identity import InvalidRole, parse_role

T = TypeVar("T")
app = typer.Typer(name="jejaring-keys", help="The gateway's API keys.", no_args_is_help=True)
DbOption = Annotated[
    str | None, typer.Option("--database-url", help="[default: JEJARING_GATEWAY_DATABASE_URL]")
]


def _run(database_url: str | None, job: Callable[[KeyStore], Awaitable[T]]) -> T:
    url = database_url or GatewaySettings().database_url

    async def main() -> T:
        store = await KeyStore.open(url, cache_s=0)
        try:
            return await job(store)
        finally:
            await store.close()

    return asyncio.run(main())


@app.command("issue")
def issue(
    role: Annotated[str, typer.Option(help="outlet:<id>, supplier:<id>, ops or admin")],
    label: Annotated[str | None, typer.Option(help="Who or what holds it")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    database_url: DbOption = None,
) -> None:
    """Issue a key and print it (the only time it is shown)."""
    try:
        kind, subject = parse_role(role)
    except InvalidRole as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    record, token = _run(database_url, lambda s: s.issue(kind, subject, label))
    if as_json:
        typer.echo(json.dumps({**record.to_json(), "key": token}))
    else:
        typer.echo(token)
        typer.echo(f"key id {record.key_id}, role {record.name}; shown once, keep it", err=True)


@app.command("list")
def list_keys(
    all_keys: Annotated[bool, typer.Option("--all", help="Include revoked keys")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    database_url: DbOption = None,
) -> None:
    """List keys (ids, roles, labels; never the secrets)."""
    records = _run(database_url, lambda s: s.list(include_revoked=all_keys))
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in records]))
        return
    for r in records:
        state = f"revoked {r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "active"
        typer.echo(f"{r.key_id}  {r.name:30}  {state:24}  {r.label or ''}")


@app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument()], database_url: DbOption = None) -> None:
    """Revoke a key by its id."""
    if not _run(database_url, lambda s: s.revoke(key_id)):
        typer.echo(f"error: no active key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


if __name__ == "__main__":  # pragma: no cover
    app()
