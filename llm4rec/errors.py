"""User-facing errors: one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any


class UserError(Exception):
    """An error caused by the user's input (file, recipe key, data line).

    The message must name the file, line or key and say what to do; entry points print it as one
    line and exit with status 2.
    """


def exit_on_user_error(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate an entry point so that a :class:`UserError` prints ``error: <message>`` and exits 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper
