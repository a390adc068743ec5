"""A throwaway local Ray cluster for tests (plain functions + a class).

    from ray_cluster import ray_unavailable, start_ray

    cluster = start_ray()  # `ray start --head`, 2 CPUs, answering `ray status`
    try:
        ray.init(address=cluster.address)  # "127.0.0.1:PORT"
        ...
        ray.shutdown()
    finally:
        cluster.stop()

(tests/conftest.py wraps this in the session fixture `ray_cluster`.)

A launcher that hands jobs to an existing Ray cluster (hydra-ray-launcher, `ray.init(address=)`)
is only tested honestly against one that outlives the driver, as a user's would, not the private
one a bare `ray.init()` starts and ends with the driver. Each `start_ray()` starts a head node
of its own, with its own temp dir under /tmp (Ray's unix sockets live there, and their paths must
fit in ~107 bytes) and its own ports, so it never meets a cluster the machine may already run.

It is stopped by killing its own processes only: `ray start` runs in a session of its own, which
every process it launches (GCS, raylet, agents, workers) inherits, so stop() kills that session.
`ray stop` is not used: it kills every Ray process of the machine, other people's clusters and a
parallel test session's included.

Ray 2.60 replaces --node-ip-address=127.0.0.1 with the machine's own address (it wants one other
nodes can reach: `services.resolve_ip_for_localhost`) and its GCS listens on all interfaces.
`address` still works, as GCS answers on 127.0.0.1 too; `ray.init` then talks to the node at
the machine's address.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

NUM_CPUS = 2
# Seconds for `ray start` plus the first good `ray status` (about 8 s on 2 cores: 4 s, then
# 1.2 s a `ray status`), and for the killed processes to be gone.
START_TIMEOUT = 60
STOP_TIMEOUT = 10
# No usage reports home from a test: --disable-usage-stats covers `ray start`, this the rest.
ENV = {"RAY_USAGE_STATS_ENABLED": "0"}


def ray_unavailable() -> str | None:
    """Why `start_ray()` cannot work here (Ray is not installed), else None."""
    if importlib.util.find_spec("ray") is None:
        return "Ray is not installed"
    return None


def _ray_command() -> str:
    """The `ray` console script of the Python running the tests (PATH may lack the venv)."""
    beside = Path(sys.executable).parent / "ray"
    return str(beside) if beside.exists() else shutil.which("ray") or "ray"


def _free_ports(count: int) -> list[int]:
    """`count` different TCP ports that were free a moment ago (held open until all are picked,
    so the OS cannot hand out one twice)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("", 0))  # all interfaces: Ray's GCS listens on all of them
        return [sock.getsockname()[1] for sock in sockets]


def _session_pids(sid: int) -> list[int]:
    """The processes in session `sid` (field 6 of /proc/PID/stat), zombies left out."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name (field 2) may hold spaces or parentheses: split after its ')'.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


class RayCluster:
    """A running head node: `address` ("127.0.0.1:PORT", for ray.init and `ray status`),
    `temp_dir` (its sessions and logs), `stop()`."""

    def __init__(self, temp_dir: Path, port: int):
        self.temp_dir = temp_dir
        self.address = f"127.0.0.1:{port}"
        self.sid: int | None = None  # the session of `ray start` and all it launched

    def status(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [_ray_command(), "status", "--address", self.address],
            env={**os.environ, **ENV},
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            check=False,
        )

    def ready(self) -> bool:
        """`ray status` answers and counts our CPUs. It exits 0 even while it only says "No
        cluster status" (the autoscaler's first report comes ~1 s after `ray start` returns)."""
        result = self.status()
        return result.returncode == 0 and f"/{NUM_CPUS}.0 CPU" in result.stdout

    def pids(self) -> list[int]:
        return _session_pids(self.sid) if self.sid is not None else []

    def logs(self, lines: int = 15) -> str:
        """The tails of the session's *.err logs and of raylet.out/gcs_server.out."""
        logs = self.temp_dir / "session_latest" / "logs"
        parts = []
        for log in sorted(logs.glob("*.err")) + [logs / "raylet.out", logs / "gcs_server.out"]:
            try:
                text = log.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            if text:
                parts.append(f"--- {log.name}:\n" + "\n".join(text))
        return "\n".join(parts) or f"(no logs under {logs})"

    def stop(self) -> None:
        """SIGKILL every process of the cluster (what `ray stop --force` does, to ours only),
        wait until they are gone, delete the temp dir. Safe to call twice.

        SIGKILL, not SIGTERM: gcs_server and the autoscaler monitor outlive a SIGTERM by 10 s
        and more, and nothing of a throwaway cluster needs saving. Drivers still connected
        (ray.init in the test process) are not in the session: they see their cluster vanish.
        """
        deadline = time.monotonic() + STOP_TIMEOUT
        while pids := self.pids():
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Ray test cluster: processes {pids} survive SIGKILL")
            time.sleep(0.1)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_ray() -> RayCluster:
    """`ray start --head` on free ports with NUM_CPUS CPUs; return once `ray status` counts them
    (about 6 s here). RuntimeError with Ray's output and log tails if it does not come up;
    whatever had started is killed then."""
    temp_dir = Path(tempfile.mkdtemp(prefix="eva-ray-", dir="/tmp"))
    # The GCS port, and every port Ray would otherwise take at a fixed default (10001, 8265,
    # 52365): a second cluster on the machine must not fail to start, or join ours.
    gcs, client, dashboard, agent = _free_ports(4)
    cluster = RayCluster(temp_dir, gcs)
    command = [_ray_command(), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}"]
    command += [f"--num-cpus={NUM_CPUS}", "--num-gpus=0", f"--temp-dir={temp_dir}"]
    command += ["--include-dashboard=false", "--disable-usage-stats"]
    command += [f"--ray-client-server-port={client}", f"--dashboard-port={dashboard}"]
    command += [f"--dashboard-agent-listen-port={agent}"]
    process = None
    try:
        # A session of its own: all of the cluster's processes share its id (see stop()).
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **ENV},
            text=True,
            start_new_session=True,
        )
        cluster.sid = process.pid
        output, _ = process.communicate(timeout=START_TIMEOUT)
        if process.returncode != 0:
            raise RuntimeError(
                f"Ray test cluster: `ray start` failed (exit {process.returncode}):\n"
                f"{output[-3000:]}\n{cluster.logs()}"
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not cluster.ready():
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Ray test cluster: `ray status --address {cluster.address}` did not count "
                    f"{NUM_CPUS} CPUs within {START_TIMEOUT} s:\n{cluster.status().stdout}\n"
                    f"{cluster.logs()}"
                )
            time.sleep(0.5)
    except BaseException:
        # `ray start` itself hung? It is in the session too, but is killed first here.
        if process is not None and process.poll() is None:
            process.kill()
        cluster.stop()
        raise
    return cluster
