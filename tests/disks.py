"""Small disks for disk-full tests: a tmpfs mounted for the test (as root), and a file that fills it."""

from __future__ import annotations

import contextlib
import pwd
import subprocess
from pathlib import Path


def mount_tmpfs(folder: Path, megabytes: int, owner: str | None = None) -> None:
    """A tmpfs of `megabytes` at `folder` (made), owned by the account `owner` if given."""
    folder.mkdir()
    options = f"size={megabytes}m"
    if owner is not None:
        account = pwd.getpwnam(owner)
        options += f",uid={account.pw_uid},gid={account.pw_gid},mode=0700"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=True)


def unmount(folder: Path) -> None:
    subprocess.run(["umount", str(folder)], check=True)
    folder.rmdir()


def fill(folder: Path) -> Path:
    """Writes a file into `folder` until its disk is full; returns it."""
    filler = folder / "filler"
    with filler.open("wb") as out, contextlib.suppress(OSError):  # ENOSPC: full
        while True:
            out.write(b"\0" * 2**20)
            out.flush()
    return filler
