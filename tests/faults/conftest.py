"""Shared pieces of the fault-injection suite: a tiny trained run, entry points called as the user calls
them, and the single-line error they must print."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.train.test_loop import _recipe as loop_recipe


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def recipe_data(tmp: Path, model: Path, out: Path, **train) -> dict:
    """test_loop's recipe shrunk to two steps of 8 samples, checkpointed every step, with learning rate 0.002
    and LoRA rank 16 on q/v (the values the resume tests change)."""
    data = loop_recipe(
        tmp, model, max_steps=2, micro_batch_size=8, batch_size=8, learning_rate=0.002, eval_every=2
    )
    data["lora"].update(r=16, alpha=16, targets="qv")
    data["train"].update(output_dir=str(out), seed=3, early_stopping_patience=5, **train)
    return data


def write_recipe(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _train_main():
    spec = importlib.util.spec_from_file_location("llm4rec_train_py", REPO / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def call(main, argv: list[str], capsys) -> tuple[int, str, str]:
    """Run an entry point as its command does; (exit status, stdout, stderr)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    cap = capsys.readouterr()
    return int(code or 0), cap.out, cap.err


def train_cli(argv: list, capsys) -> tuple[int, str, str]:
    """``python train.py RECIPE [overrides]`` in this process."""
    return call(_train_main(), argv, capsys)


def evaluate_cli(argv: list, capsys) -> tuple[int, str, str]:
    """``llm4rec evaluate ...`` in this process."""
    from llm4rec.eval.evaluate import main

    return call(main, argv, capsys)


def one_error_line(code: int, err: str) -> str:
    """The single ``error:`` line a failed command must print (exit status 2, no traceback)."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    return lines[0]


def snapshot(d: Path) -> dict[str, bytes]:
    """Every file under ``d`` with its bytes (to check that a refused run lost nothing)."""
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def temp_leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture(scope="session")
def trained(tiny_llama, tmp_path_factory) -> dict:
    """A finished two-step run: {'dir': its work dir, 'recipe': recipe data, 'out': output dir}."""
    from llm4rec.config import recipe_from_dict
    from llm4rec.train.loop import train

    work = tmp_path_factory.mktemp("trained")
    data = recipe_data(work, tiny_llama, work / "out")
    train(recipe_from_dict(data))
    return {"dir": work, "recipe": data, "out": work / "out"}


@pytest.fixture
def run_copy(trained, tmp_path) -> tuple[Path, dict]:
    """A copy of the trained run (output and recipe pointing at it) that a test may damage."""
    out = tmp_path / "out"
    shutil.copytree(trained["out"], out)
    data = json.loads(json.dumps(trained["recipe"]))
    data["train"]["output_dir"] = str(out)
    return out, data


def finished_pid() -> int:
    """The pid of a process that has exited (nothing runs under it now)."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid
