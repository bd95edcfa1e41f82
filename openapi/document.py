"""The OpenAPI document assembled: every service of a package with its routes' operations, the
schemas they refer to, the error responses and the security scheme."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2

from openapi import routes
from openapi.descriptors import METHOD, SERVICE, Index
from openapi.errors import error_responses, error_schemas
from openapi.schemas import Generator
from openapi.unsupported import UnsupportedError

OPENAPI_VERSION = "3.0.3"
SECURITY_SCHEME = "token"


def generate(files: descriptor_pb2.FileDescriptorSet, package: str, title: str) -> dict[str, Any]:
    """The OpenAPI document of every service of `package` in a descriptor set (made with
    --include_source_info, which holds the comments)."""
    index = Index(files)
    generator = Generator(index, package)
    services = [
        (file, i, service)
        for file in index.files
        if file.proto.package == package
        for i, service in enumerate(file.proto.service)
    ]
    services.sort(key=lambda item: item[2].name)
    generator.note_answers([service for _, _, service in services])
    paths: dict[str, dict[str, Any]] = {}
    tags = []
    for file, i, service in services:
        operations = [
            operation
            for j, method in enumerate(service.method)
            for operation in routes.operations(generator, file, (SERVICE, i, METHOD, j), service, method)
        ]
        if not operations:
            continue
        tags.append({"name": service.name, "description": file.comment((SERVICE, i))})
        for path, verb, operation in operations:
            if verb in paths.setdefault(path, {}):
                raise UnsupportedError(f"{verb.upper()} {path} is routed twice")
            paths[path][verb] = operation
    schemas = {**dict(sorted(generator.schemas.items())), **error_schemas()}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": package.rpartition(".")[2], "description": INTRODUCTION},
        "servers": [{"url": "/", "description": "This front door (the address the document came from)"}],
        "security": [{}, {SECURITY_SCHEME: []}],
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": error_responses(),
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A token from `make token`, on the TLS port (8443); a device may "
                    "present a client certificate instead. The local plaintext port (8080) takes none.",
                }
            },
        },
    }


INTRODUCTION = """\
The HTTP/JSON API of Metrics, an IoT metrics pipeline: sensors send readings, the system stores
them, raises events when a sensor stays above a threshold, and answers queries. Every route is a
gRPC method of `protos/` (package metrics.v1) that Envoy transcodes; this document is generated from
them by `make proto`. The same API is native gRPC on the same ports (reflection lists it).

**Where.** Port 8443 (TLS) needs a bearer token (`make token`) or a device certificate on every
request; port 8080 (plaintext, this machine only) needs none. Answers are HTTP/1.1 or HTTP/2.

**JSON.** Field names are lowerCamelCase. 64-bit integers are strings (`"count": "8"`; requests may
send numbers), times RFC 3339 (`2026-11-28T09:00:00Z`), durations seconds (`"3600s"`), enums their
names. An answer carries every field, with its default value when unset (`0`, `""`, `[]`), but a
message or an `optional` number that is unset. Unknown query parameters are refused (400); unknown
fields of a body are ignored.

**Errors** are JSON `{"code", "message", "details"}` with the HTTP status of the gRPC status (see
`Error`)."""
