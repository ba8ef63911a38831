"""A missing model directory is one line at start-up, never hub retries; the hub stays off by default."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from llm4rec.errors import UserError
from llm4rec.models.paths import require_model_dir
from tests.conftest import REPO


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


@pytest.mark.parametrize("path", ["models/llama-7b", "/abs/missing/model", "./rel"])
def test_missing_directory_is_named(path):
    with pytest.raises(UserError, match=rf"model\.path: the model directory {path} does not exist"):
        require_model_dir(path)


def test_a_file_is_not_a_model_directory(tmp_path):
    f = tmp_path / "config.json"
    f.write_text("{}")
    with pytest.raises(UserError, match="is a file, not a directory"):
        require_model_dir(f)


def test_hub_ids_pass_only_when_the_user_switches_the_hub_on(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert str(require_model_dir("org/model")) == "org/model"
    with pytest.raises(UserError):
        require_model_dir("/abs/org/model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="does not exist"):
        require_model_dir("org/model")


def test_importing_llm4rec_keeps_the_hub_offline_unless_the_user_chose():
    code = "import llm4rec, huggingface_hub.constants as c; print(c.HF_HUB_OFFLINE)"
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
    out = subprocess.run(
        [sys.executable, "-c", code], env=_env(HF_HUB_OFFLINE="0"), capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_train_py_names_the_missing_directory_at_once(tmp_path):
    recipe = REPO / "recipes" / "tallrec_ml100k.yaml"
    missing = tmp_path / "no-model"
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), str(recipe), f"model.path={missing}"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"model.path: the model directory {missing} does not exist" in proc.stderr
    # checked before torch is imported: no hub retries, no start-up cost
    assert "Retrying" not in proc.stderr


def test_train_py_names_a_missing_sample_file(tmp_path):
    (tmp_path / "m").mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            str(REPO / "recipes" / "demo_cpu.yaml"),
            f"model.path={tmp_path / 'm'}",
            f"data.train={tmp_path / 'missing.jsonl'}",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert f"data.train: {tmp_path / 'missing.jsonl'} does not exist" in proc.stderr, proc.stderr
