"""A throwaway single-node SLURM cluster: private munged, slurmctld and slurmd, all as root.

Used by tests/test_slurm.py; also runs by hand (as root), to try a profile on this machine:

    python tests/slurm/cluster.py /tmp/nemon-slurm    # prints the `export ...` for a shell

The configuration (tests/slurm/slurm.conf.in) describes one node with this machine's cores and
memory and no accounting database. Every file the daemons write (key, sockets, state, spool,
logs, pid files) lives in the given folder; the client commands (sinfo, sbatch, squeue) and
snakemake find the cluster through the variables of ``Cluster.variables`` (SLURM_CONF, PATH).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

TEMPLATE = Path(__file__).with_name("slurm.conf.in")
NODE = "nemon-node"
PARTITION = "debug"
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sinfo", "squeue", "sbatch", "srun", "scontrol", "scancel")
APT_PACKAGES = "slurmctld slurmd slurm-client munge"


class ClusterError(RuntimeError):
    """The cluster did not come up; the message carries the daemons' log tails."""


def which(program: str) -> str | None:
    """Full path of ``program`` on PATH or in the sbin folders (where Debian puts the daemons)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return shutil.which(program, path=path)


def missing_requirements() -> str | None:
    """Why a cluster cannot be started on this machine, or ``None`` if it can."""
    if not sys.platform.startswith("linux"):
        return f"the SLURM test cluster needs Linux, this is {sys.platform}"
    missing = [b for b in (*DAEMONS, *CLIENTS) if which(b) is None]
    if missing:
        return (
            f"SLURM programs not found: {', '.join(missing)} "
            f"(Debian/Ubuntu: apt-get install {APT_PACKAGES})"
        )
    if os.geteuid() != 0:
        return f"the SLURM test cluster runs its daemons as root; this is uid {os.geteuid()}"
    return None


def node_resources() -> tuple[int, int]:
    """(CPUs, memory in MB) of this machine: ``nproc`` and MemTotal of /proc/meminfo."""
    cpus = len(os.sched_getaffinity(0))  # what nproc prints: the cores this process may use
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return cpus, int(line.split()[1]) // 1024  # kB -> MB (SLURM's MB are MiB)
    raise ClusterError("no MemTotal line in /proc/meminfo")


def gpu_devices() -> list[str]:
    """The NVIDIA GPUs of this machine as device files (``/dev/nvidia0``, ...), in order."""
    found = [p for p in Path("/dev").glob("nvidia*") if p.name[len("nvidia") :].isdigit()]
    return [str(p) for p in sorted(found, key=lambda p: int(p.name[len("nvidia") :]))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(folder: Path) -> Path:
    """Write key, folders and slurm.conf for a cluster in ``folder``; return the slurm.conf."""
    folder = folder.resolve()
    for sub in ("munge", "state", "spool", "log"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    sock = folder / "munge" / "munge.socket"
    if len(os.fsencode(sock)) > 100:  # a Unix socket's path has room for 107 bytes
        raise ClusterError(f"folder {folder} is too long for munged's socket: use a shorter one")
    key = folder / "munge" / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o600)  # munged refuses a key that others can read
    cpus, memory_mb = node_resources()
    gpus = gpu_devices()
    # one line per GPU, so that SLURM hands out single devices (CUDA_VISIBLE_DEVICES per job)
    (folder / "gres.conf").write_text("".join(f"Name=gpu File={d}\n" for d in gpus))
    # Jobs are tracked by process (proctrack/linuxproc), not by cgroups, but slurmd 22.05 loads a
    # cgroup plugin all the same; cgroup/v2 then wants systemd's dbus, which containers and bare
    # VMs lack ("cannot connect to dbus system daemon"), while cgroup/v1 loads without it.
    (folder / "cgroup.conf").write_text("CgroupPlugin=cgroup/v1\n")
    conf = folder / "slurm.conf"
    # snakemake-executor-plugin-slurm-jobstep (0.6.1) removes every SLURM_* variable but the
    # job's identity before its `srun` inside the job, SLURM_CONF too; srun then finds no
    # configuration ("fetch_config: DNS SRV lookup failed"). Clusters with /etc/slurm/slurm.conf
    # never notice; this one lives in a temporary folder, so its PATH leads to an srun that
    # puts SLURM_CONF back.
    shim = folder / "bin" / "srun"
    shim.parent.mkdir(exist_ok=True)
    shim.write_text(f'#!/bin/sh\nSLURM_CONF={conf} exec {which("srun")} "$@"\n')
    shim.chmod(0o755)
    conf.write_text(
        Template(TEMPLATE.read_text()).substitute(
            folder=folder,
            host=socket.gethostname().split(".")[0],
            ctld_port=_free_port(),  # another cluster may hold the default 6817/6818
            slurmd_port=_free_port(),
            node=NODE,
            partition=PARTITION,
            cpus=cpus,
            memory_mb=memory_mb,
            gres_types="GresTypes=gpu" if gpus else "",
            node_gres=f" Gres=gpu:{len(gpus)}" if gpus else "",
        )
    )
    return conf


@dataclass
class Cluster:
    """A running cluster; ``stop()`` ends its jobs and daemons (and is safe to call twice)."""

    folder: Path
    conf: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    startup_seconds: float = float("nan")

    @property
    def gpus(self) -> int:
        """How many GPUs the node offers (the lines of gres.conf)."""
        return len((self.folder / "gres.conf").read_text().splitlines())

    @property
    def variables(self) -> dict[str, str]:
        """The environment variables a client of this cluster needs.

        SLURM_CONF, and PATH with the cluster's bin folder (the srun of ``write_config``) first.
        """
        path = os.pathsep.join([str(self.folder / "bin"), os.environ.get("PATH", "")])
        return {"SLURM_CONF": str(self.conf), "PATH": path}

    @property
    def env(self) -> dict[str, str]:
        """This process's environment with ``variables`` set."""
        return {**os.environ, **self.variables}

    def run(self, *cmd: str, timeout: float = 30) -> str:
        """Run a client command (``sinfo``, ``squeue``, ...) on this cluster; its stdout."""
        r = subprocess.run(
            [which(cmd[0]) or cmd[0], *cmd[1:]],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if r.returncode != 0:
            raise ClusterError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
        return r.stdout

    def node_state(self) -> str:
        """The node's state as sinfo prints it, e.g. ``idle``, ``mixed``, ``down*``."""
        return self.run("sinfo", "--noheader", "--Node", "--format=%T", timeout=10).strip()

    def logs(self, lines: int = 30) -> str:
        """The last ``lines`` lines of every daemon log, for error messages."""
        out = []
        for path in sorted((self.folder / "log").glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name} ---\n" + "\n".join(tail))
        return "\n".join(out)

    def _start(self, name: str, *cmd: str) -> None:
        log = open(self.folder / "log" / f"{name}.out", "w")  # noqa: SIM115 (closed by the child)
        self.processes[name] = subprocess.Popen(
            [which(cmd[0]), *cmd[1:]],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def _check_alive(self) -> None:
        for name, p in self.processes.items():
            if p.poll() is not None:
                out = (self.folder / "log" / f"{name}.out").read_text(errors="replace")
                raise ClusterError(
                    f"{name} exited with status {p.returncode}:\n{out[-3000:]}\n{self.logs()}"
                )

    def _wait(self, what: str, ready: Callable[[], object], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            try:
                if ready():
                    return
            except (ClusterError, subprocess.TimeoutExpired):
                pass
            if time.monotonic() > deadline:
                raise ClusterError(f"{what} not ready after {timeout:.0f} s\n{self.logs()}")
            time.sleep(0.5)

    def start(self, timeout: float = 60) -> Cluster:
        """Start munged, slurmctld and slurmd; return once sinfo shows the node idle.

        On any error the daemons started so far are stopped again before it propagates.
        """
        t0 = time.monotonic()
        try:
            self._start_daemons(timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _start_daemons(self, timeout: float) -> None:
        munge = self.folder / "munge"
        sock = munge / "munge.socket"
        self._start(
            "munged",
            "munged",
            "--foreground",
            "--force",  # as root, and with the socket under a private temporary folder
            f"--key-file={munge / 'munge.key'}",
            f"--socket={sock}",
            f"--pid-file={munge / 'munged.pid'}",
            f"--seed-file={munge / 'munged.seed'}",
        )
        self._wait("munged", sock.exists, timeout)
        # -D: foreground (this object owns the process); -c: a fresh state, no old jobs;
        # -i (slurmctld): ignore a missing state file
        self._start("slurmctld", "slurmctld", "-D", "-c", "-i", "-f", str(self.conf))
        self._wait("slurmctld", lambda: self.run("scontrol", "ping", timeout=5), timeout)
        self._start("slurmd", "slurmd", "-D", "-c", "-N", NODE, "-f", str(self.conf))
        self._wait(f"node {NODE}", lambda: self.node_state() == "idle", timeout)

    def stop(self, timeout: float = 30) -> None:
        """Cancel every job of the cluster, then stop slurmd, slurmctld and munged."""
        if self.processes.get("slurmctld") and self.processes["slurmctld"].poll() is None:
            try:  # jobs run under slurmstepd, which outlives slurmd: end them first
                self.run("scancel", f"--partition={PARTITION}", timeout=10)
                deadline = time.monotonic() + timeout
                while self.run("squeue", "--noheader", "--states=RUNNING,COMPLETING", timeout=10):
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
            except (ClusterError, subprocess.TimeoutExpired):
                pass
        for name in reversed(DAEMONS):
            p = self.processes.pop(name, None)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_cluster(folder: Path, timeout: float = 60) -> Cluster:
    """Write the configuration into ``folder`` and start the cluster (stopped again on error)."""
    return Cluster(folder.resolve(), write_config(folder)).start(timeout)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    why = missing_requirements()
    if why:
        print(f"cannot start a SLURM test cluster: {why}", file=sys.stderr)
        return 1
    with start_cluster(Path(argv[0])) as cluster:
        print(
            f"cluster up in {cluster.startup_seconds:.1f} s with {cluster.gpus} GPU(s); "
            "in another shell:"
        )
        for name, value in cluster.variables.items():
            print(f"  export {name}={value}")
        print("Ctrl-C stops it.")
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
