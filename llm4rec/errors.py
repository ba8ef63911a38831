"""User-facing errors: one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import errno
import functools
import sys
from collections.abc import Callable
from typing import Any


class UserError(Exception):
    """An error caused by the user's input (file, recipe key, data line).

    The message must name the file, line or key and say what to do; entry points print it as one
    line and exit with status 2.
    """


#: the longest piece of a user's value an error message quotes
QUOTE_LIMIT = 200


def quote(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` cut to about ``limit`` characters (with the full size said), for error messages: a
    value built through YAML anchors can be hundreds of megabytes long once printed."""
    import reprlib

    r = reprlib.Repr()  # bounded at every level: the whole text of a huge value is never built
    r.maxlevel, r.maxlist, r.maxdict, r.maxtuple, r.maxset = 3, 20, 20, 20, 20
    r.maxstring = r.maxother = r.maxlong = limit
    text = r.repr(value)
    if len(text) <= limit and "..." not in text:
        return text
    return f"{text[:limit]}... ({type(value).__name__} of {_size(value)})"


def _size(value: Any) -> str:
    if isinstance(value, (str, bytes)):
        return f"{len(value):,} characters"
    if isinstance(value, (list, dict, tuple, set)):
        return f"{len(value):,} entries"
    return "long"


def _os_error_line(exc: OSError) -> str | None:
    """One line for the operating-system errors a user can fix (full disk, no write permission)."""
    name = exc.filename or "the output"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on device while writing {name}"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {name} ({exc.strerror.lower() if exc.strerror else 'permission denied'})"
    return None


def exit_on_user_error(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate an entry point so that a :class:`UserError` prints ``error: <message>`` and exits 2; so do
    a full disk and a write refused by the file system (the last line of defence: outputs are checked to be
    writable before anything loads, and atomic writers name the file)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        except OSError as exc:
            line = _os_error_line(exc)
            if line is None:
                raise
            print(f"error: {line}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper
