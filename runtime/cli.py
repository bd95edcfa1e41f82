"""What every command-line tool of the product does on its way out."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import NoReturn

# A reader that stops reading (head) has what it wanted: not the tool's failure, and `make status |
# head -3` must not end with make's "Error 141" (what a shell reports for a writer killed by SIGPIPE).
CLOSED_PIPE_EXIT = 0


def run(main: Callable[[], int]) -> NoReturn:
    """Runs a tool's main and exits with its code. A reader that goes away (`make status | head -3`)
    ends the tool quietly, as it does any Unix tool, not with a BrokenPipeError traceback."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit and would complain a second time: send it nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = CLOSED_PIPE_EXIT
    sys.exit(code)
