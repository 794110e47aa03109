"""A GPU lane's process: ``python -m attnbench.runner.executors.lane FD`` (see
:mod:`attnbench.runner.executors.lanes`). Started with ``CUDA_VISIBLE_DEVICES`` already naming
its one GPU; runs each point it is sent in a fresh worker from its own fork server and sends the
record back. It never initialises CUDA itself and never writes the run directory."""

from __future__ import annotations

import signal
import socket
import sys
from types import FrameType

from attnbench.runner import procs
from attnbench.runner.executors.lanes import Closed, recv_msg, send_msg
from attnbench.runner.sweep import run_one


class _Stop(BaseException):
    """SIGTERM: leave at once (run_child kills the worker in flight on the way out)."""


def _on_term(_signum: int, _frame: FrameType | None) -> None:
    raise _Stop


def main(fd: int) -> int:
    signal.signal(signal.SIGTERM, _on_term)
    sock = socket.socket(fileno=fd)
    try:
        options = recv_msg(sock)
        last_round: int | None = None
        while True:
            msg = recv_msg(sock)
            if msg is None:
                return 0
            point, rnd = msg
            if last_round is not None and rnd != last_round:
                procs.restart_forkserver()  # a fresh memory layout per round, as in the serial sweep
            last_round = rnd
            send_msg(sock, run_one(point, options))
    except (Closed, BrokenPipeError, ConnectionResetError):
        return 0  # the parent went away: nothing to report to
    except (_Stop, KeyboardInterrupt):
        return 130
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
