"""Outputs that cannot be written, a disk that fills, and what killed runs leave behind.

A read-only directory and a full disk are real file systems here: small tmpfs mounts (the tests skip
where mounting is not permitted, e.g. without root).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm4rec.data.prep import main as prep_main
from llm4rec.io import atomic_dir
from tests.conftest import make_tallrec_samples
from tests.data.logs import random_events, write_ml100k

from .conftest import (
    call,
    evaluate_cli,
    finished_pid,
    one_error_line,
    recipe_data,
    snapshot,
    temp_leftovers,
    train_cli,
    write_jsonl,
    write_recipe,
)


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` for the block."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True
    )
    if res.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip() or res.returncode})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory) -> Path:
    return write_ml100k(
        tmp_path_factory.mktemp("log") / "src", random_events(20, 40, seed=3, lo=12, hi=20), 40
    )


def prep_cli(argv: list, capsys) -> tuple[int, str, str]:
    return call(lambda a: prep_main(a, source="movielens"), argv, capsys)


def test_a_read_only_output_is_one_line_before_anything_loads(log_dir, trained, tiny_llama, tmp_path, capsys):
    test_file = write_jsonl(tmp_path / "test.jsonl", make_tallrec_samples(4, seed=9))
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        line = one_error_line(*prep_cli(["--src", log_dir, "--out", ro / "data", "--quiet"], capsys)[::2])
        assert line == f"error: --out: cannot write to {ro} (read-only file system); choose another location"
        data = recipe_data(tmp_path, tiny_llama, ro / "run")
        line = one_error_line(*train_cli([write_recipe(tmp_path / "r.yaml", data)], capsys)[::2])
        assert line.startswith(f"error: train.output_dir: cannot write to {ro} (read-only file system)")
        argv = ["--checkpoint", trained["out"], "--data", test_file, "--out", ro / "rep"]
        line = one_error_line(*evaluate_cli(argv, capsys)[::2])
        assert line.startswith(f"error: --out: cannot write to {ro} (read-only file system)")


def _previous(out: Path) -> dict[str, bytes]:
    out.mkdir()
    (out / "previous.txt").write_text("the output of an earlier run")
    return snapshot(out)


def test_a_full_disk_in_prep_keeps_the_previous_output(log_dir, tmp_path, capsys):
    with tmpfs(tmp_path / "small", "64k") as small:
        before = _previous(small / "data")
        line = one_error_line(*prep_cli(["--src", log_dir, "--out", small / "data", "--quiet"], capsys)[::2])
        assert line.startswith("error: no space left on device while writing ")
        assert str(small / "data") in line
        assert snapshot(small / "data") == before and temp_leftovers(small) == []


def test_a_full_disk_in_evaluate_keeps_the_previous_report(trained, tmp_path, capsys):
    test_file = write_jsonl(tmp_path / "test.jsonl", make_tallrec_samples(40, seed=9))
    with tmpfs(tmp_path / "small", "32k") as small:
        before = _previous(small / "rep")
        argv = ["--checkpoint", trained["out"], "--data", test_file, "--out", small / "rep"]
        line = one_error_line(*evaluate_cli(argv, capsys)[::2])
        assert (
            line
            == f"error: no space left on device while writing {small / 'rep'} (the previous output is unchanged)"
        )
        assert snapshot(small / "rep") == before and temp_leftovers(small) == []


def test_a_full_disk_in_train_is_one_line_and_leaves_no_temp_dir(tiny_llama, tmp_path, capsys):
    # room for the recipe and tokenizer, not for the first checkpoint (adapter and optimizer state)
    with tmpfs(tmp_path / "small", "160k") as small:
        data = recipe_data(tmp_path, tiny_llama, small / "run")
        line = one_error_line(*train_cli([write_recipe(tmp_path / "r.yaml", data)], capsys)[::2])
        assert line.startswith("error: no space left on device while writing ")
        assert str(small / "run") in line
        assert temp_leftovers(small / "run") == [] and not (small / "run" / ".adapter.tmp").exists()
        assert not (small / "run" / ".llm4rec.lock").exists()


def _stale(parent: Path, name: str) -> tuple[Path, Path]:
    """A temporary dir of a killed writer of ``name`` and one of a live writer (this process)."""
    host = socket.gethostname()
    dead = parent / f".{name}.{finished_pid()}@{host}.k1ll3d00.tmp"
    live = parent / f".{name}.{os.getpid()}@{host}.l1v3wr1t.tmp"
    for d in (dead, live):
        d.mkdir(parents=True)
        (d / "half-written").write_text("x")
    return dead, live


def test_runs_remove_the_temp_dirs_their_killed_predecessors_left(log_dir, trained, tmp_path, capsys):
    dead, live = _stale(tmp_path, "data")
    old_style = tmp_path / ".data.abcdefgh.tmp"  # no pid recorded: its owner is unknown, it stays
    old_style.mkdir()
    assert prep_cli(["--src", log_dir, "--out", tmp_path / "data", "--quiet"], capsys)[0] == 0
    assert not dead.exists() and live.exists() and old_style.exists()
    dead, live = _stale(tmp_path, "rep")
    test_file = write_jsonl(tmp_path / "test.jsonl", make_tallrec_samples(4, seed=9))
    argv = ["--checkpoint", trained["out"], "--data", test_file, "--out", tmp_path / "rep"]
    assert evaluate_cli(argv, capsys)[0] == 0
    assert not dead.exists() and live.exists()


def test_a_writer_killed_between_the_two_renames_gets_its_output_back(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("first")
    shutil.move(out, tmp_path / ".out.old")  # what a kill right after the first rename leaves
    with atomic_dir(tmp_path / "out") as tmp:
        assert (tmp_path / "out" / "a.txt").read_text() == "first"  # restored before the new write
        (tmp / "a.txt").write_text("second")
    assert (out / "a.txt").read_text() == "second" and not (tmp_path / ".out.old").exists()
