"""The OpenAPI 3 document of the HTTP/JSON API, made from protos/ (a descriptor set with source info).

It describes what Envoy's gRPC-JSON transcoder does with the `google.api.http` routes, as
envoy/envoy.yaml configures it, rather than what protobuf's JSON mapping allows in general:
- names are the fields' JSON names (lowerCamelCase, or a `json_name`), as the transcoder prints them;
- 64-bit integers are strings, Timestamps RFC 3339 strings, Durations strings such as "3600s", enums
  their value names;
- `google.api.field_behavior` REQUIRED is `required`, OUTPUT_ONLY is `readOnly`, INPUT_ONLY
  `writeOnly`; in an answer every field is printed (`always_print_primitive_fields`) but an unset
  message or `optional` number, so a field that is always printed is `required` too where only
  answers carry it;
- a client stream's body is a JSON array of its messages; a server stream answers with Server-Sent
  Events (`stream_sse_style_delimited`), each event's data one message (`x-itemSchema`, OpenAPI 3.2's
  `itemSchema`);
- an error is JSON `{"code", "message", "details"}`: a gRPC status from a service, or an HTTP status
  from Envoy's own refusals (envoy/envoy.yaml's local_reply_config).

Read document.py first (`generate`): it assembles the document from routes.py (each route's path,
parameters, body and answer), schemas.py (messages and enums as JSON schemas) and errors.py (the JSON
error), over descriptors.py (the descriptor set and its comments); what it cannot describe it refuses
(unsupported.py). `python -m openapi` (__main__.py) writes it as YAML.
"""
