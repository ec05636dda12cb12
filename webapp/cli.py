"""`flask users ...` commands."""
from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup

from .models import Role
from .services import users

users_cli = AppGroup("users", help="Manage user accounts.")


@users_cli.command("create")
@click.argument("email")
@click.option("--admin", is_flag=True, help="Make the user an admin.")
@click.option("--role", type=click.Choice(Role.ALL), default=None, help="Role (default editor).")
def create_user(email: str, admin: bool, role: str | None) -> None:
    """Create a user; prints the password and an API token once."""
    try:
        _, password, token = users.create_user(email, Role.ADMIN if admin else (role or Role.EDITOR))
    except users.UserError as exc:
        raise click.ClickException(str(exc))
    click.echo(f"email: {email.strip().lower()}")
    click.echo(f"password: {password}")
    click.echo(f"token: {token}")


@users_cli.command("bootstrap")
@click.option("--email", default="admin@localhost", show_default=True)
def bootstrap(email: str) -> None:
    """Create a first admin when there are no users yet (prints the login once)."""
    if users.any_users():
        click.echo("Users exist already; sign in with your account.")
        return
    _, password, token = users.create_user(email, Role.ADMIN)
    click.echo("First admin created. Keep this; it is not shown again:")
    click.echo(f"email: {email}")
    click.echo(f"password: {password}")
    click.echo(f"token: {token}")


def register(app: Flask) -> None:
    app.cli.add_command(users_cli)
