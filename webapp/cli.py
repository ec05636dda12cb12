"""Command-line tools: `flask users|batches|destinations|workers|queues ...`."""
from __future__ import annotations

import os
from dataclasses import dataclass

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext

from .extensions import db
from .models import Batch, Provenance, Role
from .services import control, destinations, listing, progress, system, users
from .services.errors import Invalid, ServiceError

users_cli = AppGroup("users", help="Manage user accounts.")
batches_cli = AppGroup("batches", help="Inspect and steer batches.")
destinations_cli = AppGroup("destinations", help="WordPress sites to publish approved "
                                                 "articles to.")


@dataclass
class CliActor:
    """Who the audit log names for commands run on the server."""
    id: None = None
    email: str = "cli"
    role: str = Role.ADMIN


@users_cli.command("create")
@click.argument("email")
@click.option("--admin", is_flag=True, help="Make the user an admin.")
@click.option("--role", type=click.Choice(Role.ALL), default=None, help="Role (default editor).")
def create_user(email: str, admin: bool, role: str | None) -> None:
    """Create a user; prints the password and an API token once."""
    try:
        _, password, token = users.create_user(email,
                                               Role.ADMIN if admin else (role or Role.EDITOR))
    except ServiceError as exc:
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


def _batch(batch_id: int) -> Batch:
    batch = db.session.get(Batch, batch_id)
    if batch is None:
        raise click.ClickException(f"No batch {batch_id}.")
    return batch


@batches_cli.command("list")
@click.option("--limit", default=20, show_default=True)
def list_batches(limit: int) -> None:
    """Newest batches with their progress."""
    rows, total = listing.page_of_batches(1, limit)
    click.echo(f"{'id':>6}  {'status':<10} {'done':>11}  {'provider':<12} name")
    for batch, done in rows:
        click.echo(f"{batch.id:>6}  {batch.status:<10} {done:>5}/{batch.total:<5}  "
                   f"{batch.provider[:12]:<12} {batch.name}")
    click.echo(f"({len(rows)} of {total})")


@batches_cli.command("show")
@click.argument("batch_id", type=int)
def show_batch(batch_id: int) -> None:
    """One batch: counts by status, spend, and its articles."""
    view = progress.batch_view(_batch(batch_id).id, with_rows=False)
    b = view.batch
    click.echo(f"batch {b.id}: {b.name}\nstatus: {b.status}  "
               f"{view.counts.done}/{view.counts.total} ({view.percent}%)  "
               f"provider: {b.provider}  model: {b.model}")
    click.echo("counts: " + ", ".join(f"{s} {n}" for s, n in view.counts.by_status.items() if n))
    click.echo(f"spent: ${view.counts.spend:.4f}"
               + (f" of ${b.budget_usd:.2f}" if b.budget_usd else ""))
    for reason in (b.paused_reason, b.stop_reason, b.dispatch_error):
        if reason:
            click.echo(reason)
    for row in progress.all_article_rows(b.id):
        unit = "c" if row.length_unit == "characters" else "w"  # characters or words
        click.echo(f"  {row.id:>7} {row.status:<10} {row.words:>5} {unit}  {row.title[:70]}"
                   + (f"  [{row.error or row.note}]" if row.error or row.note else ""))


def _act(batch_id: int, action, done: str) -> None:
    try:
        outcome = action(CliActor(), _batch(batch_id))
    except ServiceError as exc:
        raise click.ClickException(str(exc))
    if outcome is not None and outcome.level == "error":
        raise click.ClickException(outcome.message)  # done, but the articles are not sent
    click.echo(done)


@batches_cli.command("cancel")
@click.argument("batch_id", type=int)
def cancel_batch(batch_id: int) -> None:
    """Cancel a batch (running articles stop within a second)."""
    _act(batch_id, control.cancel_batch, f"Batch {batch_id} is cancelling.")


@batches_cli.command("pause")
@click.argument("batch_id", type=int)
def pause_batch(batch_id: int) -> None:
    """Pause a batch: nothing new is sent."""
    _act(batch_id, control.pause_batch, f"Batch {batch_id} is paused.")


@batches_cli.command("resume")
@click.argument("batch_id", type=int)
def resume_batch(batch_id: int) -> None:
    """Resume a paused batch."""
    _act(batch_id, control.resume_batch, f"Batch {batch_id} is resumed.")


@batches_cli.command("requeue")
@click.argument("batch_id", type=int)
@click.option("--failed", is_flag=True, help="Also give failed articles another try.")
def requeue_batch(batch_id: int, failed: bool) -> None:
    """Send a batch's queued articles to the queue again (after Redis lost them)."""
    try:
        count = control.requeue(CliActor(), _batch(batch_id), include_failed=failed)
    except ServiceError as exc:
        raise click.ClickException(str(exc))  # e.g. the queue is unreachable
    click.echo(f"Sent {count} articles of batch {batch_id} to the queue.")


@click.command("workers")
@with_appcontext  # a plain command (not in an AppGroup): `flask` pushes one, other callers may not
def workers() -> None:
    """Workers by their heartbeats: pool, concurrency, articles in progress."""
    rows = system.workerstate.read_workers(system.get_redis())
    if not rows:
        click.echo("No worker has reported in the last two minutes.")
    for w in rows:
        state = "NOT RESPONDING" if w["stale"] else "ok"
        click.echo(f"{w['hostname']:<40} pool={w['pool']:<8} concurrency={w['concurrency']:<4} "
                   f"active={w['active']:<4} last seen {w['age_s']:.0f} s ago  {state}")


@click.command("queues")
@click.option("--purge", is_flag=True, help="Delete every waiting message (asks first).")
@click.option("--yes", is_flag=True, help="With --purge: do not ask.")
@with_appcontext
def queues(purge: bool, yes: bool) -> None:
    """Queue lengths; --purge empties them (articles stay queued in the database)."""
    client = system.get_redis()
    for name, length in system.queue_lengths(client).items():
        click.echo(f"{name:<12} {length}")
    if purge:
        if not yes:
            click.confirm("Delete every waiting message? Articles stay queued in the database "
                          "and can be sent again with `flask batches requeue`", abort=True)
        purged = system.purge_queues(client)
        click.echo(f"Purged {sum(purged.values())} messages.")


# -- destinations -------------------------------------------------------------------------

PASSWORD_ENV = "WORDPRESS_APP_PASSWORD"


def _refused(exc: ServiceError) -> click.ClickException:
    """A service's refusal, with each field's message on its own line."""
    fields = getattr(exc, "fields", None)
    if isinstance(exc, Invalid) and fields:
        lines = [f"{name}: {msg}" for name, value in fields.items()
                 for msg in ([value] if isinstance(value, str) else value)]
        return click.ClickException("\n".join(lines))
    return click.ClickException(str(exc))


@destinations_cli.command("add")
@click.argument("name")
@click.option("--wordpress", "url", required=True, metavar="URL",
              help="The WordPress site's address, e.g. https://example.com.")
@click.option("--user", "username", required=True, help="The WordPress user name.")
@click.option("--allow-new-terms", is_flag=True,
              help="Create categories and tags the site does not have yet.")
@click.option("--provenance", type=click.Choice(Provenance.ALL), default=Provenance.NONE,
              show_default=True, help="Where the model and reviewer are noted on the post.")
def add_destination(name: str, url: str, username: str, allow_new_terms: bool,
                    provenance: str) -> None:
    """Add a WordPress site. The application password is read from WORDPRESS_APP_PASSWORD,
    else asked for (not echoed); it is stored encrypted and never shown again."""
    password = os.environ.get(PASSWORD_ENV) or click.prompt(
        "Application password", hide_input=True)
    try:
        destination = destinations.add(CliActor(), name=name, url=url, username=username,
                                       password=password, allow_new_terms=allow_new_terms,
                                       provenance=provenance)
    except ServiceError as exc:
        raise _refused(exc)
    click.echo(f"Added {destination.name}: {destination.url} as {destination.username}.")
    click.echo(f"Check it with: flask destinations test {destination.name}")


@destinations_cli.command("list")
def list_destinations() -> None:
    """Every destination with its site, user and state (never its password)."""
    rows = destinations.all_destinations()
    if not rows:
        click.echo("No destinations.")
    for view in rows:
        d = view.destination
        state = "needs credentials" if view.needs_credentials else "ok"
        password = "set" if view.readable else "UNREADABLE (enter it again)"
        click.echo(f"{d.name:<20} {d.url:<40} user={d.username:<16} password={password:<5} "
                   f"{state}" + (f" — {view.problem}" if view.problem else ""))


def _destination_named(name: str):
    found = destinations.by_name(name)
    if found is None:
        raise click.ClickException(f"No destination named {name!r}.")
    return found


@destinations_cli.command("remove")
@click.argument("name")
def remove_destination(name: str) -> None:
    """Forget a destination and its publications (the posts stay on the site)."""
    try:
        removed = destinations.remove(CliActor(), _destination_named(name).id)
    except ServiceError as exc:
        raise _refused(exc)
    click.echo(f"Removed {removed}.")


@destinations_cli.command("test")
@click.argument("name")
def test_destination(name: str) -> None:
    """Ask the site who the user is (/wp-json/wp/v2/users/me) and say what is wrong."""
    check = destinations.test_connection(CliActor(), _destination_named(name).id)
    if not check.ok:
        raise click.ClickException(check.message)
    click.echo(check.message)


def register(app: Flask) -> None:
    app.cli.add_command(users_cli)
    app.cli.add_command(batches_cli)
    app.cli.add_command(destinations_cli)
    app.cli.add_command(workers)
    app.cli.add_command(queues)
