"""Atomic file output and JSON-lines input shared by every stage."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from llm4rec.errors import UserError


def current_umask() -> int:
    """The process umask (read without changing it for good)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def follow_umask(path: str | os.PathLike[str]) -> None:
    """Give ``path`` (and, for a directory, everything under it) the mode ``open()``/``mkdir`` would give.

    ``mkstemp``/``mkdtemp`` (and safetensors' writer) create 0600/0700 entries, which other users of a
    shared server cannot read; files written through them should look like any file the user creates.
    """
    mask = current_umask()
    path = Path(path)
    entries = [path]
    if path.is_dir():
        entries += list(path.rglob("*"))
    for p in entries:
        if p.is_symlink():
            continue
        mode = p.stat().st_mode
        executable = p.is_dir() or mode & 0o111
        p.chmod((0o777 if executable else 0o666) & ~mask)


def temp_prefix(path: Path) -> str:
    """Prefix of the temporary siblings of ``path``: they carry the writer's pid and host, so a later run can
    tell the leftovers of a killed writer (whose process is gone) from a live writer's."""
    return f".{path.name}.{os.getpid()}@{socket.gethostname()}."


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary siblings of ``path`` that killed writers left (see :func:`atomic_path` and
    :func:`atomic_dir`): only those written on this host by a process that no longer exists. Return them.

    A writer killed between the two renames of :func:`atomic_dir` leaves ``path`` missing and the previous
    output in ``.NAME.old``: it is put back.
    """
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        return []
    old = path.with_name(f".{path.name}.old")
    if old.is_dir() and not path.exists():
        os.replace(old, path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)@(.+)\.[A-Za-z0-9_]+\.tmp$")
    host = socket.gethostname()
    removed = []
    for entry in parent.iterdir():
        m = pattern.match(entry.name)
        if not m or m.group(2) != host or pid_alive(int(m.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def is_disk_full(exc: BaseException, where: str | os.PathLike[str] | None = None) -> bool:
    """Whether ``exc`` means the disk filled up: ``ENOSPC`` from Python, safetensors' "os error 28", or
    torch.save's zip writer failing (``inline_container``) on a file system with no space left at ``where``."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    if "No space left on device" in text or "os error 28" in text:
        return True
    if "inline_container" in text and where is not None:
        with contextlib.suppress(OSError):
            return shutil.disk_usage(where).free < (1 << 20)
    return False


def disk_full_error(path: str | os.PathLike[str]) -> UserError:
    """The one-line error for a disk that filled while ``path`` was being written."""
    return UserError(f"no space left on device while writing {path} (the previous output is unchanged)")


@contextlib.contextmanager
def disk_full_names(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a full disk inside the block, whatever library was writing, into the one-line
    :func:`disk_full_error` naming ``path``."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - writers wrap ENOSPC in their own types (torch, polars, safetensors)
        if is_disk_full(exc, Path(path).parent):
            raise disk_full_error(path) from None
        raise


def require_writable(path: str | os.PathLike[str], what: str, replace: bool = False) -> None:
    """Fail with one line, before anything heavy loads, when output ``path`` cannot be written.

    The directory tested is ``path`` itself when it is a directory that is written into (a training
    output), else (``replace``: an output replaced whole, or a file) the directory above it; the nearest
    existing one when they do not exist yet. ``what`` names the setting or flag (e.g. ``--out``).
    """
    path = Path(path)
    probe = path if path.is_dir() and not replace else path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{what}: {probe} is not a directory, so {path} cannot be created")
    try:  # the real test: access() says yes to root on a directory without write bits
        with tempfile.TemporaryFile(dir=probe, prefix=".llm4rec-write-test."):
            pass
    except OSError as exc:
        if is_disk_full(exc):
            raise UserError(f"{what}: no space left on device in {probe}") from None
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise UserError(
            f"{what}: cannot write to {probe} ({reason.lower()}); choose another location"
        ) from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Readers never see a half-written file: either the old content or the complete new one. The file gets
    the mode ``open()`` would give it (the umask applies), not ``mkstemp``'s 0600. A full disk is a
    :class:`UserError` naming ``path``; temporary files of killed writers are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with disk_full_names(path):
            yield tmp_path
            if tmp_path.exists():
                follow_umask(tmp_path)
            os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; it replaces ``path`` only if the block succeeds.

    Everything in it gets the modes ``open()``/``mkdir`` would give (the umask applies). A full disk is a
    :class:`UserError` naming ``path`` (the previous ``path`` stays); temporary directories of killed
    writers are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        with disk_full_names(path):
            yield tmp
            follow_umask(tmp)
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def write_jsonl_atomic(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> int:
    """Write one JSON object per line to ``path`` atomically; return the number of rows."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False))
            f.write("\n")
            n += 1
    return n


_BOMS = (  # UTF-32 first: its little-endian mark begins with UTF-16's
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


def text_encoding(path: str | os.PathLike[str]) -> str:
    """The encoding to read a text file with: the one its byte-order mark names (UTF-8/16/32), else UTF-8."""
    with open(path, "rb") as f:
        head = f.read(4)
    return next((enc for bom, enc in _BOMS if head.startswith(bom)), "utf-8")


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a text file in its :func:`text_encoding`; undecodable bytes are a
    :class:`UserError` naming the file and line."""
    enc = text_encoding(path)
    if enc.startswith("utf-8"):  # line by line, so that an error names the line it is on
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    yield lineno, raw.decode(enc if lineno == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    raise UserError(
                        f"{path}:{lineno}: not UTF-8 text ({exc.reason} at column {exc.start + 1}); save it "
                        "as UTF-8 (UTF-16/32 files need a byte-order mark)"
                    ) from None
        return
    try:
        with open(path, encoding=enc) as f:
            yield from enumerate(f, 1)
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path}: not {enc.upper()} text ({exc.reason}) although it starts with its mark"
        ) from None


def line_numbers(path: str | os.PathLike[str]) -> list[int]:
    """File line number of each sample of a JSON-lines file (:func:`read_jsonl` skips blank lines)."""
    return [i for i, line in _text_lines(Path(path)) if line.strip()]


def read_jsonl(path: str | os.PathLike[str], required: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Read a JSON-lines file (UTF-8, or UTF-16/32 with a byte-order mark); a missing file, undecodable
    bytes, bad JSON or a missing field is a :class:`UserError`.

    ``required`` names fields every row must carry; the error names the file, line and field.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    required = tuple(required)
    rows: list[dict[str, Any]] = []
    for lineno, line in _text_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{lineno}: expected a JSON object per line")
        for key in required:
            if key not in row:
                raise UserError(f"{path}:{lineno}: sample lacks the field {key!r} (has: {', '.join(row)})")
        rows.append(row)
    if not rows:
        raise UserError(f"{path}: the file holds no samples")
    return rows


def read_json_object(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON object in the file ``path``; broken JSON or another JSON value is a :class:`UserError`
    naming the file (and the line)."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a JSON object")
    return obj


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()
