"""An advisory lock on an output directory: one run writes into it at a time.

The lock is a file, ``OUTPUT/.llm4rec.lock``, created exclusively (``O_EXCL``) and holding the owner's pid,
host and process start time. It is removed when the run ends (normally, by an error or by Ctrl-C). A run
killed with SIGKILL leaves it behind: the next run on the same host takes it over when that process is
gone (or the pid now belongs to a process started later). A lock held from another host is never taken
over (its owner cannot be checked from here): the error says which file to remove once that run is over.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llm4rec.errors import UserError
from llm4rec.io import pid_alive

LOCK_NAME = ".llm4rec.lock"


def _start_time(pid: int) -> str | None:
    """The kernel's start time of process ``pid`` (clock ticks since boot), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name may hold spaces and ')'


def _owner() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": _start_time(os.getpid())}


def _holder_alive(holder: dict[str, Any]) -> bool:
    """Whether the process a lock file names still runs (always True for another host's process)."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = holder.get("pid")
    if not isinstance(pid, int) or not pid_alive(pid):
        return False
    return holder.get("started") in (None, _start_time(pid))


def _read_holder(path: Path) -> dict[str, Any] | None:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # being written, or damaged: treated as held by an unknown owner below
    return holder if isinstance(holder, dict) else {}


def acquire(directory: str | os.PathLike[str]) -> Path:
    """Take the lock on ``directory`` (created if needed) for this process; return the lock file.

    Another live run holding it is a :class:`UserError` naming its pid and host.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    mine = json.dumps(_owner())
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read_holder(path)
            if holder is None:
                continue  # released meanwhile
            if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
                return path  # this process already holds it
            if holder and not _holder_alive(holder):
                path.unlink(missing_ok=True)  # its owner was killed: take it over
                continue
            who = (
                f"process {holder['pid']} on {holder['host']}"
                if holder.get("pid") and holder.get("host")
                else "another run"
            )
            raise UserError(
                f"{directory}: another run is writing here ({who}, lock {path}); wait for it to end, choose "
                f"another train.output_dir, or remove {path} if that run is over"
            ) from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(mine)
        atexit.register(release, path)
        return path
    raise UserError(f"{path}: cannot take the lock on {directory} (it keeps changing hands)")


def release(path: str | os.PathLike[str]) -> None:
    """Remove the lock file if this process holds it."""
    path = Path(path)
    holder = _read_holder(path)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def locked(directory: str | os.PathLike[str], enabled: bool = True) -> Iterator[None]:
    """Hold the lock on ``directory`` for the block (nothing when ``enabled`` is False, e.g. on the
    non-main processes of a distributed run, whose main process holds it)."""
    if not enabled:
        yield
        return
    path = acquire(directory)
    try:
        yield
    finally:
        release(path)
