"""A throwaway PostgreSQL server for tests (no fixtures here: plain functions + a context manager).

    from postgres import find_pg_bin, throwaway_cluster

    @pytest.mark.skipif(find_pg_bin() is None, reason="PostgreSQL is not installed")
    def test_something():
        with throwaway_cluster() as url:  # postgresql+psycopg2://USER@127.0.0.1:PORT/postgres
            storage = optuna.storages.RDBStorage(url)
            ...

Each `throwaway_cluster()` runs its own `initdb` in a fresh temp dir and its own server on a free
port of 127.0.0.1, so it needs no running PostgreSQL service, no password and no network, and it
never touches a cluster the machine may already run (Debian's `main` on 5432, say).

PostgreSQL refuses to run as root, and CI runs the tests as root: then `initdb`/`pg_ctl` run as
the `postgres` system user (created by Debian's package) through `runuser` (or `su`), in a temp dir
under /tmp that this user owns, and the database superuser in the URL is `postgres`. Otherwise
they run as the current user, who is also the database superuser.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Where Debian/Ubuntu install the server programs: /usr/lib/postgresql/<major>/bin.
DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")
# The system user PostgreSQL runs as when we are root.
PG_SYSTEM_USER = "postgres"
# Settings for a server nobody cares about after the test: local only, and no waiting on the disk.
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}
# Seconds before a hung initdb/pg_ctl is given up on (initdb + start normally take 1-2 s).
COMMAND_TIMEOUT = 120


def _has_server_programs(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in ("initdb", "pg_ctl"))


def _major_version(directory: Path) -> tuple[int, ...]:
    """/usr/lib/postgresql/15/bin -> (15,); 9.6 -> (9, 6); anything else sorts first."""
    name = directory.parent.name
    if not re.fullmatch(r"\d+(\.\d+)*", name):
        return ()
    return tuple(int(part) for part in name.split("."))


def find_pg_bin() -> Path | None:
    """The directory holding `initdb` and `pg_ctl`, or None if PostgreSQL is not installed.

    `initdb` on PATH wins (whoever put it there chose that install: Homebrew, conda, a custom
    build); else the highest major version under Debian's /usr/lib/postgresql/<major>/bin
    (Debian puts only wrappers such as psql on PATH, not initdb/pg_ctl).
    """
    on_path = shutil.which("initdb")
    if on_path is not None:
        directory = Path(on_path).resolve().parent
        if _has_server_programs(directory):
            return directory
    candidates = [d for d in DEBIAN_PG_ROOT.glob("*/bin") if _has_server_programs(d)]
    return max(candidates, key=_major_version) if candidates else None


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago (the OS picks it for a port-0 bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    """`command`, run as the user PostgreSQL will accept: the `postgres` system user when root."""
    if os.geteuid() != 0:
        return command
    if shutil.which("runuser"):  # util-linux: no password, no PAM session noise
        return ["runuser", "-u", PG_SYSTEM_USER, "--", *command]
    # su needs one shell string; -s because the user's login shell may be nologin/false.
    return ["su", PG_SYSTEM_USER, "-s", "/bin/sh", "-c", shlex.join(command)]


def _run(command: list[str], what: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `command` as the server user; RuntimeError with its output if it fails."""
    # cwd: as `postgres` we may not even be allowed to look at root's current directory.
    result = subprocess.run(
        _as_server_user(command),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{what} failed (exit {result.returncode}): {shlex.join(command)}\n"
            f"{result.stdout}{result.stderr}"
        )
    return result


def _log_tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"(no server log: {error})"


@contextmanager
def throwaway_cluster(pg_bin: Path | None = None) -> Iterator[str]:
    """Start a brand-new PostgreSQL server, yield its SQLAlchemy URL, then stop and delete it.

    The URL, `postgresql+psycopg2://USER@127.0.0.1:PORT/postgres`, needs no password (trust
    auth) and suits `optuna.storages.RDBStorage` and `sqlalchemy.create_engine`. On exit (also
    when the body raised) the server is killed with `pg_ctl -m immediate stop` (no checkpoint:
    its data is thrown away anyway) and its temp dir is deleted; connections still open then
    break, so dispose of engines before leaving the block if they will be used again.

    `pg_bin` defaults to `find_pg_bin()`; RuntimeError if there is none, if we are root and
    there is no `postgres` system user, or if the server won't start (with its log's tail).
    """
    pg_bin = pg_bin or find_pg_bin()
    if pg_bin is None:
        raise RuntimeError("PostgreSQL is not installed: no initdb/pg_ctl found")
    initdb, pg_ctl = str(pg_bin / "initdb"), str(pg_bin / "pg_ctl")

    if os.geteuid() == 0:
        try:
            server_user = pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            raise RuntimeError(
                f"running as root, and PostgreSQL refuses to: it would run as the "
                f"'{PG_SYSTEM_USER}' system user, but there is none (install PostgreSQL's package)"
            ) from None
    else:
        server_user = pwd.getpwuid(os.geteuid())
    db_user = server_user.pw_name

    # Under /tmp, not pytest's tmp_path: the server user must own it (pytest's are root's, 0700),
    # and the unix socket's path must fit in ~107 bytes.
    root = Path(tempfile.mkdtemp(prefix="eva-pg-throwaway-", dir="/tmp"))
    data, log = root / "data", root / "server.log"
    started = False
    try:
        if os.geteuid() == 0:
            os.chown(root, server_user.pw_uid, server_user.pw_gid)

        # --no-locale: don't depend on which locales the machine has; -N: no fsync while creating.
        _run(
            [initdb, "-D", str(data), "--auth=trust", "-U", db_user, "-E", "UTF8"]
            + ["--no-locale", "-N"],
            "initdb",
            cwd=root,
        )
        # Settings go in the config file (the port goes on the command line: it may be retried).
        # Appending as root keeps the file's owner; the unix socket lives in our temp dir.
        settings = {**SERVER_SETTINGS, "unix_socket_directories": f"'{root}'"}
        with open(data / "postgresql.conf", "a") as conf:
            conf.write("\n# throwaway test server (tests/postgres.py)\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

        # free_port() can race with another process taking the port before the server binds it:
        # then try another one, a few times.
        for attempt in range(3):
            port = free_port()
            try:
                started = True  # from here on, make sure to stop whatever may have started
                _run(
                    [pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "60"]
                    + ["-o", f"-p {port}", "start"],
                    "pg_ctl start",
                    cwd=root,
                )
                break
            except RuntimeError as error:
                if attempt < 2 and "Address already in use" in _log_tail(log, 5):
                    continue
                tail = _log_tail(log)  # read now: the finally below deletes the log
                raise RuntimeError(f"{error}\nlast lines of the server log:\n{tail}") from None

        yield f"postgresql+psycopg2://{db_user}@127.0.0.1:{port}/postgres"
    finally:
        if started:
            # check=False: if it never came up or died already, there is nothing to stop.
            subprocess.run(
                _as_server_user([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]),
                cwd=root,
                capture_output=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        shutil.rmtree(root, ignore_errors=True)
