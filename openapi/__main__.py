"""python -m openapi DESCRIPTOR_SET [--package metrics.v1] [--out FILE]: the HTTP/JSON API's OpenAPI 3
document (YAML), made from the google.api.http routes of protos/.

The descriptor set must carry source info (protoc --include_source_info): the comments become the
document's descriptions. `make proto` writes gen/openapi.yaml with it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import descriptor_pb2

from openapi.document import generate
from runtime import cli

HEADER = "# The HTTP/JSON API of Metrics, generated from protos/ by `make proto` (python -m openapi).\n"


class _Dumper(yaml.SafeDumper):
    """Text of several lines as a literal block, as it was written; no anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _text)


def dump(document: dict[str, Any]) -> str:
    return HEADER + yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def main() -> int:
    parser = argparse.ArgumentParser(prog="openapi", description=__doc__.splitlines()[0])
    parser.add_argument("descriptor_set")
    parser.add_argument("--package", default="metrics.v1")
    parser.add_argument("--title", default="Metrics")
    parser.add_argument("--out", type=Path, help="the file to write (default: standard output)")
    args = parser.parse_args()
    files = descriptor_pb2.FileDescriptorSet()
    files.ParseFromString(Path(args.descriptor_set).read_bytes())
    text = dump(generate(files, args.package, args.title))
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    cli.run(main)
