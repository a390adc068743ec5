"""Database URLs and the Optuna storage: sqlite files, PostgreSQL drivers, passwords.

These rules hold for every database URL the sweeper is given, and eva applies the same
ones to its MLflow tracking URIs:
- a bare `name.db` is a sqlite file, and relative sqlite paths start at the launch folder,
  so every job of a sweep, whatever its working directory, reaches the same file;
- `postgresql://` names a driver that is installed: SQLAlchemy 2.1 reads the bare scheme as
  psycopg 3, which fails where only psycopg2 is installed;
- a password never reaches a log, a tag or an error message (redact).

An Optuna storage may also be a journal file (Optuna's JournalStorage, the FAQ's advice for
parallel processes on one machine or a shared file system): `journal:///rel.log` relative
to the launch folder, `journal:////abs/x.log` absolute (the sqlite rule of slashes), or a
bare path ending in `.log`.
"""

import importlib.util
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from evasweep.errors import SweepError

SQLITE = "sqlite:///"
JOURNAL = "journal:///"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")  # postgres:// is Heroku's spelling
# SQLAlchemy's module for each driver -> the scheme that names it, in SQLAlchemy's order.
POSTGRES_DRIVERS = {"psycopg": "postgresql+psycopg://", "psycopg2": "postgresql+psycopg2://"}
# The pip package that provides each database driver module SQLAlchemy may import.
DRIVER_PACKAGES = {
    "psycopg2": "psycopg2-binary",
    "psycopg": "psycopg[binary]",
    "asyncpg": "asyncpg",
    "pg8000": "pg8000",
    "MySQLdb": "mysqlclient",
    "pymysql": "PyMySQL",
    "mysql": "mysql-connector-python",
    "oracledb": "oracledb",
    "cx_Oracle": "cx_Oracle",
    "pyodbc": "pyodbc",
    "pymssql": "pymssql",
}


def database_url(url: str, launch_dir: Path) -> str:
    """A database URL with a sqlite path made absolute and a PostgreSQL driver named."""
    if "://" not in url and url.endswith(".db"):
        url = f"{SQLITE}{url}"
    url = with_driver(url)
    path = sqlite_path(url)
    if path is not None and not path.is_absolute():
        return f"{SQLITE}{(Path(launch_dir) / path).resolve()}"
    return url


def storage_url(url: str, launch_dir: Path) -> str:
    """An Optuna storage URL: database_url's rules, and journal files (absolute paths)."""
    if "://" not in url and url.endswith(".log"):
        url = f"{JOURNAL}{url}"
    path = journal_path(url)
    if path is None:
        return database_url(url, launch_dir)
    return f"{JOURNAL}{(Path(launch_dir) / path).resolve()}"


def journal_path(url: str) -> Path | None:
    return Path(url[len(JOURNAL) :]) if url.startswith(JOURNAL) else None


def postgres_driver() -> str:
    """The scheme of the first PostgreSQL driver installed (psycopg2 when none is: its
    error then names the package to install)."""
    for module, scheme in POSTGRES_DRIVERS.items():
        if importlib.util.find_spec(module) is not None:
            return scheme
    return POSTGRES_DRIVERS["psycopg2"]


def with_driver(url: str) -> str:
    """postgresql:// and postgres:// -> postgresql+<an installed driver>://; others unchanged."""
    for scheme in POSTGRES_SCHEMES:
        if url[: len(scheme)].lower() == scheme:
            return postgres_driver() + url[len(scheme) :]
    return url


def missing_driver(e: BaseException) -> str | None:
    """When e (or what caused it) is a database driver that is not installed: which module
    is missing and the pip package that provides it, in one line; else None."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ModuleNotFoundError) and e.name:
            top = e.name.split(".")[0]
            if top in DRIVER_PACKAGES:
                hint = f"pip install '{DRIVER_PACKAGES[top]}'"
            else:
                hint = "install the package that provides it"
            if top in (*POSTGRES_DRIVERS, "asyncpg", "pg8000"):
                for module, scheme in POSTGRES_DRIVERS.items():
                    if module != top and importlib.util.find_spec(module) is not None:
                        hint += f", or use {scheme}, which is installed"
                        break
            return f"the Python module {e.name!r} is not installed ({hint})"
        e = e.__cause__ or e.__context__
    return None


def sqlite_path(url: str) -> Path | None:
    return Path(url[len(SQLITE) :]) if url.startswith(SQLITE) else None


def redact(url: str) -> str:
    """The URL without a password, fit for logs, params and error messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}"
        netloc += f":{parts.port}" if parts.port else ""
        return urlunsplit(parts._replace(netloc=netloc))
    return url


@contextmanager
def file_lock(db: Path):
    """One process at a time on a sqlite file: creating its tables twice at once crashes."""
    import fcntl

    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None):
    """Optuna's RDB storage (sqlite waits for a busy file instead of failing at once), or
    its journal storage for journal:/// URLs (heartbeats: evasweep.heartbeat)."""
    import optuna

    path = journal_path(url)
    if path is not None:
        return open_journal(path)
    url = with_driver(url)
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith(SQLITE) else {}
    try:
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=kwargs,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
        )
    except Exception as e:  # driver missing, server down, bad URL: one line
        reason = missing_driver(e)  # Optuna's own message does not say which one
        if reason is None:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SweepError(f"hydra.sweeper.storage={redact(url)}: cannot open ({reason})") from None


def open_journal(path: Path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    except OSError as e:
        raise SweepError(
            f"hydra.sweeper.storage={JOURNAL}{path}: cannot open ({e.strerror or e})"
        ) from None
