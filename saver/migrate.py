"""Versioned schema migrations: saver/migrations/NNNN_name.sql, applied in order, each once.

The saver applies them before it consumes (or run `python -m saver.migrate`). An advisory lock
lets several savers start together. A migration changed after it was applied is an error.
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

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
FILE_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
LOCK_ID = 0x6D657472  # "metr": one lock for all migrators of this database


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations(directory: Path = MIGRATIONS) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = FILE_NAME.fullmatch(path.name)
        if match is None:
            raise MigrationError(f"{path}: a migration is named NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration versions must be 1, 2, 3, … without gaps; found {versions}")
    return found


async def migrate(conn: asyncpg.Connection, directory: Path = MIGRATIONS) -> list[int]:
    """Applies the pending migrations, each in its own transaction; returns their versions."""
    wanted = migrations(directory)
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_ID)
    try:
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer     PRIMARY KEY,
                name       text        NOT NULL,
                checksum   text        NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        applied = {
            r["version"]: r for r in await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        }
        unknown = sorted(set(applied) - {m.version for m in wanted})
        if unknown:
            raise MigrationError(
                f"the database has migrations {unknown} that this saver does not know: is it older?"
            )
        done = []
        for migration in wanted:
            row = applied.get(migration.version)
            if row is not None:
                if row["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} was changed after it was "
                        "applied; "
                        "add a new migration instead"
                    )
                continue
            async with conn.transaction():
                try:
                    await conn.execute(migration.sql)
                except (
                    asyncpg.DuplicateTableError,
                    asyncpg.DuplicateObjectError,
                    asyncpg.DuplicateFunctionError,
                    asyncpg.DuplicateSchemaError,
                ) as exc:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} is not recorded as applied, "
                        f"but the database already has what it creates ({exc}); was the schema made by "
                        "other means? Record it in schema_migrations or start from an empty database"
                    ) from exc
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version, migration.name, migration.checksum,
                )  # fmt: skip
            log.info("applied migration %04d_%s", migration.version, migration.name)
            done.append(migration.version)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_ID)


async def _main() -> int:
    from runtime import settings  # noqa: PLC0415 - only the command needs the settings
    from saver.settings import SaverSettings  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = settings.load(SaverSettings, "saver")
    conn = await asyncpg.connect(config.migrations_dsn, password=config.migrations_password or None)
    try:
        done = await migrate(conn)
    finally:
        await conn.close()
    print(f"applied {len(done)} migration(s)" if done else "schema is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main()))
