"""One lane per GPU: a process pinned to its device that runs points one at a time.

A lane is started as ``python -m attnbench.runner.executors.lane FD`` with
``CUDA_VISIBLE_DEVICES=GPU-<uuid>`` in the environment it is *started* with, so the variable is
set before anything in it (or in the fork server it starts, or in the workers that server forks)
can initialise CUDA: each lane has its own fork server and its workers see one GPU only. The
parent sends the run's options once, then one (point, round) at a time over a socket pair, and
gets each point's record back; it hands a lane its next point only after the last one came
back, so two points are never timed on one GPU at once. The parent is the only writer of the
journal (or of a shard's journal): lanes never touch the run directory.

Frames on the socket are a 4-byte big-endian length and a pickle.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from attnbench.point import Point, Record, RunOptions, Status
from attnbench.runner.executors.gpus import Gpu, pin_env

_HEADER = struct.Struct(">I")
# How long a lane may take to exit after it was told to stop, before it is killed.
STOP_GRACE_S = 5.0
# A lane that dies this many times (not a point: the lane process itself) is not restarted.
MAX_LANE_RESTARTS = 3


def send_msg(sock: socket.socket, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_HEADER.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


class Closed(Exception):
    """The other end of the socket went away."""


def recv_msg(sock: socket.socket) -> Any:
    head = _recv_exact(sock, _HEADER.size)
    if head is None:
        raise Closed
    body = _recv_exact(sock, _HEADER.unpack(head)[0])
    if body is None:
        raise Closed
    return pickle.loads(body)


def lane_options(options: RunOptions, gpu: Gpu) -> RunOptions:
    """The run's options as seen inside ``gpu``'s lane: NVML telemetry follows the lane's own
    device (index 0 of the one it sees, found by its UUID)."""
    if not options.telemetry:
        return options
    return replace(options, telemetry={**options.telemetry, "index": 0, "uuid": gpu.uuid})


class Lane:
    """A lane process pinned to ``gpu`` (see the module doc). ``extra_env`` is added to its
    environment (tests use it to pass a plugin path)."""

    def __init__(self, gpu: Gpu, options: RunOptions, extra_env: Mapping[str, str] | None = None) -> None:
        self.gpu = gpu
        self.restarts = 0
        self._options = lane_options(options, gpu)
        self._extra_env = dict(extra_env or {})
        self.busy: tuple[Point, int] | None = None
        self._start()

    def _start(self) -> None:
        parent, child = socket.socketpair()
        env = {**os.environ, **self._extra_env, **pin_env(self.gpu)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "attnbench.runner.executors.lane", str(child.fileno())],
            env=env,
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
        )
        child.close()
        self.sock = parent
        send_msg(self.sock, self._options)

    def fileno(self) -> int:
        return self.sock.fileno()

    def submit(self, point: Point, rnd: int) -> None:
        self.busy = (point, rnd)
        send_msg(self.sock, (point, rnd))

    def receive(self) -> Record | None:
        """The record of the point in flight, or None if the lane died (its exit code is then in
        :attr:`exitcode`)."""
        try:
            rec = recv_msg(self.sock)
        except (Closed, OSError, EOFError, pickle.UnpicklingError):
            return None
        self.busy = None
        return rec if isinstance(rec, Record) else None

    @property
    def exitcode(self) -> int | None:
        try:
            return self.proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def restart(self) -> None:
        self.close()
        self.restarts += 1
        self.busy = None
        self._start()

    def close(self) -> None:
        """Stop the lane: an idle one is told to exit; a busy one gets SIGTERM, on which it kills
        its worker (nothing in flight is kept); one that lingers is killed."""
        if self.proc.poll() is None:
            try:
                if self.busy is None:
                    send_msg(self.sock, None)
                else:
                    self.proc.terminate()
            except OSError:
                pass
        self.sock.close()
        try:
            self.proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _lost_lane(lane: Lane, code: int | None) -> dict[str, Any]:
    how = f"exit code {code}" if code is None or code >= 0 else signal.Signals(-code).name
    return {
        "status": Status.CRASHED.value,
        "error": f"the lane process for GPU {lane.gpu.visible_id} died ({how}) while this point ran",
    }


def run_on_lanes(
    gpus: list[Gpu],
    todo: list[tuple[Point, int]],
    options: RunOptions,
    finish: Callable[[Point, int, Record, Gpu | None], None],
    on_start: Callable[[Point, int], None] | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> None:
    """Run ``todo`` over one lane per GPU, each lane taking the next pair as soon as it is free.
    ``finish(point, round, record, gpu)`` gets every result in the parent (``gpu`` None for a
    skipped point, which needs no lane). Stops every lane on the way out, also on Ctrl-C."""
    queue = deque(todo)
    lanes: list[Lane] = []
    try:
        for gpu in gpus:
            lanes.append(Lane(gpu, options, extra_env))
        while queue or any(lane.busy for lane in lanes):
            for lane in lanes:
                while lane.busy is None and queue:
                    point, rnd = queue.popleft()
                    if point.skip:
                        finish(point, rnd, Record({"status": Status.SKIPPED.value, "error": point.skip}), None)
                        continue
                    if on_start is not None:
                        on_start(point, rnd)
                    lane.submit(point, rnd)
            busy = [lane for lane in lanes if lane.busy]
            if not busy:
                continue
            ready, _, _ = select.select(busy, [], [])
            for lane in ready:
                assert lane.busy is not None
                point, rnd = lane.busy
                rec = lane.receive()
                if rec is not None:
                    finish(point, rnd, rec, lane.gpu)
                    continue
                finish(point, rnd, Record(_lost_lane(lane, lane.exitcode)), lane.gpu)
                if lane.restarts < MAX_LANE_RESTARTS:
                    lane.restart()
                    continue
                lanes.remove(lane)
                lane.close()
                if not lanes and queue:
                    raise RuntimeError("every GPU lane died repeatedly; the points left were not run")
    finally:
        for lane in lanes:
            lane.close()
