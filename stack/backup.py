"""Backups of the local stack's PostgreSQL with pgBackRest (Debian's pgbackrest), and restores to a
point in time (docs/operations.md#backup-and-restore).

PostgreSQL archives each WAL segment to the repository as it fills, or after archive_timeout (60 s)
at the latest; `make backup` takes a base backup (full, or incremental on a full one). `make restore
ARGS="--to '2026-12-04 17:00:00+00'"` stops what uses the database, restores it to that time, starts
it again and rewinds the saver's consumer group to a margin before that time: the saver writes again,
idempotently, what Kafka still holds of the readings and events the restored database lacks.
Redis (the processors' counters) and Kafka are not restored: they are ahead of the database, and
what they hold is what the replay reads.

    python -m stack.backup backup [--incremental]
    python -m stack.backup restore [--to TIME] [--replay-margin 600]
    python -m stack.backup info
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata

from runtime import kafka
from stack import access, consumers, prepare
from stack.settings import StackSettings, load
from stack.supervisor import Supervisor
from stack.system import SetupError, say

STANZA = "metrics"
ARCHIVE_TIMEOUT_S = 60
# What uses the database: stopped while it is restored.
DEPENDENTS = ("saver", "assessor", "processor", "notifier", "registry", "pg-exporter")
# The consumer group that writes readings and events into the database.
SAVER_GROUP = "saver"


def folder(settings: StackSettings) -> Path:
    return settings.state_dir / "backup"


def config_file(settings: StackSettings) -> Path:
    return folder(settings) / "pgbackrest.conf"


def server_options(settings: StackSettings) -> tuple[str, ...]:
    """The primary's settings that archive its WAL to the repository."""
    command = (
        f"pgbackrest --config={shlex.quote(str(config_file(settings)))} --stanza={STANZA} archive-push %p"
    )
    return ("archive_mode=on", f"archive_command={command}", f"archive_timeout={ARCHIVE_TIMEOUT_S}")


def write_config(settings: StackSettings) -> None:
    """pgBackRest's configuration and folders, owned by PostgreSQL's account (which runs it)."""
    base = folder(settings)
    user = prepare.run_as("postgres")
    for name in ("", "repo", "log", "lock", "spool"):
        (base / name).mkdir(parents=True, exist_ok=True)
        prepare.own(base / name, user)
    data = prepare.paths(settings).postgres_data
    text = (
        "# Written by `make run` (stack/backup.py): edits here are lost.\n"
        "[global]\n"
        f"repo1-path={base / 'repo'}\n"
        "repo1-retention-full=2\n"
        f"log-path={base / 'log'}\n"
        f"lock-path={base / 'lock'}\n"
        f"spool-path={base / 'spool'}\n"
        "log-level-console=warn\n"
        "log-level-file=info\n"
        "start-fast=y\n"
        "compress-type=zst\n"
        f"\n[{STANZA}]\n"
        f"pg1-path={data}\n"
        f"pg1-port={settings.postgres_port}\n"
        f"pg1-socket-path={settings.postgres_socket_dir}\n"
        "pg1-user=postgres\n"
    )
    config_file(settings).write_text(text)
    prepare.own(config_file(settings), user)


def ensure_stanza(settings: StackSettings) -> None:
    """The repository's stanza, made once the server runs (archive_command needs it); idempotent."""
    pgbackrest(settings, "stanza-create")


def pgbackrest(settings: StackSettings, command: str, *args: str) -> str:
    """Runs pgBackRest as PostgreSQL's account; raises SetupError with its output if it fails."""
    line = ["pgbackrest", f"--config={config_file(settings)}", f"--stanza={STANZA}", *args, command]
    user = prepare.run_as("postgres")
    if user is not None:
        line = ["runuser", "-u", user, "--", *line]
    done = subprocess.run(line, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SetupError(f"pgbackrest {command} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def backup(settings: StackSettings, incremental: bool) -> None:
    began = time.monotonic()
    kind = "incr" if incremental else "full"
    say(f"Backing up PostgreSQL ({'incremental' if incremental else 'full'}) to {folder(settings) / 'repo'}")
    pgbackrest(settings, "backup", f"--type={kind}")
    say(f"Backed up in {time.monotonic() - began:.0f} s")


def restore(settings: StackSettings, to: datetime | None, replay_margin_s: float) -> None:
    """Restores the database to `to` (None: the end of the archived WAL), then has the saver replay
    Kafka from `replay_margin_s` before that time."""
    began = time.monotonic()
    try:  # what the server wrote until now into the archive, if it still runs
        pgbackrest(settings, "check")
    except SetupError as why:
        say(f"The server's last WAL could not be archived (is it down?): restoring from what is: {why}")
    target = to or datetime.now(UTC)
    with Supervisor(settings) as supervisor:
        running = [n for n in DEPENDENTS if _running(supervisor, n)]
        for name in running:
            supervisor.stop_process(name)
        supervisor.stop_process("postgres")
        try:
            try:
                options = ["--delta", "--target-action=promote"]
                if to is not None:
                    options += ["--type=time", f"--target={to.isoformat(sep=' ')}"]
                say(f"Restoring PostgreSQL to {to.isoformat() if to else 'the end of the archive'}")
                pgbackrest(settings, "restore", *options)
            finally:  # restored or not, the server runs again
                supervisor.start_process("postgres")
            asyncio.run(_answers(settings))
            asyncio.run(_forget_recovery(settings))
            since = target - timedelta(seconds=replay_margin_s)
            rewound = asyncio.run(rewind(settings, SAVER_GROUP, consumers.GROUPS[SAVER_GROUP], since))
            say(f"The saver replays Kafka from {since.isoformat()}: {rewound:,} records behind")
        finally:  # and so does what uses it
            for name in running:
                supervisor.start_process(name)
    say(f"Restored in {time.monotonic() - began:.0f} s")


def latest_backup_stop(settings: StackSettings) -> datetime | None:
    """When the latest backup ended (pgBackRest keeps whole seconds): a restore reaches times after it."""
    (stanza,) = json.loads(pgbackrest(settings, "info", "--output=json"))
    backups = stanza.get("backup", [])
    return datetime.fromtimestamp(backups[-1]["timestamp"]["stop"], UTC) if backups else None


# What pgBackRest's restore writes into postgresql.auto.conf for the recovery. Left there, a replica
# made from this server later (pg_basebackup copies the file) would recover to the same past time and
# promote itself.
RECOVERY_SETTINGS = (
    "restore_command", "recovery_target_time", "recovery_target_action", "recovery_target_timeline",
    "recovery_target_inclusive", "recovery_target",
)  # fmt: skip


async def _forget_recovery(settings: StackSettings) -> None:
    conn = await access.postgres_superuser(settings)
    try:
        for name in RECOVERY_SETTINGS:
            await conn.execute(f"ALTER SYSTEM RESET {name}")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


def _running(supervisor: Supervisor, name: str) -> bool:
    return supervisor.processes().get(name, {}).get("statename") == "RUNNING"


async def _answers(settings: StackSettings, timeout_s: float = 120) -> None:
    """Waits until the restored server takes connections (recovery done, promoted)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(Exception):  # starting up: the server says so in many ways
            conn = await access.postgres_superuser(settings)
            try:
                if not await conn.fetchval("SELECT pg_is_in_recovery()"):
                    return
            finally:
                await conn.close()
        if time.monotonic() > deadline:
            raise SetupError("the restored PostgreSQL did not come up; see .stack/logs/postgres.log")
        await asyncio.sleep(0.5)


async def rewind(settings: StackSettings, group: str, topics: tuple[str, ...], since: datetime) -> int:
    """Sets the group's committed offsets to the first record of `since` or later in each partition
    (the group must have no member); returns how many records that puts it behind."""
    options = kafka.client_options(access.kafka(settings))
    admin = AIOKafkaAdminClient(**options)
    await admin.start()
    try:
        partitions = [tp for topic in topics for tp in await consumers.topic_partitions(admin, topic)]
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(**options, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        at_ms = int(since.timestamp() * 1000)
        found = await consumer.offsets_for_times(dict.fromkeys(partitions, at_ms))
        ends = await consumer.end_offsets(partitions)
        offsets = {tp: (found[tp].offset if found[tp] is not None else ends[tp]) for tp in partitions}
        committed = {tp: await consumer.committed(tp) for tp in partitions}
        # Never forward: a partition the saver had not reached stays where it was.
        offsets = {tp: min(o, committed[tp]) if committed[tp] is not None else o for tp, o in offsets.items()}
        await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
        return sum(ends[tp] - o for tp, o in offsets.items())
    finally:
        await consumer.stop()


def _time(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time such as '2026-12-04 17:00:00+00'") from None
    if at.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone: add one, e.g. +00")
    return at


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.backup", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    take = commands.add_parser("backup", help="take a base backup (full unless --incremental)")
    take.add_argument("--incremental", action="store_true")
    back = commands.add_parser("restore", help="restore the database to a point in time, then replay Kafka")
    back.add_argument("--to", type=_time, help="the time to restore to (default: as late as archived)")
    back.add_argument("--replay-margin", type=float, default=600.0,
                      help="seconds before that time the saver replays Kafka from (default 600)")  # fmt: skip
    commands.add_parser("info", help="the backups in the repository")
    args = parser.parse_args()
    settings = load()
    try:
        if args.command == "backup":
            backup(settings, args.incremental)
        elif args.command == "restore":
            restore(settings, args.to, args.replay_margin)
        else:
            print(pgbackrest(settings, "info"), end="")
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
