"""python -m tests [PYTEST ARGS]: every test but the cluster topology's, in two phases (`make test`).

1. What shares nothing with other tests but the running stack (the unit tests, and the integration
   tests that use sensors, topics, databases, instances and a Redis Cluster of their own) runs in
   two processes (pytest-xdist), a module at a time each.
2. What kills or restarts the stack's processes, or reads what only it runs (marker local_stack),
   and what other tests' processes would disturb (marker alone), runs alone, after.

Extra arguments go to both phases. A phase that the arguments leave without tests is skipped, but
no test at all is a failure (pytest's exit code 5), as is any failure in either phase.
"""

from __future__ import annotations

import subprocess
import sys
import time

NO_TESTS = 5
PHASES = (
    (
        "in two processes",
        ["-m", "not cluster and not local_stack and not alone", "-n", "2", "--dist", "loadfile"],
    ),
    ("alone", ["-m", "not cluster and (local_stack or alone)"]),
)


def main(args: list[str]) -> int:
    ran = False
    for name, options in PHASES:
        print(f"==> tests: {name}", flush=True)
        began = time.monotonic()
        code = subprocess.run([sys.executable, "-m", "pytest", *options, *args], check=False).returncode
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
