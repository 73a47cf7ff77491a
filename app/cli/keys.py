"""`clv keys ...`: API keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli.common import HELP_SETTINGS, fail
from app.config import get_settings

keys_cli = typer.Typer(
    help="API keys: create (shown once), list, revoke.",
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings=HELP_SETTINGS,
)


@keys_cli.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Who or what uses the key (shown in listings).")],
    scopes: Annotated[
        str,
        typer.Option(
            help="Comma-separated: events:write, predictions:read, customers:erase, admin, "
            "webhooks:admin, or all.",
        ),
    ],
) -> None:
    """Create a key and print it once; only its hash is stored."""
    from app.auth.keys import parse_scopes
    from app.auth.repository import create_key
    from app.db import create_sync_engine

    try:
        wanted = parse_scopes(scopes)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    if not 0 < len(name) <= 64:
        raise fail("--name must be 1-64 characters")
    engine = create_sync_engine(get_settings())
    with engine.begin() as connection:
        key = create_key(connection, name, wanted)
    engine.dispose()
    typer.echo(key.secret)
    typer.echo(
        f"key {key.prefix} ({name}) with scopes {', '.join(sorted(s.value for s in wanted))}; "
        "store it now, it is not shown again",
        err=True,
    )


@keys_cli.command("list")
def keys_list() -> None:
    """List keys (prefix, name, scopes, created, revoked); secrets are never shown."""
    from app.auth.repository import list_keys
    from app.db import create_sync_engine

    engine = create_sync_engine(get_settings())
    with engine.connect() as connection:
        keys = list_keys(connection)
    engine.dispose()
    typer.echo(f"{'prefix':<12} {'name':<24} {'created':<20} {'revoked':<20} scopes")
    for key in keys:
        revoked = f"{key.revoked_at:%Y-%m-%d %H:%M:%S}" if key.revoked_at else "-"
        typer.echo(
            f"{key.prefix:<12} {key.name:<24} {key.created_at:%Y-%m-%d %H:%M:%S}  {revoked:<20} {key.scopes}"
        )


@keys_cli.command("revoke")
def keys_revoke(
    key: Annotated[
        str, typer.Argument(help="The key's prefix (from `clv keys list`) or its name.")
    ],
) -> None:
    """Revoke a key; every worker refuses it from the next request on."""
    from app.auth.repository import revoke_keys
    from app.db import create_sync_engine

    engine = create_sync_engine(get_settings())
    with engine.begin() as connection:
        count = revoke_keys(connection, key)
    engine.dispose()
    if not count:
        raise fail(f"no active key with prefix or name {key!r}")
    typer.echo(f"revoked {count} key(s)")


@keys_cli.command("ensure-local")
def keys_ensure_local(
    file: Annotated[
        Path, typer.Option(help="Where the local development key is kept (mode 600).")
    ] = Path("var/local-api-key"),
) -> None:
    """For `make run`: reuse the key in FILE if it is still valid, else create one with every scope."""
    from app.auth.keys import ALL_SCOPES
    from app.auth.repository import create_key, is_active_key
    from app.db import create_sync_engine

    engine = create_sync_engine(get_settings())
    secret = file.read_text().strip() if file.exists() else ""
    with engine.begin() as connection:
        if not is_active_key(connection, secret):
            secret = create_key(connection, "local-dev", ALL_SCOPES).secret
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(secret + "\n")
            file.chmod(0o600)
    engine.dispose()
    typer.echo(secret)
