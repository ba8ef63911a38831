"""A resume never mixes two runs, and two runs never share one output directory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from llm4rec.errors import UserError
from llm4rec.run_lock import LOCK_NAME, acquire, locked, release
from llm4rec.train.fingerprint import SAFE_TO_CHANGE

from .conftest import finished_pid, one_error_line, snapshot, train_cli, write_recipe


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("train.learning_rate=0.02", "train.learning_rate: 0.002 -> 0.02"),
        ("lora.r=32", "lora.r: 16 -> 32"),
        ("train.seed=4", "train.seed: 3 -> 4"),
        ("train.micro_batch_size=4", "train.micro_batch_size: 8 -> 4"),
    ],
)
def test_resume_with_a_changed_setting_is_refused_and_loses_nothing(
    run_copy, tmp_path, capsys, override, named
):
    out, data = run_copy
    recipe = write_recipe(tmp_path / "r.yaml", data)
    before = snapshot(out)
    line = one_error_line(*train_cli([recipe, override], capsys)[::2])
    assert named in line and f"{out}/checkpoint-last" in line
    assert "train.resume: never" in line and "train.output_dir" in line
    assert snapshot(out) == before  # adapter (rank 16), checkpoint and metrics as the first run left them
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 16


def test_resume_with_changed_data_content_is_refused(run_copy, tmp_path, capsys):
    out, data = run_copy
    train_file = tmp_path / "train.jsonl"
    extra = Path(data["data"]["valid"]).read_text().splitlines(keepends=True)[0]
    train_file.write_text(Path(data["data"]["train"]).read_text() + extra)
    data["data"]["train"] = str(train_file)
    line = one_error_line(*train_cli([write_recipe(tmp_path / "r.yaml", data)], capsys)[::2])
    assert "data.train (sha256 of its content)" in line


def test_resume_with_only_safe_keys_changed_goes_on(run_copy, tmp_path, capsys):
    out, data = run_copy
    recipe = write_recipe(tmp_path / "r.yaml", data)
    overrides = ["logging.log_every=5", "train.eval_every=7", "train.save_every=3", "eval.batch_size=2"]
    assert all(any(o.startswith(s) for s in SAFE_TO_CHANGE) for o in overrides)
    code, stdout, err = train_cli([recipe, *overrides], capsys)
    assert code == 0, err
    assert f"resumed from {out}/checkpoint-last at step 2" in stdout


def test_resume_never_starts_over_after_a_refusal(run_copy, tmp_path, capsys):
    out, data = run_copy
    recipe = write_recipe(tmp_path / "r.yaml", data)
    code, stdout, err = train_cli([recipe, "train.learning_rate=0.02", "train.resume=never"], capsys)
    assert code == 0, err
    assert "resumed" not in stdout
    assert (
        json.loads((out / "checkpoint-last" / "fingerprint.json").read_text())["train.learning_rate"] == 0.02
    )


def test_a_live_run_holds_the_output_directory(trained, run_copy, tmp_path, capsys):
    out, data = run_copy
    assert not (trained["out"] / LOCK_NAME).exists()  # released when the run ended
    holder = subprocess.Popen(["sleep", "60"])
    try:
        from llm4rec.run_lock import _start_time

        lock = {"pid": holder.pid, "host": socket.gethostname(), "started": _start_time(holder.pid)}
        (out / LOCK_NAME).write_text(json.dumps(lock))
        before = snapshot(out)
        line = one_error_line(*train_cli([write_recipe(tmp_path / "r.yaml", data)], capsys)[::2])
        assert f"process {holder.pid} on {socket.gethostname()}" in line and str(out / LOCK_NAME) in line
        assert snapshot(out) == before
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path):
    dead = finished_pid()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead, "host": socket.gethostname()}))
    with locked(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()
    # a pid now used by a process started later than the lock's owner is not that owner
    other = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / LOCK_NAME).write_text(
            json.dumps({"pid": other.pid, "host": socket.gethostname(), "started": "1"})
        )
        assert acquire(tmp_path) == tmp_path / LOCK_NAME
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
        release(tmp_path / LOCK_NAME)
    finally:
        other.kill()
        other.wait()


def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere.example"}))
    with pytest.raises(UserError, match=r"process 1 on elsewhere\.example, .*remove .* if that run is over"):
        acquire(tmp_path)


def test_two_train_processes_one_output_directory(run_copy, tmp_path):
    """A second real train.py process on the output directory of a running one is one line naming it; the
    running one goes on alone (its metrics.jsonl is one run's)."""
    import sys
    import time

    from tests.conftest import REPO

    out, data = run_copy
    # the first run must outlive the second's start-up however fast the machine is: it is killed below
    data["train"].update(
        resume="never", epochs=1000, max_steps=100_000, eval_every=100_000, save_every=100_000
    )
    first = write_recipe(tmp_path / "first.yaml", data)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    runner = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), str(first)], env=env, stderr=subprocess.PIPE
    )
    try:
        lock = out / LOCK_NAME
        deadline = time.time() + 300
        while runner.poll() is None and time.time() < deadline:
            if lock.is_file() and f'"pid": {runner.pid},' in lock.read_text():
                break
            time.sleep(0.1)
        assert runner.poll() is None, runner.stderr.read()[-2000:]
        data["train"]["max_steps"] = 2
        second = subprocess.run(
            [sys.executable, str(REPO / "train.py"), str(write_recipe(tmp_path / "second.yaml", data))],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert runner.poll() is None  # the first run still holds the directory
        line = one_error_line(second.returncode, second.stderr)
        assert line.startswith(f"error: {out}: another run is writing here (process {runner.pid} on ")
    finally:
        runner.kill()
        runner.wait()
    metrics = out / "metrics.jsonl"
    records = [json.loads(x) for x in metrics.read_text().splitlines()] if metrics.exists() else []
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # one run's log, not two interleaved
