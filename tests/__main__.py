"""python -m tests [PYTEST ARGS]: every test but the cluster topology's, in two phases (`make test`).

1. What shares nothing with other tests but the running stack (the unit tests, and the integration
   tests that use sensors, topics, databases, instances and a Redis Cluster of their own) runs in
   two processes (pytest-xdist), a module at a time each.
2. What kills or restarts the stack's processes, or reads what only it runs (marker local_stack),
   and what other tests' processes would disturb (marker alone), runs alone, after.

Extra arguments go to both phases. A phase that the arguments leave without tests is skipped, but
no test at all is a failure (pytest's exit code 5), as is any failure in either phase. A failed
phase ends with a digest (its failed tests and what the stack's supervisor saw exit), so that the
last lines of a long run say what went wrong.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from stack import settings as stack_settings

NO_TESTS = 5
PHASES = (
    (
        "in two processes",
        [
            "-m",
            "not cluster and not network and not local_stack and not alone",
            "-n",
            "2",
            "--dist",
            "loadfile",
        ],
    ),
    ("alone", ["-m", "not cluster and not network and (local_stack or alone)"]),
)


def main(args: list[str]) -> int:
    ran = False
    for name, options in PHASES:
        print(f"==> tests: {name}", flush=True)
        began = time.monotonic()
        with tempfile.TemporaryDirectory() as folder:
            results = Path(folder) / "results.xml"
            command = [sys.executable, "-m", "pytest", *options, f"--junitxml={results}", *args]
            code = subprocess.run(command, check=False).returncode
            if code not in (0, NO_TESTS):
                print(digest(results), flush=True)
        print(f"==> tests: {name}: exit {code} in {time.monotonic() - began:.0f} s", flush=True)
        if code == NO_TESTS:
            continue
        if code != 0:
            return code
        ran = True
    if not ran:
        print("no test was collected in either phase", file=sys.stderr)
        return NO_TESTS
    return 0


def digest(results: Path, most: int = 12) -> str:
    """The failed tests of a JUnit XML report, a line each with the first line of why, and the
    stack's processes that exited unexpectedly meanwhile."""
    lines = ["==> digest of the failures"]
    try:
        cases = ElementTree.parse(results).getroot().iter("testcase")
    except (OSError, ElementTree.ParseError) as exc:
        cases = iter(())
        lines.append(f"  (no test report: {exc})")
    failed = []
    for case in cases:
        for outcome in ("failure", "error"):
            found = case.find(outcome)
            if found is not None:
                why = (found.get("message") or found.text or "").strip().splitlines() or [""]
                test = f"{case.get('classname', '')}::{case.get('name', '')}"
                failed.append(
                    f"  {outcome.upper()} {test} ({float(case.get('time', 0)):.0f} s): {why[0][:200]}"
                )
    lines += failed[:most] + ([f"  ... and {len(failed) - most} more"] if len(failed) > most else [])
    log = stack_settings.load().state_dir / "logs" / "supervisord.log"
    exits = [line for line in _lines(log) if " exited: " in line and "not expected" in line]
    if exits:
        lines += ["  the stack's last unexpected exits (the fault tests' own kills among them):"]
        lines += [f"    {e}" for e in exits[-6:]]
    return "\n".join(lines)


def _lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines() if path.exists() else []


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
