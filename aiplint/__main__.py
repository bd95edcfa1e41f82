"""python -m aiplint DESCRIPTOR_SET [--package metrics.v1]: the AIP problems of protos/, one a line.

Exit status 0 when there are none, 1 when there are. The descriptor set must carry source info
(protoc --include_source_info), which holds the comments that disable a rule.
"""

from __future__ import annotations

import argparse
import sys

from google.protobuf import descriptor_pb2

from aiplint import lint
from runtime import cli


def main() -> int:
    parser = argparse.ArgumentParser(prog="aiplint", description=__doc__.splitlines()[0])
    parser.add_argument("descriptor_set")
    parser.add_argument("--package", default="metrics.v1")
    args = parser.parse_args()
    files = descriptor_pb2.FileDescriptorSet()
    with open(args.descriptor_set, "rb") as f:
        files.ParseFromString(f.read())
    problems = lint(files, args.package)
    for problem in problems:
        print(problem)
    if problems:
        print(f"aiplint: {len(problems)} problem(s) in {args.package}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    cli.run(main)
