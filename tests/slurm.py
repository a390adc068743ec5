"""A throwaway single-node SLURM cluster on 127.0.0.1 for tests (plain functions + a class).

    from slurm import slurm_unavailable, start_slurm

    cluster = start_slurm(tmp_dir)  # munged + slurmctld + slurmd, the node idle
    try:
        subprocess.run(["sbatch", "--wrap", "hostname"], env={**os.environ, **cluster.env})
        ...
    finally:
        cluster.stop()

(tests/conftest.py wraps this in the session fixture `slurm_cluster`, which also puts
`cluster.env` (SLURM_CONF, PATH) in os.environ, so that sbatch, squeue and submitit find it.)

Launchers that hand jobs to SLURM (submitit, hydra-submitit-launcher) can only be tested honestly
against a real slurmctld: they shell out to sbatch/squeue/scancel/sacct and read what those print.
So each call of `start_slurm()` runs a cluster of its own: a private munged (own key, own socket),
a slurmctld and a slurmd on free ports of 127.0.0.1, with every file (config, state, spool, logs,
pid files) in one temp dir. It needs no /etc/slurm, /etc/munge or running service, and never
talks to a cluster the machine may already belong to: clients reach it only through
SLURM_CONF=<its slurm.conf> (`SlurmCluster.env`).

slurmd must run as root to start jobs as their user, so the cluster (like CI) needs root.

There is no accounting database (that takes slurmdbd and MySQL), so the real `sacct` only says
"Slurm accounting storage is disabled". submitit asks sacct for the state of its jobs; without an
answer it reads them as UNKNOWN, which it takes for "not finished": a job that died without
writing its result (killed, out of memory, node lost) then keeps `job.result()` waiting forever.
So the cluster puts a small `sacct` of its own first on the clients' PATH (`SlurmCluster.env`):
it answers the `sacct -o JobID,State,NodeList --parsable2 -j ID` submitit runs from `squeue`,
which holds jobs for MinJobAge seconds after they end. With it, result() raises submitit's
UncompletedJobError ("... has not produced any output (state: FAILED)") as on a real cluster.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

# The daemons and the clients the tests (and submitit) run. Debian puts the daemons in /usr/sbin,
# which a non-root PATH often lacks.
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "sinfo")
SBIN = ("/usr/sbin", "/sbin")
# What the NodeName line takes from `slurmd -C`.
NODE_FIELDS = (
    "NodeName",
    "CPUs",
    "Boards",
    "SocketsPerBoard",
    "CoresPerSocket",
    "ThreadsPerCore",
    "RealMemory",
)
# Seconds for the node to come up idle (about 1.3 s here), and for a daemon to die on SIGTERM.
START_TIMEOUT = 30
STOP_GRACE = 5
# Seconds a client command may take before it is given up on (they answer in milliseconds).
CLIENT_TIMEOUT = 30
# What slurm.conf says, besides the paths and ports of this cluster. Single node, no cgroups, no
# accounting: the least a machine (or a container) must offer. cons_tres + CR_CPU schedules single
# CPUs, so a 2-core machine runs two one-CPU jobs at once (the default would give each job the
# whole node). ReturnToService=2: a node that was down comes back as soon as slurmd registers.
SETTINGS = {
    "ClusterName": "evatest",
    "AuthType": "auth/munge",
    "CredType": "cred/munge",
    "SlurmUser": "root",
    "SlurmdUser": "root",
    "ProctrackType": "proctrack/linuxproc",
    "TaskPlugin": "task/none",
    "AccountingStorageType": "accounting_storage/none",
    "JobAcctGatherType": "jobacct_gather/none",
    "JobCompType": "jobcomp/none",
    "SelectType": "select/cons_tres",
    "SelectTypeParameters": "CR_CPU",
    "MpiDefault": "none",
    "ReturnToService": "2",
    "SchedulerType": "sched/builtin",  # first come, first served: nothing to plan here
    "MailProg": "/bin/true",  # nobody to mail; Debian's default mail program may be missing
    "KillWait": "2",  # seconds from SIGTERM to SIGKILL for a cancelled job: stop() is quicker
    # Seconds an ended job stays in squeue (and so in our sacct): an hour, not 5 minutes, so a
    # long test session can still read the state of its first jobs.
    "MinJobAge": "3600",
    "SlurmctldDebug": "info",
    "SlurmdDebug": "info",
}


def _which(name: str, path: str | None = None) -> str | None:
    """`name` on `path` (default: PATH), else in /usr/sbin or /sbin."""
    return shutil.which(name, path=path) or shutil.which(name, path=os.pathsep.join(SBIN))


def slurm_unavailable() -> str | None:
    """Why `start_slurm()` cannot work on this machine (programs missing, not root), else None."""
    missing = [name for name in DAEMONS + CLIENTS if _which(name) is None]
    if missing:
        return f"SLURM/MUNGE is not installed: no {', '.join(missing)} (Debian: slurm-wlm, munge)"
    if os.geteuid() != 0:
        return "a SLURM node must run slurmd as root to start jobs, and these tests are not root"
    return None


def _free_ports(count: int) -> list[int]:
    """`count` different TCP ports of 127.0.0.1 that were free a moment ago.

    The sockets stay open until all are picked, so the OS cannot hand out one port twice.
    """
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _log_tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"(none: {error})"


def node_line() -> str:
    """This host's NodeName line: the hardware slurmd sees, with a little less memory.

    `slurmd -C` prints `NodeName=vm CPUs=2 Boards=1 ... RealMemory=24105 UpTime=...`; a node
    that reports less memory (or fewer CPUs) than slurm.conf gives it is drained, so leave a
    margin. Only the topology is kept: a Gres= there would need GresTypes and a gres.conf.
    """
    result = subprocess.run(
        [_which("slurmd") or "slurmd", "-C"],
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
        check=True,
    )
    found = dict(re.findall(r"(\w+)=(\S+)", result.stdout.splitlines()[0]))
    fields = {key: found[key] for key in NODE_FIELDS if key in found}
    fields["RealMemory"] = str(int(int(fields["RealMemory"]) * 0.9))
    fields["NodeAddr"] = "127.0.0.1"
    fields["State"] = "UNKNOWN"
    return " ".join(f"{key}={value}" for key, value in fields.items())


def write_conf(root: Path, munge_socket: Path, ctld_port: int, slurmd_port: int) -> Path:
    """root/slurm.conf for a cluster whose every file lives in `root`."""
    node = node_line()
    host = node.split()[0].removeprefix("NodeName=")
    settings = {
        "SlurmctldHost": f"{host}(127.0.0.1)",
        "SlurmctldPort": str(ctld_port),
        "SlurmdPort": str(slurmd_port),
        "AuthInfo": f"socket={munge_socket}",
        **SETTINGS,
        "StateSaveLocation": str(root / "ctld-state"),
        "SlurmdSpoolDir": str(root / "slurmd-spool"),
        "SlurmctldPidFile": str(root / "slurmctld.pid"),
        "SlurmdPidFile": str(root / "slurmd.pid"),
        "SlurmctldLogFile": str(root / "slurmctld.log"),
        "SlurmdLogFile": str(root / "slurmd.log"),
    }
    lines = [f"{key}={value}" for key, value in settings.items()]
    lines += [node, f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP"]
    conf = root / "slurm.conf"
    conf.write_text("# throwaway test cluster (tests/slurm.py)\n" + "\n".join(lines) + "\n")
    return conf


# The `sacct` clients find first on PATH (see the module docstring): the fields it knows, as
# squeue --format codes. It always prints --parsable2 output (what submitit asks for).
SACCT = """#!{python}
\"\"\"sacct for a cluster without accounting (tests/slurm.py): squeue's view of the jobs.\"\"\"
import argparse, subprocess, sys

FIELDS = {{"jobid": "%i", "jobname": "%j", "state": "%T", "nodelist": "%N", "partition": "%P",
          "user": "%u", "elapsed": "%M"}}
parser = argparse.ArgumentParser(prog="sacct")
parser.add_argument("-o", "--format", default="JobID,JobName,State")
parser.add_argument("-j", "--jobs", action="append", default=[])
parser.add_argument("-n", "--noheader", action="store_true")
parser.add_argument("-P", "--parsable2", action="store_true")
args = parser.parse_args()
names = args.format.split(",")
unknown = [name for name in names if name.lower() not in FIELDS]
if unknown:
    sys.exit(f"sacct (tests/slurm.py): unknown fields {{unknown}}; it knows {{list(FIELDS)}}")
command = ["{squeue}", "--noheader", "--states=all"]
command.append("--format=" + "|".join(FIELDS[name.lower()] for name in names))
if args.jobs:
    command.append("--jobs=" + ",".join(args.jobs))
result = subprocess.run(command, stdout=subprocess.PIPE, text=True)
if result.returncode == 0 and not args.noheader:
    print("|".join(names))
print(result.stdout, end="")
sys.exit(result.returncode)
"""


def write_sacct(bin_dir: Path) -> None:
    bin_dir.mkdir()
    sacct = bin_dir / "sacct"
    sacct.write_text(SACCT.format(python=sys.executable, squeue=_which("squeue")))
    sacct.chmod(0o755)


class SlurmCluster:
    """A running cluster: `conf` (its slurm.conf), `env` (what clients need in their environment),
    `stop()`. `run`, `sbatch` and `squeue` call its clients."""

    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "slurm.conf"
        # PATH: our sacct first (see SACCT). Clients and the jobs themselves get both.
        path = os.pathsep.join([str(root / "bin"), os.environ.get("PATH", os.defpath)])
        self.env = {"SLURM_CONF": str(self.conf), "PATH": path}
        self.logs = [root / name for name in ("slurmctld.log", "slurmd.log")]
        # (name, process), in start order; stop() ends them in reverse.
        self.daemons: list[tuple[str, subprocess.Popen]] = []

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A client command against this cluster (with `env`, whatever os.environ holds)."""
        result = subprocess.run(
            [_which(command[0], self.env["PATH"]) or command[0], *command[1:]],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=CLIENT_TIMEOUT,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )
        return result

    def sbatch(self, *args: str) -> str:
        """Submit a batch job; its id."""
        return self.run("sbatch", "--parsable", *args).stdout.strip().split(";")[0]

    def squeue(self, state: str | None = None) -> list[str]:
        """Ids of the jobs the controller holds (pending, running, completing), or only those in
        `state` (RUNNING, PENDING, ... or `all`: also those that ended, for MinJobAge s)."""
        states = ["--states", state] if state else []
        return self.run("squeue", "--noheader", "--format=%i", *states).stdout.split()

    def states(self, jobs: list[str]) -> dict[str, str]:
        """{job id: state} (PENDING, RUNNING, COMPLETED, FAILED, ...), jobs that ended included."""
        result = self.run(
            "squeue", "--noheader", "--states=all", "--format=%i %T", "--jobs=" + ",".join(jobs)
        )
        return dict(line.split() for line in result.stdout.splitlines())

    def diagnosis(self) -> str:
        """The daemons' state and the tails of their logs, for error messages."""
        parts = [
            f"{name}: {'running' if p.poll() is None else f'exit {p.returncode}'}"
            for name, p in self.daemons
        ]
        for log in self.logs + sorted(self.root.glob("*.out")):
            parts.append(f"--- {log.name}:\n{_log_tail(log)}")
        return "\n".join(parts)

    def _jobs_left(self) -> list[str]:
        """squeue(), or [] if the controller does not answer (then nothing can be cancelled)."""
        result = self.run("squeue", "--noheader", "--format=%i", check=False)
        return result.stdout.split() if result.returncode == 0 else []

    def stop(self) -> None:
        """Cancel the jobs left, end the daemons (SIGTERM, SIGKILL after a few seconds), delete
        the temp dir. Safe to call twice, or on a cluster that never came up."""
        if any(name == "slurmctld" and p.poll() is None for name, p in self.daemons):
            # Cancel first: slurmd kills the jobs' processes, which would outlive it otherwise.
            jobs = self._jobs_left()
            if jobs:
                self.run("scancel", *jobs, check=False)
                deadline = time.monotonic() + STOP_GRACE + 2  # KillWait, and a bit
                while self._jobs_left() and time.monotonic() < deadline:
                    time.sleep(0.2)
        for _, process in reversed(self.daemons):
            _end(process)
        self.daemons.clear()
        shutil.rmtree(self.root, ignore_errors=True)


def _end(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it is still there after STOP_GRACE seconds."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_GRACE)


def _start(cluster: SlurmCluster, name: str, command: list[str]) -> subprocess.Popen:
    """Start a daemon in the foreground of a child process, so its PID is ours to stop.

    stdout/stderr go to root/<name>.out: what it says before it opens its log file (a bad
    config, say). A session of its own: a Ctrl-C meant for pytest must not kill it before
    stop() has cancelled the jobs.
    """
    with open(cluster.root / f"{name}.out", "wb") as out:
        process = subprocess.Popen(
            [_which(command[0]) or command[0], *command[1:]],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cluster.root,
            env={**os.environ, **cluster.env},
            start_new_session=True,
        )
    cluster.daemons.append((name, process))
    return process


def _wait_for(cluster: SlurmCluster, what: str, ready, deadline: float) -> None:
    """Poll `ready()` until it is true; RuntimeError with the logs if a daemon dies or time's up."""
    while not ready():
        dead = [name for name, p in cluster.daemons if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            why = f"{', '.join(dead)} exited" if dead else f"not within {START_TIMEOUT} s"
            raise RuntimeError(f"SLURM test cluster: {what}: {why}\n{cluster.diagnosis()}")
        time.sleep(0.2)


def _node_idle(cluster: SlurmCluster) -> bool:
    result = cluster.run("sinfo", "--noheader", "--format=%t", check=False)
    return result.returncode == 0 and result.stdout.split() == ["idle"]


def start_slurm(tmp_dir: Path | str | None = None) -> SlurmCluster:
    """Start munged, slurmctld and slurmd; return once the node is idle (about 2 s).

    `tmp_dir` is where the state dir is made; /tmp by default. Keep it short: munged's unix socket
    lives there, and its path must fit in ~107 bytes (pytest's tmp_path often doesn't).
    RuntimeError (with the tails of the daemons' logs) if the cluster does not come up; whatever
    had started is stopped then.
    """
    root = Path(tempfile.mkdtemp(prefix="eva-slurm-", dir=tmp_dir or "/tmp"))
    # mkdtemp's 0700 would hide munged's socket from all but root (munged warns about it).
    root.chmod(0o755)
    cluster = SlurmCluster(root)
    try:
        # A random key only this cluster's munged knows; munged refuses a key others may read.
        key = root / "munge.key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "wb") as file:
            file.write(os.urandom(1024))
        munge_socket = root / "munge.socket"
        ctld_port, slurmd_port = _free_ports(2)
        write_conf(root, munge_socket, ctld_port, slurmd_port)
        write_sacct(root / "bin")
        for sub in ("ctld-state", "slurmd-spool"):
            (root / sub).mkdir()

        deadline = time.monotonic() + START_TIMEOUT
        # --force: run even where munged finds the socket's or the key's directories too open
        # or too closed (it checks them as for /run/munge; a 0700 dir fails, say). In the
        # foreground it logs to stderr (root/munged.out), not to a --log-file.
        munged = ["munged", "--foreground", "--force", f"--key-file={key}"]
        munged += [f"--socket={munge_socket}", f"--pid-file={root / 'munged.pid'}"]
        munged += [f"--seed-file={root / 'munged.seed'}"]
        _start(cluster, "munged", munged)
        _wait_for(cluster, "munged's socket", munge_socket.exists, deadline)
        conf = str(cluster.conf)
        _start(cluster, "slurmctld", ["slurmctld", "-D", "-f", conf])  # -D: foreground
        _start(cluster, "slurmd", ["slurmd", "-D", "-f", conf])
        _wait_for(cluster, "the node to be idle", lambda: _node_idle(cluster), deadline)
    except BaseException:
        cluster.stop()
        raise
    return cluster
