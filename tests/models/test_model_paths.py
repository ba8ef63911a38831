"""Where a model is, decided once: a missing local directory is one line at start-up, a hub id goes to the
hub when the user is online and is one line naming HF_HUB_OFFLINE when not; llm4rec never switches the hub
off by itself."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from llm4rec.errors import UserError
from llm4rec.models.paths import is_hub_id, require_model_dir
from tests.conftest import REPO


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


@pytest.mark.parametrize("path", ["/abs/missing/model", "./rel", "../up/model", "~/no/such/model", "name"])
def test_missing_local_directory_is_named_at_once(path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # even online: an explicitly local path never goes to the hub
    t0 = time.perf_counter()
    with pytest.raises(UserError, match=rf"model\.path: the model directory {path} does not exist"):
        require_model_dir(path)
    assert time.perf_counter() - t0 < 0.1


def test_a_path_whose_first_component_exists_is_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert is_hub_id("models/llama-7b")
    (tmp_path / "models").mkdir()
    assert not is_hub_id("models/llama-7b")
    with pytest.raises(UserError, match="the model directory models/llama-7b does not exist"):
        require_model_dir("models/llama-7b")


def test_a_file_is_not_a_model_directory(tmp_path):
    f = tmp_path / "config.json"
    f.write_text("{}")
    with pytest.raises(UserError, match="is a file, not a directory"):
        require_model_dir(f)


def test_hub_ids_go_to_the_hub_online_and_name_the_setting_offline(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert str(require_model_dir("org/model")) == "org/model"  # online by default, as transformers is
    with pytest.raises(UserError, match="does not exist"):
        require_model_dir("/abs/org/model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(UserError) as exc:
        require_model_dir("org/model")
    assert time.perf_counter() - t0 < 0.1
    message = str(exc.value)
    assert "model.path: org/model" in message and "HF_HUB_OFFLINE" in message and "\n" not in message


def test_importing_llm4rec_leaves_the_hub_setting_to_the_user():
    code = "import llm4rec, huggingface_hub.constants as c; print(c.HF_HUB_OFFLINE)"
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    out = subprocess.run(
        [sys.executable, "-c", code], env=_env(HF_HUB_OFFLINE="1"), capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "True"


def test_train_py_names_the_offline_setting_for_a_hub_id(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), str(REPO / "recipes" / "tallrec_ml100k.yaml"),
         "model.path=Qwen/Qwen2-7B"],
        env=_env(HF_HUB_OFFLINE="1"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "HF_HUB_OFFLINE" in proc.stderr, proc.stderr


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
