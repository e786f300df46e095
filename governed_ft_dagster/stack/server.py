"""Run the open-source Unity Catalog server as a background process under the state folder."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from governed_ft_dagster.processes import with_default_signals
from governed_ft_dagster.stack import jars
from governed_ft_dagster.stack.errors import StackError

MAIN_CLASS = "io.unitycatalog.server.UnityCatalogServer"
MIN_JAVA = 17

SERVER_PROPERTIES = """\
server.env=dev
server.authorization=enable
server.authorization-url=
server.token-url=
server.client-id=
server.client-secret=
server.redirect-port=
server.allowed-issuers=internal
server.audiences=
server.cookie-timeout=P5D
server.managed-table.enabled=false
storage-root.models={models_root}
"""

HIBERNATE_PROPERTIES = """\
hibernate.connection.driver_class=org.h2.Driver
hibernate.connection.url=jdbc:h2:file:./etc/db/h2db;DB_CLOSE_DELAY=-1
hibernate.hbm2ddl.auto=update
hibernate.show_sql=false
hibernate.archive.autodetection=class
"""


@dataclass(frozen=True)
class ServerPaths:
    """Files of the local catalog server under the state folder."""

    root: Path

    @classmethod
    def under(cls, home: Path) -> "ServerPaths":
        return cls(home / "uc")

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "conf"

    @property
    def database(self) -> Path:
        return self.root / "etc" / "db"

    @property
    def pid_file(self) -> Path:
        return self.root / "server.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @property
    def admin_token_file(self) -> Path:
        return self.conf / "token.txt"


def write_config(paths: ServerPaths) -> None:
    """Write server and database configuration (idempotent; an edited file is left alone)."""
    paths.conf.mkdir(parents=True, exist_ok=True)
    paths.database.mkdir(parents=True, exist_ok=True)
    # Model versions need managed storage; the catalog and schemas have none, so the server's root is used. It
    # lies outside the external locations, which may not contain managed storage.
    models_root = (paths.root.parent / "warehouse" / "uc-managed").as_uri()
    server_properties = SERVER_PROPERTIES.format(models_root=models_root)
    for name, text in (("server.properties", server_properties), ("hibernate.properties", HIBERNATE_PROPERTIES)):
        target = paths.conf / name
        if not target.exists():
            target.write_text(text)


def java_executable() -> str:
    """Path of a Java >= 17 runtime, or a StackError naming the fix."""
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home and (Path(java_home) / "bin" / "java").exists() else shutil.which("java")
    if not java:
        raise StackError("Java is not installed; install Java 17 (`apt-get install -y openjdk-17-jre-headless`) or set JAVA_HOME")
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise StackError(f"Java {major or 'of unknown version'} is too old for the catalog server; install Java {MIN_JAVA} or set JAVA_HOME to one")
    return java


def free_port_pair(host: str = "127.0.0.1", low: int = 20000, high: int = 32000) -> int:
    """A port whose successor is free too (the server binds both), below the kernel's ephemeral range."""
    for _ in range(200):
        port = random.randrange(low, high)
        try:
            with socket.socket() as first, socket.socket() as second:
                first.bind((host, port))
                second.bind((host, port + 1))
        except OSError:
            continue
        return port
    raise StackError(f"no free port pair between {low} and {high} on {host}; set GOVERNED_FT_UC_PORT")


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def read_pid(paths: ServerPaths) -> int | None:
    try:
        pid = int(paths.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def admin_token(paths: ServerPaths) -> str | None:
    try:
        return paths.admin_token_file.read_text().strip() or None
    except FileNotFoundError:
        return None


def healthy(url: str, token: str | None, timeout_s: float = 2.0) -> bool:
    """Whether the catalog answers an authenticated list of catalogs."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = requests.get(f"{url}/api/2.1/unity-catalog/catalogs", headers=headers, timeout=timeout_s)
    except requests.RequestException:
        return False
    return response.status_code == 200


def check_can_start(home: Path, host: str, port: int) -> None:
    """Cheap checks before fetching anything: the port is ours or free, and Java is there."""
    if read_pid(ServerPaths.under(home)) is not None:
        return
    for candidate in (port, port + 1):
        if port_in_use(host, candidate):
            raise StackError(
                f"port {candidate} on {host} is taken by another program (the catalog needs {port} and {port + 1}); "
                "stop that program or choose another port with GOVERNED_FT_UC_PORT"
            )
    java_executable()


def start(home: Path, host: str, port: int, wait_s: float = 120.0) -> int:
    """Start the server unless ours is already running; return its pid."""
    paths = ServerPaths.under(home)
    url = f"http://{host}:{port}"
    pid = read_pid(paths)
    if pid is not None and healthy(url, admin_token(paths)):
        return pid
    if pid is None:
        check_can_start(home, host, port)
        java = java_executable()
        classpath = jars.classpath(home, "uc-server")
        write_config(paths)
        log_start = paths.log_file.stat().st_size if paths.log_file.exists() else 0
        log = paths.log_file.open("ab")
        process = subprocess.Popen(
            with_default_signals([java, "-cp", os.pathsep.join(str(p) for p in classpath), MAIN_CLASS,
                                  "-p", str(port)]),
            cwd=paths.root,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        pid = process.pid
        paths.pid_file.write_text(f"{pid}\n")
    else:
        log_start = paths.log_file.stat().st_size if paths.log_file.exists() else 0
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if read_pid(paths) is None:
            raise StackError(f"the catalog server exited during start-up; its log is {paths.log_file}:\n{_tail(paths.log_file)}")
        if healthy(url, admin_token(paths)):
            return pid
        if _bind_failed(paths.log_file, log_start):  # the JVM lingers after this, so do not wait it out
            stop(home)
            raise StackError(f"another program took port {port} or {port + 1} while the catalog server started; "
                             "stop that program or choose another port with GOVERNED_FT_UC_PORT, then run "
                             "`governed-ft stack up` again")
        time.sleep(0.5)
    raise StackError(f"the catalog server did not answer on {url} within {wait_s:.0f} s; see {paths.log_file}")


def stop(home: Path, wait_s: float = 30.0) -> bool:
    """Stop our server if it runs; return whether one was stopped."""
    paths = ServerPaths.under(home)
    pid = read_pid(paths)
    if pid is None:
        paths.pid_file.unlink(missing_ok=True)
        return False
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and read_pid(paths) is not None:
        _reap(pid)
        time.sleep(0.2)
    if read_pid(paths) is not None:
        os.killpg(pid, signal.SIGKILL)
        killed_by = time.monotonic() + 10.0
        while time.monotonic() < killed_by and read_pid(paths) is not None:  # a killed JVM still holds its ports
            _reap(pid)
            time.sleep(0.05)
    paths.pid_file.unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _bind_failed(log_file: Path, start: int) -> bool:
    try:
        with log_file.open("rb") as handle:
            handle.seek(start)
            return b"Address already in use" in handle.read()
    except FileNotFoundError:
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"
