"""A tool whose reader goes away (`make status | head -3`) ends quietly, as Unix tools do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from runtime.cli import CLOSED_PIPE_EXIT

ROOT = Path(__file__).resolve().parents[2]
TOOL = """
from runtime import cli

def main():
    for i in range(100_000):  # far more than a pipe holds
        print("line", i)
    return 0

cli.run(main)
"""


def test_a_closed_pipe_ends_a_tool_without_a_traceback() -> None:
    tool = subprocess.Popen(
        [sys.executable, "-c", TOOL], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert tool.stdout is not None and tool.stderr is not None
    assert tool.stdout.readline() == b"line 0\n"
    tool.stdout.close()  # the reader goes away, as `head -1` does
    with tool.stderr:
        errors = tool.stderr.read()
    assert tool.wait(timeout=30) == CLOSED_PIPE_EXIT
    assert errors == b"", errors.decode()
