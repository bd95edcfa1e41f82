"""Versioned schema migrations, one set per owner.

Each service that keeps tables in PostgreSQL owns them: their migrations are in its own folder
(saver/migrations, processor/control/migrations, notifier/migrations, registry/migrations), and it
applies them with this runner when it starts, as the database's schema owner, before it uses them. A
set is NNNN_name.sql files, applied in order, each once, each in its own transaction, and recorded in
schema_migrations as (owner, version). An advisory lock lets every service start at once. A
migration changed after it was applied is an error, and so is a database holding migrations of the
owner that this code does not know (an older version of the service).

Each owner's migrations also say who else may use its tables (GRANT): a service writes only the
tables it owns, and reads another's only where that one's migrations grant it.

Before each owner had a set of its own, the saver applied every table's migrations as one list.
This runner records those as the owner "legacy" (version = the old file's number). A migration
holding what one of those did starts with a line naming it, `-- adopts: legacy 4`, or several,
`-- adopts: legacy 4, 7`: on such a database it is recorded as applied, not run, once all of them
were applied.

    python -m runtime.migrations    # every owner's migrations, as METRICS_MIGRATIONS_DSN
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from runtime import settings

log = logging.getLogger(__name__)

FILE_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
ADOPTS = re.compile(r"-- adopts: legacy (\d+(?:, *\d+)*)\n")
LOCK_ID = 0x6D657472  # "metr": one lock for all migrators of this database
LEGACY = "legacy"

# The migrations of every owner, in the order `python -m runtime.migrations` applies them.
ROOT = Path(__file__).resolve().parent.parent
OWNERS = {
    "saver": ROOT / "saver" / "migrations",
    "processor": ROOT / "processor" / "control" / "migrations",
    "notifier": ROOT / "notifier" / "migrations",
    "registry": ROOT / "registry" / "migrations",
}


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class MigrationSettings:
    """What a service that owns tables needs to apply its migrations."""

    # The schema owner's login, which a service's migrations run as at its start (the services' own
    # roles may not change the schema); the saver's history upkeep (day partitions) too.
    migrations_dsn: str = settings.secret("postgresql://metrics@127.0.0.1:55432/metrics")
    # migrations_dsn's role's password (as a file: METRICS_MIGRATIONS_PASSWORD_FILE); empty: the DSN's.
    migrations_password: str = settings.secret("")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def adopts(self) -> tuple[int, ...]:
        """The legacy versions whose work this migration holds."""
        match = ADOPTS.match(self.sql)
        return tuple(int(v) for v in match[1].split(",")) if match else ()

    def __str__(self) -> str:
        return f"{self.version:04d}_{self.name}"


def migrations(directory: Path) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = FILE_NAME.fullmatch(path.name)
        if match is None:
            raise MigrationError(f"{path}: a migration is named NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"{directory}: versions must be 1, 2, 3, … without gaps; found {versions}")
    return found


RECORD = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    owner      text        NOT NULL,
    version    integer     NOT NULL,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, version)
)
"""
# The record as it was when the saver applied every migration: its rows become the legacy ones.
CONVERT = f"""
ALTER TABLE schema_migrations ADD COLUMN owner text NOT NULL DEFAULT '{LEGACY}';
ALTER TABLE schema_migrations ALTER COLUMN owner DROP DEFAULT;
ALTER TABLE schema_migrations DROP CONSTRAINT schema_migrations_pkey;
ALTER TABLE schema_migrations ADD PRIMARY KEY (owner, version);
"""
HAS_OWNER = """
SELECT EXISTS (SELECT FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = 'schema_migrations'
                 AND column_name = 'owner')
"""


async def migrate(conn: asyncpg.Connection, owner: str, directory: Path | None = None) -> list[int]:
    """Applies the owner's pending migrations (from `directory`, by default its folder in OWNERS),
    each in its own transaction; returns their versions (adopted ones included)."""
    wanted = migrations(directory or OWNERS[owner])
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_ID)
    try:
        await conn.execute(RECORD)
        if not await conn.fetchval(HAS_OWNER):
            async with conn.transaction():
                await conn.execute(CONVERT)
        rows = await conn.fetch(
            "SELECT owner, version, checksum FROM schema_migrations WHERE owner = ANY($1::text[])",
            [owner, LEGACY],
        )
        applied = {r["version"]: r["checksum"] for r in rows if r["owner"] == owner}
        legacy = {r["version"] for r in rows if r["owner"] == LEGACY}
        unknown = sorted(set(applied) - {m.version for m in wanted})
        if unknown:
            raise MigrationError(
                f"the database has {owner} migrations {unknown} that this {owner} does not know: is it older?"
            )
        done = []
        for migration in wanted:
            checksum = applied.get(migration.version)
            if checksum is None:
                adopted = bool(migration.adopts) and legacy.issuperset(migration.adopts)
                await _apply_one(conn, owner, migration, adopted=adopted)
                done.append(migration.version)
            elif checksum != migration.checksum:
                raise MigrationError(
                    f"{owner} migration {migration} was changed after it was applied; add a new one instead"
                )
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_ID)


async def apply(config: MigrationSettings, owner: str) -> list[int]:
    """Applies the owner's pending migrations on a connection of their own, as the schema's owner
    (what a service does when it starts); returns their versions."""
    conn = await asyncpg.connect(
        config.migrations_dsn, password=config.migrations_password or None, timeout=5
    )
    try:
        return await migrate(conn, owner)
    finally:
        await conn.close()


async def _apply_one(conn: asyncpg.Connection, owner: str, migration: Migration, *, adopted: bool) -> None:
    async with conn.transaction():
        if not adopted:
            try:
                await conn.execute(migration.sql)
            except (
                asyncpg.DuplicateTableError,
                asyncpg.DuplicateObjectError,
                asyncpg.DuplicateFunctionError,
                asyncpg.DuplicateSchemaError,
            ) as exc:
                raise MigrationError(
                    f"{owner} migration {migration} is not recorded as applied, but the database already "
                    f"has what it creates ({exc}); was the schema made by other means? Record it in "
                    "schema_migrations or start from an empty database"
                ) from exc
        await conn.execute(
            "INSERT INTO schema_migrations (owner, version, name, checksum) VALUES ($1, $2, $3, $4)",
            owner, migration.version, migration.name, migration.checksum,
        )  # fmt: skip
    how = "recorded (its work was done before each service had its own migrations)" if adopted else "applied"
    log.info("%s %s migration %s", how, owner, migration)


async def _main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = settings.load(MigrationSettings, "migrations")
    for owner in OWNERS:
        done = await apply(config, owner)
        print(f"{owner}: applied {len(done)} migration(s)" if done else f"{owner}: up to date")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main()))
