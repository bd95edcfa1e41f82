"""The committed files that are generated from one description (stack/settings.py and the code).

`make generate` rewrites each of them; `make check-generated` (CI) fails, naming every file whose
committed content differs from what its generator writes. Edit the generator, never the file.

    python -m stack.generated write|check
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable
from pathlib import Path

from stack.settings import ROOT

# A generated file (relative to the checkout) and the function that renders its whole content. The
# generators are imported when asked for, so that one that fails names itself.
Renderer = Callable[[], str]


def generated() -> dict[Path, Renderer]:
    return {
        Path("docker-compose.yml"): compose_file,
        Path("deploy/compose/cluster.env"): compose_cluster_env,
        Path("deploy/compose/mosquitto.conf"): compose_mosquitto_conf,
        Path("docs/configuration.md"): configuration_reference,
    }


def compose_file() -> str:
    from stack import compose  # noqa: PLC0415

    return compose.render()


def compose_cluster_env() -> str:
    from stack import compose  # noqa: PLC0415

    return compose.render_cluster_env()


def compose_mosquitto_conf() -> str:
    from stack import compose  # noqa: PLC0415

    return compose.render_mosquitto_conf()


def configuration_reference() -> str:
    from stack import configuration_reference  # noqa: PLC0415

    return configuration_reference.render()


def check(files: dict[Path, Renderer]) -> list[str]:
    """The problems: each file that is missing or differs from its generator's output, with a diff."""
    problems = []
    for path, render in files.items():
        wanted = render()
        target = ROOT / path
        if not target.exists():
            problems.append(f"{path}: missing; run make generate")
            continue
        have = target.read_text()
        if have != wanted:
            diff = difflib.unified_diff(
                have.splitlines(keepends=True), wanted.splitlines(keepends=True),
                f"{path} (committed)", f"{path} (generated)", n=1,
            )  # fmt: skip
            lines = list(diff)
            shown = "".join(lines[:40]) + (f"... {len(lines) - 40} more lines\n" if len(lines) > 40 else "")
            problems.append(f"{path}: differs from what its generator writes; run make generate\n{shown}")
    return problems


def write(files: dict[Path, Renderer]) -> list[Path]:
    """Writes every file whose content changed; returns those."""
    changed = []
    for path, render in files.items():
        target = ROOT / path
        wanted = render()
        if not target.exists() or target.read_text() != wanted:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(wanted)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.generated", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("write", "check"))
    args = parser.parse_args(argv)
    files = generated()
    if args.command == "write":
        changed = write(files)
        for path in files:
            print(f"{'wrote    ' if path in changed else 'unchanged'} {path}")
        return 0
    problems = check(files)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"{len(files)} generated file(s) match their generators: {', '.join(map(str, files))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
