"""The training loop on a tiny LLaMA through the real 4-bit path: loss falls, outputs load, resume is exact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from llm4rec.config import recipe_from_dict
from llm4rec.errors import UserError
from llm4rec.train.loop import train

from ..conftest import REPO, free_port, make_tallrec_samples


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _recipe(tmp: Path, model: Path, **train_overrides) -> dict:
    data = {
        "model": {
            "path": str(model),
            "family": "llama",
            "compute_dtype": "float32",
            "gradient_checkpointing": False,
        },
        "lora": {"r": 8, "alpha": 16, "dropout": 0.05, "targets": "all"},
        "data": {
            "train": _write_jsonl(tmp / "train.jsonl", make_tallrec_samples(48, seed=1)),
            "valid": _write_jsonl(tmp / "valid.jsonl", make_tallrec_samples(24, seed=2)),
            "cutoff_len": 256,
        },
        "train": {
            "output_dir": str(tmp / "out"),
            "epochs": 10,
            "max_steps": 6,
            "micro_batch_size": 8,
            "batch_size": 16,
            "learning_rate": 1e-2,
            "warmup_steps": 1,
            "eval_every": 3,
            "save_every": 1,
            "early_stopping_patience": 0,
            "seed": 7,
        },
        "logging": {"progress_bar": False},
    }
    data["train"].update(train_overrides)
    return data


def test_4bit_lora_training_reduces_loss_and_writes_a_loadable_adapter(tmp_path, tiny_llama):
    summary = train(recipe_from_dict(_recipe(tmp_path, tiny_llama, max_steps=8, eval_every=4)))
    out = Path(summary["output_dir"])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 8
    assert sum(losses[-2:]) / 2 < 0.8 * sum(losses[:2]) / 2  # the answer tokens are being learned
    aucs = [r["valid_auc"] for r in records if "valid_auc" in r]
    assert len(aucs) == 2 and all(0.0 <= a <= 1.0 for a in aucs)
    assert summary["best_valid_auc"] == max(aucs)
    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "recipe.yaml",
        "llm4rec.json",
        "tokenizer.json",
    ):
        assert (out / name).is_file(), name
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["lora"]["targets"] == "all" and saved["train"]["max_steps"] == 8

    from peft import PeftModel

    from llm4rec.models.loading import load_base_model
    from llm4rec.models.registry import get_family

    base = load_base_model(
        tiny_llama, get_family("llama"), load_in_4bit=True, compute_dtype="float32", device="cpu"
    )
    model = PeftModel.from_pretrained(base, str(out))
    assert type(model.base_model.model.model.layers[0].self_attn.q_proj.base_layer).__name__ == "Linear4bit"
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # trained (LoRA B starts at zero)


def test_bf16_autocast_reaches_the_forward_and_trains_like_fp32(tmp_path, tiny_llama):
    """``train.bf16_autocast``: the losses differ from the fp32 run's (the forward really runs in bf16) but
    only by bf16 rounding, and the resolved recipe records the setting."""
    losses = {}
    for on in (False, True):
        work = tmp_path / str(on)
        work.mkdir()
        summary = train(
            recipe_from_dict(_recipe(work, tiny_llama, max_steps=4, eval_every=4, bf16_autocast=on))
        )
        out = Path(summary["output_dir"])
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        losses[on] = [r["loss"] for r in records if "loss" in r]
        assert yaml.safe_load((out / "recipe.yaml").read_text())["train"]["bf16_autocast"] is on
    assert losses[True] != losses[False]
    assert losses[True] == pytest.approx(losses[False], rel=0.02)
    assert losses[True][-1] < losses[True][0]


def test_resume_after_a_killed_run_matches_an_uninterrupted_run(tmp_path, tiny_llama):
    clean_dir, killed_dir = tmp_path / "clean", tmp_path / "killed"
    clean_dir.mkdir()
    killed_dir.mkdir()
    clean = train(recipe_from_dict(_recipe(clean_dir, tiny_llama)))

    recipe_path = killed_dir / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(_recipe(killed_dir, tiny_llama)))
    # the run kills itself (SIGKILL) right after writing checkpoint 3: the same point on any machine load
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", LLM4REC_TEST_KILL_AFTER_STEP="3")
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), str(recipe_path)], env=env, cwd=tmp_path)
    assert proc.returncode == -signal.SIGKILL
    state_file = killed_dir / "out" / "checkpoint-last" / "trainer_state.json"
    assert json.loads(state_file.read_text())["step"] == 3  # read once the process is gone: no swap under way

    resumed = train(recipe_from_dict(_recipe(killed_dir, tiny_llama)))  # resume: auto
    assert resumed["steps"] == clean["steps"] == 6
    a = load_file(clean_dir / "out" / "checkpoint-last" / "adapter_model.safetensors")
    b = load_file(killed_dir / "out" / "checkpoint-last" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    # bitsandbytes 0.50's CPU 4-bit kernels split reductions over threads, so two identical runs may differ in
    # the last float bits (seen: 2e-6 on one of 1024 values); a wrong RNG, data or optimizer state after
    # resume moves every value by orders of magnitude more
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    steps = [json.loads(x)["step"] for x in (killed_dir / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [s for s in steps if s] == sorted(s for s in steps if s)  # no step logged twice after resume
    ckpt = killed_dir / "out" / "checkpoint-last"
    assert not (ckpt / "scheduler.pt").exists()
    assert json.loads((ckpt / "scheduler.json").read_text())["last_epoch"] == 6
    for name in ("optimizer.pt", "rng.pt"):  # no pickled objects: a shared checkpoint cannot run code
        assert torch.load(ckpt / name, weights_only=True)


def test_resume_state_round_trips_without_pickles(tmp_path):
    import random

    import numpy as np

    from llm4rec.train.loop import _load_resume_state, _save_resume_state

    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([param], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    param.grad = torch.full((3,), 0.5)
    optimizer.step()
    scheduler.step()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    _save_resume_state(tmp_path, optimizer, scheduler)
    want = (random.random(), np.random.standard_normal(), np.random.rand(), torch.rand(2))
    optimizer2 = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    scheduler2 = torch.optim.lr_scheduler.LambdaLR(optimizer2, lambda step: 1.0 / (step + 1))
    _load_resume_state(tmp_path, optimizer2, scheduler2)
    got = (random.random(), np.random.standard_normal(), np.random.rand(), torch.rand(2))
    assert got[:3] == want[:3] and torch.equal(got[3], want[3])
    assert scheduler2.get_last_lr() == scheduler.get_last_lr() == [0.05]
    assert torch.equal(
        optimizer2.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"]
    )
    # a pickle of an arbitrary object (what older checkpoints held) is refused with one line
    torch.save({"obj": Path("x")}, tmp_path / "rng.pt")
    with pytest.raises(UserError, match="cannot load the resume state"):
        _load_resume_state(tmp_path, optimizer2, scheduler2)
    (tmp_path / "scheduler.json").unlink()
    with pytest.raises(UserError, match="no scheduler.json"):
        _load_resume_state(tmp_path, optimizer2, scheduler2)


def test_missing_data_file_is_named(tmp_path, tiny_llama):
    data = _recipe(tmp_path, tiny_llama)
    data["data"]["train"] = str(tmp_path / "nope.jsonl")
    with pytest.raises(UserError, match=r"nope\.jsonl: no such file"):
        train(recipe_from_dict(data))


def test_train_py_prints_one_line_for_a_bad_recipe_key(tmp_path, tiny_llama):
    data = _recipe(tmp_path, tiny_llama)
    data["train"]["lerning_rate"] = 1e-3
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run(
        [sys.executable, str(REPO / "train.py"), str(path)], capture_output=True, text=True, env=env
    )
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"error: {path}: unknown recipe key 'train.lerning_rate' (did you mean 'learning_rate'?)"
    ]


def test_two_processes_shard_validation_and_keep_the_best_adapter(tmp_path, tiny_llama):
    """`accelerate launch --multi_gpu --num_processes 2 train.py` on CPU (gloo): validation is scored in
    shards, and the AUC it reports is the AUC of the adapter it kept, scored again in one process."""
    from llm4rec.eval.evaluate import main as evaluate

    data = _recipe(tmp_path, tiny_llama, max_steps=4, eval_every=2, save_every=2)
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(data))
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO))
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", str(free_port()), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(REPO / "train.py"), str(path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trained 4 steps") == 1  # the summary comes from the main process only
    out = tmp_path / "out"
    summary = json.loads((out / "train_summary.json").read_text())
    aucs = [
        json.loads(x)["valid_auc"]
        for x in (out / "metrics.jsonl").read_text().splitlines()
        if "valid_auc" in x
    ]
    assert len(aucs) == 2 and summary["best_valid_auc"] == max(aucs)
    assert (
        evaluate(["--checkpoint", str(out), "--data", data["data"]["valid"], "--out", str(tmp_path / "r")])
        == 0
    )
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert abs(report["checkpoints"][0]["metrics"]["auc"] - summary["best_valid_auc"]) < 1e-6


def test_short_cutoff_drops_history_and_counts_it_in_the_summary(tmp_path, tiny_llama, capsys):
    from llm4rec.data.tokenize import TruncationStats, encode_train_example, fit_prompt
    from llm4rec.models.loading import load_tokenizer
    from llm4rec.models.registry import get_family
    from llm4rec.models.templates import ALPACA

    data = _recipe(tmp_path, tiny_llama, max_steps=2, eval_every=2)
    rows = make_tallrec_samples(48, seed=1)
    old = {k: v for k, v in rows[5].items() if k != "history_spans"}  # an old file's sample
    rows[5] = old
    data["data"]["train"] = _write_jsonl(tmp_path / "train.jsonl", rows)
    data["data"]["cutoff_len"] = 150
    with pytest.raises(UserError, match=r"train\.jsonl:6: the prompt needs \d+ tokens and no droppable"):
        train(recipe_from_dict(data))
    data["data"]["skip_overlong"] = True
    summary = train(recipe_from_dict(data))
    tok = load_tokenizer(tiny_llama, get_family("llama"))
    want = TruncationStats()
    for r in rows[:5] + rows[6:]:
        encode_train_example(tok, ALPACA, r, 150, stats=want)
    valid = make_tallrec_samples(24, seed=2)
    valid_dropped = [fit_prompt(tok, ALPACA, r, 150).dropped for r in valid]
    saved = json.loads((Path(summary["output_dir"]) / "train_summary.json").read_text())
    t = saved["truncation"]
    assert t["cutoff_len"] == 150
    assert t["train"]["shortened"] == want.shortened > 0 and t["train"]["skipped_overlong"] == 1
    assert t["train"]["items_dropped"] == want.items_dropped
    assert t["valid"]["shortened"] == sum(d > 0 for d in valid_dropped) > 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("warning:")]
    assert (
        len(lines) == 1 and "train:" in lines[0] and "valid:" in lines[0] and "1 samples skipped" in lines[0]
    )


@pytest.mark.parametrize("name", ["AdamW8bit", "PagedAdamW8bit"])
def test_bitsandbytes_optimizer_state_loads_with_weights_only(tmp_path, name):
    """The 8-bit optimizers train.optimizer offers on CUDA keep their quantization state as tensors too."""
    import bitsandbytes as bnb

    param = torch.nn.Parameter(torch.randn(4096, 64))
    optimizer = getattr(bnb.optim, name)([param], lr=1e-3)
    param.grad = torch.randn_like(param)
    optimizer.step()
    torch.save(optimizer.state_dict(), tmp_path / "optimizer.pt")
    loaded = torch.load(tmp_path / "optimizer.pt", weights_only=True)
    assert loaded["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]
    optimizer.load_state_dict(loaded)


def test_auto_micro_batch_resolves_prints_and_is_saved(tmp_path, tiny_llama, capsys):
    data = _recipe(tmp_path, tiny_llama, max_steps=1, eval_every=1, micro_batch_size="auto", batch_size=8)
    data["model"]["gradient_checkpointing"] = "auto"
    summary = train(recipe_from_dict(data))
    assert summary["steps"] == 1
    out = capsys.readouterr().out
    assert "auto: micro_batch_size=8 gradient_checkpointing=false" in out  # CPU: no checkpointing, at most 8
    saved = yaml.safe_load((Path(summary["output_dir"]) / "recipe.yaml").read_text())
    assert saved["train"]["micro_batch_size"] == 8 and saved["model"]["gradient_checkpointing"] is False


def test_resume_from_a_mismatched_trainer_state_is_refused(tmp_path, tiny_llama):
    train(recipe_from_dict(_recipe(tmp_path, tiny_llama, max_steps=1, eval_every=1)))
    state = tmp_path / "out" / "checkpoint-last" / "trainer_state.json"
    saved = json.loads(state.read_text())
    # the keys checkpoints have always had
    assert list(saved) == ["step", "epoch", "micro_in_epoch", "best_auc", "best_step", "bad_evals"]
    assert saved["step"] == saved["best_step"] == 1 and saved["best_auc"] is not None
    state.write_text(json.dumps({**saved, "epochs": 1}))
    with pytest.raises(
        UserError, match=r"trainer_state.json: unknown key 'epochs' \(did you mean 'epoch'\?\)"
    ):
        train(recipe_from_dict(_recipe(tmp_path, tiny_llama, max_steps=1, eval_every=1)))
