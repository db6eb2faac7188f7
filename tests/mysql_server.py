"""A throwaway MariaDB server for tests: the session fixture `mariadb`.

Test modules use it with `pytest_plugins = ["mysql_server"]` (not by
importing the fixture: an imported session fixture is made once per module).
It initialises a data directory with mariadb-install-db in a new temporary
directory, starts mariadbd as the current user on a private unix socket and a
free TCP port on 127.0.0.1, waits until it answers, creates a database and a
user for it, and at the end stops the server and deletes the directory.

MariaDB comes from Debian's mariadb-server package (`make system-packages`);
without it the fixture fails rather than skips, so that a missing server is
never mistaken for a passing suite.
"""

import collections
import dataclasses
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
from typing import List, Optional

import pytest

_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin"])
_MISSING = ("{program} not found: the MariaDB tests need a MariaDB server; run "
            "`make system-packages` (installs Debian's mariadb-server)")
# Small InnoDB files: the server starts in about a second and takes ~25 MB.
_SMALL = ["--innodb-log-file-size=8M", "--innodb-buffer-pool-size=32M"]


def _program(name: str) -> str:
    path = shutil.which(name, path=_SEARCH_PATH)
    if path is None:
        pytest.fail(_MISSING.format(program=name), pytrace=False)
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: str, chars: int = 3000) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-chars:]
    except FileNotFoundError:
        return f"({path} was not written)"


@dataclasses.dataclass
class MariaDB:
    """A running server: its socket, its TCP port, and a database with a
    user that may use it over TCP (user, password)."""

    base_dir: str
    socket: str
    port: int
    process: subprocess.Popen
    database: str = "mlmd"
    user: str = "mlmd"
    password: str = "mlmd-test-pw"

    @property
    def error_log(self) -> str:
        return os.path.join(self.base_dir, "mariadbd.err")

    def tcp_url(self, database: Optional[str] = None, password: bool = True) -> str:
        secret = f":{urllib.parse.quote(self.password, safe='')}" if password else ""
        return (f"mysql://{self.user}{secret}@127.0.0.1:{self.port}/"
                f"{database or self.database}")

    def socket_url(self, database: Optional[str] = None) -> str:
        """As the server's root user, who has no password on the socket."""
        return (f"mysql://root@localhost/{database or self.database}"
                f"?unix_socket={urllib.parse.quote(self.socket, safe='/')}")

    def sql(self, statements: str) -> List[List[str]]:
        """Runs SQL as root over the socket with the mariadb client; rows of
        the last statement, tab-separated fields, no header."""
        proc = subprocess.run(
            [_program("mariadb"), "--no-defaults", f"--socket={self.socket}",
             "--user=root", "--batch", "--skip-column-names", "-e", statements],
            capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"mariadb client failed: {proc.stderr.strip()}")
        return [line.split("\t") for line in proc.stdout.splitlines()]

    def create_database(self, name: str) -> None:
        """A database that the TCP user may use (and create tables in)."""
        self.sql(f"CREATE DATABASE `{name}`; "
                 f"GRANT ALL ON `{name}`.* TO '{self.user}'@'127.0.0.1';")


def start(base_dir: str, attempts: int = 3, timeout: float = 60) -> MariaDB:
    """Initialises a data directory under `base_dir` and starts a server on it."""
    mariadbd, install_db = _program("mariadbd"), _program("mariadb-install-db")
    user = pwd.getpwuid(os.getuid()).pw_name
    data_dir = os.path.join(base_dir, "data")
    os.makedirs(os.path.join(base_dir, "tmp"))
    install_log = os.path.join(base_dir, "install.log")
    with open(install_log, "w") as log:
        # root@localhost without a password (over the socket only: a private
        # server), no test database; --user: mariadbd refuses to run as root
        # unless told to.
        proc = subprocess.run(
            [install_db, "--no-defaults", f"--datadir={data_dir}", f"--user={user}",
             "--auth-root-authentication-method=normal", "--skip-test-db", *_SMALL],
            stdout=log, stderr=subprocess.STDOUT, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"mariadb-install-db failed (rc {proc.returncode}):\n"
                    f"{_tail(install_log)}", pytrace=False)

    sock = os.path.join(base_dir, "mysqld.sock")
    for attempt in range(attempts):
        server = MariaDB(base_dir=base_dir, socket=sock, port=_free_port(), process=None)
        with open(os.path.join(base_dir, "mariadbd.out"), "w") as out:
            server.process = subprocess.Popen(
                [mariadbd, "--no-defaults", f"--datadir={data_dir}", f"--user={user}",
                 f"--socket={sock}", "--bind-address=127.0.0.1", f"--port={server.port}",
                 f"--pid-file={os.path.join(base_dir, 'mariadbd.pid')}",
                 f"--log-error={server.error_log}", f"--tmpdir={os.path.join(base_dir, 'tmp')}",
                 "--skip-log-bin", "--skip-name-resolve", *_SMALL],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        if _wait_until_ready(server, timeout):
            try:
                server.sql(f"CREATE USER '{server.user}'@'127.0.0.1' "
                           f"IDENTIFIED BY '{server.password}';")
                server.create_database(server.database)
            except BaseException:
                stop(server, remove=False)
                raise
            return server
        log = _tail(server.error_log)
        stop(server, remove=False)
        # Another process may have taken the port between _free_port and bind.
        if "Address already in use" not in log or attempt == attempts - 1:
            pytest.fail(f"mariadbd did not start (rc {server.process.returncode}); "
                        f"{server.error_log}:\n{log}", pytrace=False)
    raise AssertionError("unreachable")


def _wait_until_ready(server: MariaDB, timeout: float) -> bool:
    """True once the server answers on its socket and TCP port; False if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            server.sql("SELECT 1")
            with socket.create_connection(("127.0.0.1", server.port), timeout=5):
                return True
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            time.sleep(0.2)
    stop(server, remove=False)
    pytest.fail(f"mariadbd did not answer within {timeout:.0f} s; "
                f"{server.error_log}:\n{_tail(server.error_log)}", pytrace=False)


def stop(server: MariaDB, remove: bool = True, timeout: float = 60) -> None:
    """Stops the server (SIGTERM: a clean shutdown; SIGKILL if it hangs) and
    deletes its directory."""
    if server.process is not None and server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=30)
    if remove:
        shutil.rmtree(server.base_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def mariadb():
    """A MariaDB server for the session, with database `mlmd` (see MariaDB)."""
    # A short path: a unix socket's path must fit in 107 bytes.
    base_dir = tempfile.mkdtemp(prefix="recsys-mariadb-")
    try:
        server = start(base_dir)
    except BaseException:
        shutil.rmtree(base_dir, ignore_errors=True)
        raise
    try:
        yield server
    finally:
        stop(server)


# --------------------------------------------------------------------------
# One pipeline run shared by test_mlmd_mysql and test_beam_runners (both list
# this module in pytest_plugins, so that session fixtures are made once): a
# run with two Beam worker processes costs about two minutes on two cores,
# most of it starting workers, too much to pay twice.

BEAM_WORKERS = 2
_SDK_WORKER = b"apache_beam.runners.worker.sdk_worker_main"


class BeamWorkerWatch:
    """Counts the Beam SDK worker processes descending from this process,
    sampling /proc from a thread while the `with` block runs.

    `most_at_once` counts per Beam job (workers share their job's control
    address): a finished job's worker may still be exiting while the next
    component's job starts its own."""

    def __init__(self, interval: float = 0.1):
        import threading

        self.seen = set()
        self.most_at_once = 0
        self._interval, self._stop = interval, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()

    def _watch(self):
        me = os.getpid()
        while not self._stop.wait(self._interval):
            alive = {pid for pid in _processes_with(_SDK_WORKER) if _descends(pid, me)}
            self.seen |= alive
            per_job = collections.Counter(_control_address(pid) for pid in alive)
            self.most_at_once = max(self.most_at_once, *per_job.values(), 0)


def _processes_with(argument: bytes) -> List[int]:
    """Processes with `argument` as one of their arguments (so not the
    `sh -c "python -m ..."` that Beam starts each worker with)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if argument in f.read().split(b"\0"):
                        found.append(int(name))
            except OSError:
                pass  # gone meanwhile
    return found


def _control_address(pid: int) -> str:
    """The job a Beam worker serves: the control address Beam gives it in
    its environment (the pid itself if it cannot be read)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            for entry in f.read().split(b"\0"):
                if entry.startswith(b"CONTROL_API_SERVICE_DESCRIPTOR="):
                    return entry.decode(errors="replace")
    except OSError:
        pass
    return str(pid)


def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])  # the parent
        except (OSError, ValueError, IndexError):
            return False
    return False


@dataclasses.dataclass
class SharedRun:
    paths: object  # local_runner.RunPaths
    metadata_url: str  # with the password
    beam_workers: int  # asked for
    workers: BeamWorkerWatch  # seen
    seconds: float


@pytest.fixture(scope="session")
def two_worker_run_on_mariadb(mariadb, tiny_data, tmp_path_factory):
    """tiny_run's pipeline (conftest.py) with its ML Metadata in MariaDB and
    Beam on BEAM_WORKERS worker processes."""
    from tfx_recsys import config
    from tfx_recsys.pipeline import beam_options, local_runner

    mariadb.create_database("pipeline")
    url = mariadb.tcp_url("pipeline")
    root = str(tmp_path_factory.mktemp("two_worker_run") / "root")
    started = time.monotonic()
    with BeamWorkerWatch() as workers:
        paths = local_runner.run(
            tiny_data, root, metadata=url,
            beam_pipeline_args=beam_options.beam_args("multi_processing", BEAM_WORKERS),
            training=config.TwoTowerConfig(epochs=5, batch_size=256),
            top_ks=(5, 10, 50), blessing=config.BlessingConfig(metric="recall@10"))
    return SharedRun(paths, url, BEAM_WORKERS, workers, time.monotonic() - started)
