"""Write llm4rec's lock, a pip constraints file, from the packages installed in a Python environment.

    python scripts/write_lock.py --python .venv-latest/bin/python --out constraints.txt

Every installed distribution is pinned exactly, except llm4rec itself, pip/setuptools/wheel, and torch with
the packages only torch needs (its CUDA libraries, triton, sympy, mpmath, networkx): torch stays the user's
choice (`make install TORCH=...`, or a CUDA torch already in the venv), and older torch releases pin sympy
exactly, which a locked sympy would contradict. `make lock` calls this; `make install` reads the result with
`pip install -c`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

#: Left unpinned: the project itself, installer tooling, and torch with what only torch pulls in.
UNLOCKED = re.compile(
    r"^(llm4rec|pip|setuptools|wheel|torch|triton|sympy|mpmath|networkx|nvidia-.*|cuda-.*)$"
)


def installed(python: str) -> dict[str, str]:
    """``{normalised name: version}`` of every distribution installed for ``python``."""
    out = subprocess.run(
        [python, "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {re.sub(r"[-_.]+", "-", d["name"]).lower(): d["version"] for d in json.loads(out)}


def main(argv: list[str]) -> int:
    """Write the lock atomically; print how many packages it pins."""
    ap = argparse.ArgumentParser(prog="scripts/write_lock.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", required=True, help="the interpreter of the environment to lock")
    ap.add_argument("--out", type=Path, default=Path("constraints.txt"), help="the lock file to write")
    args = ap.parse_args(argv)
    pins = {n: v for n, v in installed(args.python).items() if not UNLOCKED.match(n)}
    py = subprocess.run(
        [args.python, "-c", "import platform; print(platform.python_version())"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    lines = [
        "# llm4rec's lock: exact versions for `pip install -c constraints.txt -e .[dev]` (the Makefile does this).",
        "# Written by `make lock` (scripts/write_lock.py) from the newest versions pyproject.toml allowed,",
        f"# resolved with Python {py}; torch and the packages only torch needs are deliberately absent.",
        *(f"{n}=={v}" for n, v in sorted(pins.items())),
    ]
    fd, tmp = tempfile.mkstemp(dir=args.out.parent or ".", prefix=".lock-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: {len(pins)} pinned packages")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
