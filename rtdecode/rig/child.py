"""A rig process: a child started and stopped with deadlines, reporting back through plain files.

Every piece of the loopback rig that runs beside the service (the LSL pusher, the session
player, the frame subscriber) is a `ChildProcess`: a `multiprocessing` spawn child running one
module-level function `target(link, **kwargs)`. The child tells the parent through its
`ChildLink`: `mark_ready()` (an Event), `put(**values)` (merged into a JSON state file, written
atomically) and `save(name, array)` (.npy, read back with allow_pickle=False); the parent asks
it to stop with the link's `stop` Event. Nothing the child sends is unpickled, and a child that
fails records `error` in its state (its traceback goes to stderr).

Deadlines: `start()` waits for the child to be ready (or to die), `stop()` sets the stop Event,
waits, then terminates, then kills. Also here: deadline waits, unique names, free ports.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import shutil
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


def unique(prefix: str = "rtd") -> str:
    """A name no other run uses (LSL stream names, source ids, work folders)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def free_tcp_address() -> str:
    """tcp://127.0.0.1:<a port free right now>."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def wait_until(pred, timeout: float, interval: float = 0.01, what: str = "condition"):
    """Deadline loop: return pred()'s truthy value, or raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass
class ChildLink:
    """The child's side: ready / stop Events and its work folder (state.json and .npy files)."""

    dir: str
    ready: Any  # multiprocessing Event, set by the child
    stop: Any  # multiprocessing Event, set by the parent
    _state: dict = field(default_factory=dict, repr=False)

    @property
    def state_path(self) -> Path:
        return Path(self.dir) / "state.json"

    def mark_ready(self, **values: Any) -> None:
        if values:
            self.put(**values)
        self.ready.set()

    def put(self, **values: Any) -> None:
        """Merge plain JSON values into the state file (atomically replaced)."""
        self._state.update(values)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state))
        os.replace(tmp, self.state_path)

    def save(self, name: str, array: np.ndarray) -> None:
        """Write an array as DIR/<name>.npy (atomically), for the parent to load without pickle."""
        tmp = Path(self.dir) / f"{name}.tmp.npy"
        np.save(tmp, np.ascontiguousarray(array), allow_pickle=False)
        os.replace(tmp, Path(self.dir) / f"{name}.npy")


def _child_main(target, kwargs: dict, link: ChildLink, log_level: int, role: str) -> None:
    logging.basicConfig(level=log_level, format=f"%(asctime)s {role} %(levelname)s %(name)s: %(message)s")
    try:
        target(link, **kwargs)
    except Exception as e:  # recorded for the parent, then raised for the traceback on stderr
        link.put(error=f"{type(e).__name__}: {e}")
        raise


class ChildProcess:
    """One rig child running `target(link, **kwargs)`; a context manager (start / stop).

    `work_dir`: where the child's files go; a temporary folder (removed at stop, after
    `_collect()` read the results) when None.
    """

    def __init__(self, target, kwargs: dict[str, Any], *, role: str, work_dir: str | Path | None = None,
                 start_timeout: float = 30.0, stop_timeout: float = 10.0):
        ctx = mp.get_context("spawn")
        self.role = role
        self._own_dir = work_dir is None
        self.dir = Path(tempfile.mkdtemp(prefix=f"rtdecode-{role}-")) if work_dir is None else Path(work_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.link = ChildLink(str(self.dir), ctx.Event(), ctx.Event())
        self.start_timeout = float(start_timeout)
        self.stop_timeout = float(stop_timeout)
        level = logging.getLogger().getEffectiveLevel()
        self.proc = ctx.Process(target=_child_main, args=(target, kwargs, self.link, level, role), name=f"rtdecode-{role}",
                                daemon=True)
        self.stopped_cleanly: bool | None = None  # set by stop(): exited on its own after the stop Event
        self._final: dict | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self, timeout: float | None = None) -> ChildProcess:
        """Start the child and wait until it is ready; RuntimeError when it dies first."""
        timeout = self.start_timeout if timeout is None else timeout
        self.proc.start()
        try:
            wait_until(lambda: self.link.ready.is_set() or not self.proc.is_alive(), timeout,
                       what=f"the {self.role} child to be ready")
        except TimeoutError:
            self.stop(timeout=1.0)
            raise
        if not self.link.ready.is_set():
            self.proc.join(1.0)
            raise RuntimeError(f"the {self.role} child exited (code {self.proc.exitcode}) before it was ready: "
                               f"{self.state().get('error') or 'no error recorded; see its stderr'}")
        return self

    def stop(self, timeout: float | None = None) -> dict:
        """Ask the child to stop; after `timeout` s terminate it, then kill it. Returns its final state."""
        if self._final is not None:
            return self._final
        timeout = self.stop_timeout if timeout is None else timeout
        self.link.stop.set()
        if self.proc.pid is not None:
            self.proc.join(timeout)
            self.stopped_cleanly = not self.proc.is_alive()
            for end in (self.proc.terminate, self.proc.kill):
                if not self.proc.is_alive():
                    break
                end()
                self.proc.join(2.0)
        self._final = self.state()
        try:
            self._collect()
        finally:
            if self._own_dir:
                shutil.rmtree(self.dir, ignore_errors=True)
        return self._final

    def _collect(self) -> None:
        """Subclasses read the child's files here (the folder may be removed afterwards)."""

    def __enter__(self) -> ChildProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- what the child said ---------------------------------------------------------------
    def state(self) -> dict:
        if self._final is not None:
            return self._final
        try:
            return json.loads(self.link.state_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def wait_for(self, key: str, timeout: float, what: str | None = None) -> dict:
        """Wait until the state holds `key`; returns the state. Fails fast when the child errs or dies."""
        what = what or f"{key!r} from the {self.role} child"

        def got() -> dict | None:
            s = self.state()
            if key in s:
                return s
            if s.get("error"):
                raise RuntimeError(f"the {self.role} child failed before {what}: {s['error']}")
            if self.proc.exitcode is not None:
                raise RuntimeError(f"the {self.role} child exited (code {self.proc.exitcode}) before {what}")
            return None

        return wait_until(got, timeout, what=what)

    @property
    def pid(self) -> int | None:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.is_alive()

    @property
    def error(self) -> str | None:
        return self.state().get("error")
