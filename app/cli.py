"""The ``ainode`` command: run the node, workers, migrations, status and a C-STORE client.

Heavy modules (pynetdicom, Celery, pipelines) are imported inside the
commands that need them, so ``ainode status`` starts fast and the SCP
process never loads torch.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

from core.config import CONFIG_FILE_ENV, Settings, load_settings
from core.logging import configure_logging


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj["settings"]
    return settings


@click.group()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML configuration file (also $AINODE_CONFIG).",
)
@click.pass_context
def main(ctx: click.Context, config_file: Path | None) -> None:
    """pacs-ai-node: receive studies from a PACS, run AI pipelines, send results back."""
    os.umask(0o077)
    if config_file is not None:
        os.environ[CONFIG_FILE_ENV] = str(config_file.resolve())
    try:
        settings = load_settings()
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(f"invalid configuration: {exc}") from exc
    configure_logging(settings.log_level)
    ctx.obj = {"settings": settings}


def _require_schema(settings: Settings) -> None:
    from core.db.migrate import current_revision, head_revision

    url = settings.effective_database_url
    if current_revision(url) != head_revision():
        raise click.ClickException("database schema is not current: run 'ainode db upgrade'")


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Create or migrate the database schema to the newest revision."""
    from core.db.migrate import head_revision, upgrade

    settings = _settings(ctx)
    settings.spool_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    upgrade(settings.effective_database_url)
    click.echo(f"database at revision {head_revision()}")


@db.command("views")
@click.pass_context
def db_views(ctx: click.Context) -> None:
    """(Re)create the views for SQL dashboards (docs/dashboards-sql.md); after each upgrade."""
    from core.db.session import make_engine
    from web.dashboards import create_views

    settings = _settings(ctx)
    _require_schema(settings)
    engine = make_engine(settings.effective_database_url)
    names = create_views(engine)
    engine.dispose()
    click.echo(f"views created: {', '.join(names)}")


@main.command()
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Run the Storage SCP and the stability scheduler (no worker)."""
    import signal

    from app.serve import NodeService
    from worker.liveness import ProcessBeat

    settings = _settings(ctx)
    _require_schema(settings)
    service = NodeService(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    service.start()
    ProcessBeat(service.session_factory, "scheduler", settings.job_heartbeat_seconds).start()
    click.echo(f"{settings.ae_title} listening on {settings.host}:{service.port}", err=True)
    stop.wait()
    service.stop()


@main.command()
@click.option("--queues", "-Q", help="Comma-separated queues (default: AINODE_WORKER_QUEUES).")
@click.pass_context
def worker(ctx: click.Context, queues: str | None) -> None:
    """Run a Celery worker that executes jobs and deliveries."""
    from core.db.session import make_engine, make_session_factory
    from worker.celery_app import create_app
    from worker.liveness import ProcessBeat

    settings = _settings(ctx)
    _require_schema(settings)
    app = create_app(settings)
    factory = make_session_factory(make_engine(settings.effective_database_url))
    ProcessBeat(factory, "worker", settings.job_heartbeat_seconds).start()
    pool = "solo" if settings.worker_concurrency == 1 else "threads"
    app.worker_main(
        [
            "worker",
            f"--loglevel={settings.log_level}",
            f"--queues={queues or ','.join(settings.worker_queues)}",
            f"--pool={pool}",
            f"--concurrency={settings.worker_concurrency}",
            "--hostname=ainode@%h",
            "--without-gossip",
            "--without-mingle",
        ]
    )


@main.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run everything on one machine: migrations, SCP + scheduler, a worker and the console."""
    from app.supervisor import Child, ProcessGroup
    from core.db.migrate import upgrade

    settings = _settings(ctx)
    settings.spool_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    upgrade(settings.effective_database_url)
    base = [sys.executable, "-m", "app.cli"]
    children = [Child("serve", [*base, "serve"]), Child("worker", [*base, "worker"])]
    if settings.web_enabled:
        children.append(Child("web", [*base, "web"]))
    # The SCP lets an instance being received finish (up to the network timeout) before it exits.
    group = ProcessGroup(children, stop_timeout=settings.network_timeout_seconds + 10)
    sys.exit(group.run())


@main.command()
@click.pass_context
def web(ctx: click.Context) -> None:
    """Run the ops console (AINODE_WEB_HOST:AINODE_WEB_PORT, default 127.0.0.1:8080)."""
    import uvicorn

    from web.app import create_app

    settings = _settings(ctx)
    _require_schema(settings)
    uvicorn.run(
        create_app(settings),
        host=settings.web_host,
        port=settings.web_port,
        access_log=False,  # request lines carry search terms (accession numbers): not logged
        log_level=settings.log_level.lower(),
    )


@main.group()
def users() -> None:
    """Console users (viewer: read only; operator: actions; admin: users)."""


@contextmanager
def _user_session(ctx: click.Context) -> Iterator[Session]:
    """A session for a ``users`` command; a refused change (UserError) is the command's error."""
    from core.db.session import make_engine, make_session_factory, session_scope
    from web.users import UserError

    settings = _settings(ctx)
    _require_schema(settings)
    try:
        with session_scope(
            make_session_factory(make_engine(settings.effective_database_url))
        ) as session:
            yield session
    except UserError as exc:
        raise click.ClickException(str(exc)) from exc


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@users.command("add")
@click.argument("username")
@click.option("--role", default="viewer", show_default=True, help="viewer, operator or admin.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.pass_context
def users_add(ctx: click.Context, username: str, role: str, password_stdin: bool) -> None:
    """Add a console user."""
    from web.users import add_user, parse_role

    with _user_session(ctx) as session:
        parsed = parse_role(role)
        add_user(session, username, _password(password_stdin), parsed)
    click.echo(f"user {username} added ({parsed.value})")


@users.command("passwd")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.pass_context
def users_passwd(ctx: click.Context, username: str, password_stdin: bool) -> None:
    """Change a console user's password."""
    from web.users import set_password

    with _user_session(ctx) as session:
        set_password(session, username, _password(password_stdin))
    click.echo(f"password of {username} changed")


@users.command("role")
@click.argument("username")
@click.argument("role")
@click.pass_context
def users_role(ctx: click.Context, username: str, role: str) -> None:
    """Change a console user's role."""
    from web.users import parse_role, set_role

    with _user_session(ctx) as session:
        set_role(session, username, parse_role(role))
    click.echo(f"{username} is now {role}")


@users.command("remove")
@click.argument("username")
@click.pass_context
def users_remove(ctx: click.Context, username: str) -> None:
    """Remove a console user."""
    from web.users import remove_user

    with _user_session(ctx) as session:
        remove_user(session, username)
    click.echo(f"user {username} removed")


@users.command("list")
@click.pass_context
def users_list(ctx: click.Context) -> None:
    """List console users and their roles."""
    from web.users import list_users

    with _user_session(ctx) as session:
        for user in list_users(session):
            click.echo(f"{user.username}\t{user.role.value}")


@main.command()
@click.option("--limit", default=20, show_default=True, help="Rows per table.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--hl7-text", is_flag=True, help="Print each HL7 message and its ACK (holds patient data)."
)
@click.pass_context
def status(ctx: click.Context, limit: int, as_json: bool, hl7_text: bool) -> None:
    """Recent studies, jobs and HL7 result messages with their states, timings and errors."""
    from app.status import format_table, hl7_rows, job_rows, study_rows
    from core.db.session import make_engine, make_session_factory, session_scope

    settings = _settings(ctx)
    _require_schema(settings)
    engine = make_engine(settings.effective_database_url)
    with session_scope(make_session_factory(engine)) as session:
        studies, jobs = study_rows(session, limit), job_rows(session, limit)
        messages = hl7_rows(session, limit, with_text=hl7_text)
    engine.dispose()
    if as_json:
        click.echo(json.dumps({"studies": studies, "jobs": jobs, "hl7": messages}, indent=2))
        return
    click.echo("STUDIES")
    click.echo(format_table(studies))
    click.echo("\nJOBS")
    click.echo(format_table(jobs))
    texts = [(row.pop("text"), row.pop("ack_text")) for row in messages] if hl7_text else []
    click.echo("\nHL7 RESULT MESSAGES")
    click.echo(format_table(messages))
    for row, (text, ack) in zip(messages, texts, strict=True):
        click.echo(f"\n-- message {row['message']} --\n{text}\n-- ACK --\n{ack or '(none)'}")


def _dispatcher(settings: Settings):
    from core.db.session import make_engine, make_session_factory
    from scheduler.dispatch import Dispatcher
    from worker.celery_app import create_app

    _require_schema(settings)
    factory = make_session_factory(make_engine(settings.effective_database_url))
    return Dispatcher(create_app(settings), factory, settings)


@main.command("retry-deliveries")
@click.option("--include-retrying", is_flag=True, help="Also deliveries still waiting to retry.")
@click.pass_context
def retry_deliveries(ctx: click.Context, include_retrying: bool) -> None:
    """Send failed deliveries again (after the destination is back)."""
    from core.db.models import DeliveryState

    states = (
        (DeliveryState.FAILED, DeliveryState.RETRYING)
        if include_retrying
        else (DeliveryState.FAILED,)
    )
    ids = _dispatcher(_settings(ctx)).retry_deliveries(states)
    click.echo(f"re-queued {len(ids)} deliveries")


@main.command()
@click.argument("job_id", type=int)
@click.option("--rerun", is_flag=True, help="Run the pipeline again instead of re-sending.")
@click.pass_context
def replay(ctx: click.Context, job_id: int, rerun: bool) -> None:
    """Re-send a job's results to the configured destinations (or re-run it)."""
    from core.errors import ConfigurationError

    try:
        planned = _dispatcher(_settings(ctx)).replay_job(job_id, rerun=rerun)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc
    if rerun:
        click.echo(f"job {job_id} re-queued")
    else:
        click.echo(f"re-sending {len(planned)} deliveries of job {job_id}")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--to", "destination", required=True, help="Peer as AE@host:port[/tls].")
@click.option("--calling-ae", default="AINODE_SEND", show_default=True)
@click.pass_context
def send(ctx: click.Context, paths: tuple[Path, ...], destination: str, calling_ae: str) -> None:
    """C-STORE DICOM files (or every file under folders) to a peer."""
    from core.config import Destination
    from core.errors import TransientError
    from dicom_node.scu import store_files

    try:
        peer = Destination.parse(destination)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--to") from exc
    files = sorted(
        file
        for path in paths
        for file in ([path] if path.is_file() else path.rglob("*"))
        if file.is_file()
    )
    from core.tls import client_context

    tls = client_context(_settings(ctx)) if peer.tls else None
    try:
        outcomes = store_files(peer, files, calling_ae=calling_ae, tls=tls)
    except TransientError as exc:
        raise click.ClickException(str(exc)) from exc
    failed = [outcome for outcome in outcomes if not outcome.ok]
    for outcome in failed:
        click.echo(f"FAILED {outcome.path}: {outcome.error}", err=True)
    click.echo(f"sent {len(outcomes) - len(failed)} of {len(outcomes)} files to {peer}")
    if failed:
        sys.exit(1)


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--slices", default=120, show_default=True)
@click.option("--size", default=256, show_default=True, help="Rows and columns.")
@click.option("--seed", default=0, show_default=True)
def phantom(directory: Path, slices: int, size: int, seed: int) -> None:
    """Write a synthetic chest CT series (with known anatomy) for demos and tests."""
    from pipelines.phantom import generate_ct_phantom, write_phantom

    spacing = 400.0 / size
    study = generate_ct_phantom(
        slices=slices, rows=size, columns=size, pixel_spacing=spacing, seed=seed
    )
    files = write_phantom(study, directory)
    click.echo(f"wrote {len(files)} CT slices of study {study.study_instance_uid} to {directory}")


@main.command("pipelines")
@click.option("--check", is_flag=True, help="Also load every model and run it on a zero input.")
@click.pass_context
def list_pipelines(ctx: click.Context, check: bool) -> None:
    """List pipelines, versions and weights' SHA-256; exit 1 if a configured one is broken.

    A built-in model pipeline whose weights the operator has not supplied is
    listed as not installed, which is not an error unless a routing rule
    sends series to it.
    """
    from pipelines.inventory import inventory

    settings = _settings(ctx)
    entries = inventory(settings.models_path, check=check)
    click.echo(f"models directory: {settings.models_path}")
    for entry in entries:
        weights = entry.weights_sha256 or "-"
        click.echo(
            f"{entry.name} {entry.version} {entry.kind} [{entry.queue}] sha256:{weights} "
            f"({entry.source})"
        )
        for name, digest in entry.more_weights:
            click.echo(f"  {name} sha256:{digest}")
        if entry.error:
            click.echo(f"  ERROR: {entry.error}")
        if entry.note:
            click.echo(f"  {entry.note}")
    routed = {rule.pipeline for rule in settings.routing_rules}
    unusable = [entry for entry in entries if entry.error or (entry.note and entry.name in routed)]
    for entry in unusable:
        if entry.note:
            click.echo(f"ERROR: routing rules send series to {entry.name}, which is not installed")
    if unusable:
        ctx.exit(1)


@main.command("train-demo")
@click.option("--seed", default=0, show_default=True, help="Seeds phantoms, weights, batches.")
@click.option("--steps", default=1500, show_default=True, help="Optimiser steps.")
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder with pipeline.json to write model.ts and metrics.json to "
    "(default: the shipped ct-organs-demo model folder).",
)
def train_demo(seed: int, steps: int, output: Path | None) -> None:
    """Train the ct-organs-demo UNet on generated phantoms (CPU) and report held-out Dice."""
    from pipelines.ct_organs_demo.train import MODEL_DIR
    from pipelines.ct_organs_demo.train import train_demo as train

    report = train(output or MODEL_DIR, seed=seed, steps=steps)
    click.echo(json.dumps(report.__dict__, indent=2))


if __name__ == "__main__":
    main()
