"""What the machine must provide: Debian packages, and Kafka's jars from Maven Central."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from stack.settings import ROOT, StackSettings

KAFKA_POM = ROOT / "stack" / "kafka" / "pom.xml"
CONSOLE = ROOT / "console"
API_DOCS = ROOT / "apidocs"


class SetupError(RuntimeError):
    """Something the stack needs is missing and could not be installed; the message says what to do."""


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def ensure_packages(settings: StackSettings) -> None:
    """Installs the Debian packages of the servers when they are missing (as root), or says which."""
    install_missing(
        {
            "postgresql": (settings.postgres_bin / "postgres").exists()
            and (settings.postgres_bin / "initdb").exists(),
            "redis-server": shutil.which("redis-server") is not None,
            "default-jre-headless": shutil.which("java") is not None,
            "maven": shutil.which("mvn") is not None,
            # Fetches uPlot for the web console and Swagger UI for the HTTP API's page
            # (fetch_console_libs, fetch_docs_libs); any Node.js version does.
            "npm": shutil.which("npm") is not None,
            "prometheus": shutil.which("prometheus") is not None and shutil.which("promtool") is not None,
            "prometheus-postgres-exporter": shutil.which("prometheus-postgres-exporter") is not None,
            "prometheus-redis-exporter": shutil.which("prometheus-redis-exporter") is not None,
            # The MQTT broker, and its command-line clients (the documentation's walk-through).
            "mosquitto": shutil.which("mosquitto") is not None,
            "mosquitto-clients": shutil.which("mosquitto_pub") is not None,
            # PostgreSQL's backups and WAL archive (stack/backup.py).
            "pgbackrest": shutil.which("pgbackrest") is not None,
            # Redis's Lua (5.1): `make lint` parses the processor's scripts with its compiler.
            "lua5.1": shutil.which("luac5.1") is not None,
        }
    )
    if not (settings.postgres_bin / "postgres").exists():
        raise SetupError(
            f"PostgreSQL server binaries not found in {settings.postgres_bin}; "
            "set METRICS_POSTGRES_BIN to the directory holding postgres and initdb"
        )


# The browser the console's tests drive (Playwright's own download is not used).
CHROMIUM = Path("/usr/bin/chromium")


def ensure_browser() -> Path:
    """Debian's Chromium, installed when missing (as root); only the console's tests need it."""
    install_missing({"chromium": CHROMIUM.exists()})
    return CHROMIUM


def ensure_vmagent() -> Path:
    """VictoriaMetrics's agent (Debian's victoria-metrics), installed when missing (as root): only the
    remote write tests need it."""
    install_missing({"victoria-metrics": shutil.which("vmagent") is not None})
    found = shutil.which("vmagent")
    if found is None:
        raise SetupError("vmagent is not on PATH after installing victoria-metrics")
    return Path(found)


TELEGRAF_VERSION = "v1.37.2"
TELEGRAF = Path.home() / ".cache" / "metrics" / f"telegraf-{TELEGRAF_VERSION}" / "telegraf"
TOXIPROXY_VERSION = "v2.12.0"
TOXIPROXY = Path.home() / ".cache" / "metrics" / f"toxiproxy-{TOXIPROXY_VERSION}" / "server"


def ensure_telegraf() -> Path:
    """Telegraf: ~12 minutes of 2 cores, once. The line protocol tests write with it."""
    return _go_install("Telegraf", f"github.com/influxdata/telegraf/cmd/telegraf@{TELEGRAF_VERSION}",
                       TELEGRAF, "Go 1.24", "~12 min")  # fmt: skip


def ensure_toxiproxy() -> Path:
    """Toxiproxy's server: ~30 s, once. `make test-network` puts it between the services and the
    servers."""
    return _go_install("Toxiproxy", f"github.com/Shopify/toxiproxy/v2/cmd/server@{TOXIPROXY_VERSION}",
                       TOXIPROXY, "Go 1.22", "~30 s")  # fmt: skip


def _go_install(name: str, module: str, binary: Path, go: str, takes: str) -> Path:
    """A tool no Debian package ships, built from the Go module proxy into its folder of
    ~/.cache/metrics when missing."""
    if binary.exists():
        return binary
    if shutil.which("go") is None:
        raise SetupError(f"{name} is built from source: install {go} or later")
    say(f"Building {name} ({module}) from the Go module proxy, once ({takes}): {binary.parent}")
    env = {**os.environ, "GOBIN": str(binary.parent), "GOFLAGS": "-trimpath"}
    subprocess.run(["go", "install", module], env=env, check=True)
    return binary


def install_missing(present: dict[str, bool]) -> None:
    """apt-get installs the packages whose value is False (as root), or says how to."""
    missing = [package for package, there in present.items() if not there]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SetupError(
            f"missing system packages; install them with: sudo apt-get install -y {' '.join(missing)}"
        )
    say(f"Installing Debian packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if subprocess.run(install, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(install, env=env, check=True)


RESERVED_PORTS = Path("/proc/sys/net/ipv4/ip_local_reserved_ports")


def reserve_ports(settings: StackSettings) -> None:
    """Keeps the kernel from giving the stack's ports to outgoing connections: most of them lie in
    its ephemeral range (32768-60999), and a client's connection that happened to take one (a Kafka
    producer's, say) made a service's bind fail for as long as it lived. As root only; else nothing."""
    if os.geteuid() != 0 or not os.access(RESERVED_PORTS, os.W_OK):
        return
    current = {p for p in RESERVED_PORTS.read_text().strip().split(",") if p}
    wanted = current | {str(port) for port in settings.ports}
    if wanted != current:
        RESERVED_PORTS.write_text(",".join(sorted(wanted, key=lambda p: int(p.split("-")[0]))))


def check_disk(settings: StackSettings) -> None:
    """Refuses to start on a nearly full disk rather than let PostgreSQL and Kafka fail midway."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    free_mb = free_disk_mb(settings.state_dir)
    if free_mb < settings.min_free_mb:
        raise SetupError(
            f"only {free_mb:,} MB free on the disk holding {settings.state_dir} "
            f"(the stack's data takes {used_mb(settings.state_dir):,} MB of it); "
            f"{settings.min_free_mb:,} MB are needed, since PostgreSQL and Kafka stop when the disk is full. "
            "Free some space (`make distclean` removes the stack's data) or set METRICS_MIN_FREE_MB"
        )


def free_disk_mb(path: Path) -> int:
    return shutil.disk_usage(path).free // 2**20


def used_mb(path: Path) -> int:
    """Disk space taken by the files under `path` (what `du` counts)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
    return total // 2**20


def fetch_kafka_libs(libs: Path) -> Path:
    """The broker's classpath directory, fetched from Maven Central once per version of the pom."""
    stamp = libs / ".pom-sha256"
    digest = hashlib.sha256(KAFKA_POM.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return libs
    say("Fetching Apache Kafka's jars from Maven Central")
    if libs.exists():
        shutil.rmtree(libs)
    libs.parent.mkdir(parents=True, exist_ok=True)
    command = [
        "mvn", "--batch-mode", "--quiet", "-f", str(KAFKA_POM),
        "dependency:copy-dependencies", f"-DoutputDirectory={libs}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SetupError(f"mvn could not fetch Kafka's jars:\n{result.stdout}{result.stderr}")
    stamp.write_text(digest)
    return libs


def fetch_console_libs(vendor: Path) -> None:
    """What the web console takes from npm (uPlot, pinned by console/package-lock.json) into
    `vendor`, where Envoy serves it: once per version of the lock file. The Dockerfile does the same."""

    def place(modules: Path) -> None:
        dist = modules / "uplot" / "dist"
        # uPlot's minified build (51 KB; its ES module is 145 KB unminified) is a script that defines
        # `uPlot`: one line more makes it an ES module.
        script = (dist / "uPlot.iife.min.js").read_text()
        (vendor / "uPlot.js").write_text(script + "\nexport default uPlot;\n")
        shutil.copy(dist / "uPlot.min.css", vendor / "uPlot.min.css")

    _npm_fetch(CONSOLE, vendor, "the web console's uPlot", place)


def fetch_docs_libs(vendor: Path) -> None:
    """What the HTTP API's page takes from npm (Swagger UI, pinned by apidocs/package-lock.json)
    into `vendor`, where Envoy serves it: once per version of the lock file. The Dockerfile does the
    same."""

    def place(modules: Path) -> None:
        dist = modules / "swagger-ui-dist"
        # The bundle (1.7 MB: React and Swagger UI, no other download), its style, and the licences
        # (Envoy serves files by their extension: LICENSE as LICENSE.txt).
        for name in ("swagger-ui-bundle.js", "swagger-ui.css", "swagger-ui-bundle.js.LICENSE.txt"):
            shutil.copy(dist / name, vendor / name)
        shutil.copy(dist / "LICENSE", vendor / "LICENSE.txt")

    _npm_fetch(API_DOCS, vendor, "the HTTP API page's Swagger UI", place)


def _npm_fetch(folder: Path, vendor: Path, what: str, place: Callable[[Path], None]) -> None:
    """`npm ci` in `folder` (its package-lock.json pins every version; no install scripts run: they
    are not needed, and one of swagger-ui-dist's dependencies only reports the download), then
    `place(node_modules)` fills `vendor`: once per version of the lock file."""
    lock = folder / "package-lock.json"
    stamp = vendor / ".package-lock-sha256"  # a dot file: Envoy serves no hidden files
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    say(f"Fetching {what} from npm")
    command = ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SetupError(f"npm ci in {folder} failed:\n{result.stdout}{result.stderr}")
    if vendor.exists():
        shutil.rmtree(vendor)
    vendor.mkdir(parents=True)
    place(folder / "node_modules")
    stamp.write_text(digest)
