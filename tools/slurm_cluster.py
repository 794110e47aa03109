"""A throw-away single-node Slurm on this machine, for `nox -s slurm` (and by hand).

Debian's ``slurm-wlm`` and ``munge`` must be installed (the nox session installs them). Everything
lives in one temporary directory: a fresh munge key and socket, ``slurm.conf`` for this host
(its CPUs, its short hostname at 127.0.0.1, free ports, no cgroups: proctrack/linuxproc and
task/none, select/cons_tres, no accounting), the spool and state directories and the logs.
Nothing outside it is touched, so it can run beside a system munge or Slurm.

    python tools/slurm_cluster.py start DIR     # prints: export SLURM_CONF=DIR/slurm.conf
    python tools/slurm_cluster.py stop DIR

In Python: ``with SingleNodeSlurm() as cluster: ...`` sets ``SLURM_CONF`` for the block and
stops the daemons (and cancels every job) on the way out, also after an error.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "srun")

CONF = """\
ClusterName=attnbench-test
SlurmctldHost={host}(127.0.0.1)
SlurmUser={user}
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={dir}/munge.sock
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
KillWait=5
MinJobAge=3600
InactiveLimit=0
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def missing_tools() -> list[str]:
    return [t for t in DAEMONS if shutil.which(t) is None and not Path("/usr/sbin", t).exists()]


def _tool(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class SingleNodeSlurm:
    """munged + slurmctld + slurmd for this host (see the module doc)."""

    def __init__(self, root: Path | None = None, cpus: int | None = None) -> None:
        self.dir = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="attnbench-slurm-"))
        self.cpus = cpus or os.cpu_count() or 1
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.dir / "slurm.conf"
        self._old_conf: str | None = None

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def _run(self, *cmd: str) -> None:
        subprocess.run(list(cmd), check=True, env=self.env(), timeout=60)

    def start(self) -> None:
        missing = missing_tools()
        if missing:
            raise RuntimeError(f"not installed: {', '.join(missing)} (apt-get install slurm-wlm munge)")
        if os.geteuid() != 0:
            raise RuntimeError("slurmd must run as root to start jobs (run this as root)")
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)  # munged wants every directory above its socket searchable
        for sub in ("state", "spool"):
            (self.dir / sub).mkdir(exist_ok=True)
        key = self.dir / "munge.key"
        self._run(_tool("mungekey"), "--create", "--force", "--keyfile", str(key))
        key.chmod(0o600)
        self._run(
            _tool("munged"),
            "--force",
            f"--socket={self.dir}/munge.sock",
            f"--key-file={key}",
            f"--log-file={self.dir}/munged.log",
            f"--pid-file={self.dir}/munged.pid",
            f"--seed-file={self.dir}/munged.seed",
        )
        self.conf.write_text(
            CONF.format(
                host=self.host,
                user="root",
                dir=self.dir,
                ctld_port=free_port(),
                slurmd_port=free_port(),
                cpus=self.cpus,
            )
        )
        self._run(_tool("slurmctld"), "-f", str(self.conf))
        self._run(_tool("slurmd"), "-f", str(self.conf), "-N", self.host)
        self._wait_idle()
        self._old_conf = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = str(self.conf)

    def _wait_idle(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        out = ""
        while time.monotonic() < deadline:
            res = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, env=self.env(), timeout=30
            )
            out = (res.stdout + res.stderr).strip()
            if res.returncode == 0 and out.split() and out.split()[0].startswith("idle"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the Slurm node did not come up idle in {timeout_s:g} s (sinfo: {out!r}); see {self.dir}")

    def stop(self) -> None:
        """Cancel every job, stop the daemons (slurmd, slurmctld, munged), remove nothing but them."""
        if self.conf.exists():
            subprocess.run(["scancel", "--full", "--user", "root"], env=self.env(), capture_output=True, timeout=30)
        for name in ("slurmd", "slurmctld", "munged"):
            _stop_pidfile(self.dir / f"{name}.pid")
        if self._old_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = self._old_conf

    def __enter__(self) -> SingleNodeSlurm:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _stop_pidfile(path: Path, timeout_s: float = 15.0) -> None:
    """SIGTERM the daemon named by ``path``, then SIGKILL if it outlives ``timeout_s``."""
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print(__doc__.split("\n\n")[2], file=sys.stderr)
        return 2
    cluster = SingleNodeSlurm(Path(argv[1]))
    if argv[0] == "start":
        cluster.start()
        print(f"export SLURM_CONF={cluster.conf}")
    else:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
