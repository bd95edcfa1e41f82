"""The JSON error a route may answer: its schemas, the responses by HTTP status, and an operation's
references to them."""

from __future__ import annotations

from typing import Any

ERROR = "Error"
ERROR_DETAIL = "ErrorDetail"
# What a refused request gets, by HTTP status; every other failure is the `default` answer.
ERROR_RESPONSES = {
    "400": "Bad input: the service's INVALID_ARGUMENT (code 3, with google.rpc.BadRequest details "
    "naming each field), or Envoy's refusal of a request it cannot read (code 400: malformed JSON, a "
    "value of the wrong type, an unknown query parameter).",
    "401": "On the TLS port: no token or device certificate, or a token that is not valid (code 401, "
    "from Envoy).",
    "403": "PERMISSION_DENIED (code 7): the token does not cover this sensor or has not the scope.",
    "429": "RESOURCE_EXHAUSTED (code 8), or Envoy's rate limit of the token (code 429, with a "
    "retry-after header): try again later.",
    "503": "UNAVAILABLE (code 14): a server behind the service is down or busy; try again later (a "
    "google.rpc.RetryInfo detail may say when).",
}


def error_refs() -> dict[str, Any]:
    """An operation's failures: a reference to each error response."""
    return {status: {"$ref": f"#/components/responses/{status}"} for status in (*ERROR_RESPONSES, "default")}


def error_responses() -> dict[str, Any]:
    """The error responses of the document's components, by HTTP status."""
    return {
        status: {
            "description": text,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR}"}}},
        }
        for status, text in {**ERROR_RESPONSES, "default": "Any other failure."}.items()
    }


def error_schemas() -> dict[str, Any]:
    """The schemas of the error and of its details, for the document's components."""
    return {
        ERROR: {
            "type": "object",
            "description": "Why a request failed: a gRPC status from the service (google.rpc.Status "
            "in JSON), or Envoy's own refusal.",
            "required": ["code", "message"],
            "properties": {
                "code": {
                    "type": "integer",
                    "format": "int32",
                    "description": "The gRPC status code when the service answered (3 INVALID_ARGUMENT, "
                    "5 NOT_FOUND, 7 PERMISSION_DENIED, 8 RESOURCE_EXHAUSTED, 14 UNAVAILABLE, "
                    "4 DEADLINE_EXCEEDED, 13 INTERNAL); the HTTP status when Envoy refused the request "
                    "itself (400, 401, 404, 429).",
                },
                "message": {"type": "string", "description": "What went wrong, for people."},
                "details": {
                    "type": "array",
                    "description": "Details for programs (the service's errors only).",
                    "items": {"$ref": f"#/components/schemas/{ERROR_DETAIL}"},
                },
            },
        },
        ERROR_DETAIL: {
            "type": "object",
            "description": "A google.protobuf.Any in JSON: `@type` names the message, its fields follow. "
            "`type.googleapis.com/google.rpc.BadRequest` (`fieldViolations`: `field`, `description`) "
            "with INVALID_ARGUMENT; `type.googleapis.com/google.rpc.RetryInfo` (`retryDelay`, e.g. "
            '"1s") with UNAVAILABLE.',
            "required": ["@type"],
            "properties": {"@type": {"type": "string"}},
            "additionalProperties": True,
        },
    }
