"""Check `llm4rec plan` against measured memory: real 4-bit QLoRA training steps on CPU.

For each configuration a random-weight LLaMA-architecture model of ~100-200 MB is saved locally, then a
fresh Python process trains it for a few optimizer steps with llm4rec's own training loop
(``llm4rec.train.loop.train``: 4-bit NF4 load through bitsandbytes, k-bit preparation, peft LoRA, AdamW)
and reports its peak resident memory above the baseline taken before the model was loaded. The planner's
``device="cpu"`` estimate for the same recipe is printed beside it.

How the measurement is taken: ``VmRSS`` after imports is the baseline; the peak RSS (``VmHWM``) is reset
after the weights are loaded (with ``malloc_trim`` so that loading leftovers do not count), so the
figure is the training step's peak, which is what the planner estimates. Every sample is longer than
``cutoff_len`` so each micro-batch is exactly micro_batch x cutoff tokens, the planner's worst case.
The child runs with glibc's mmap threshold fixed at 64 KiB (``MALLOC_MMAP_THRESHOLD_``), so a freed tensor
leaves RSS at once and RSS tracks live tensors, as the planner does. ``--default-malloc`` keeps glibc's
adaptive threshold instead: freed blocks up to 32 MiB then stay in the heap and the peak RSS is ~1.5x the
live-tensor peak (ckpt-qv: 921 MiB against 652 MiB), which is allocator retention, not tensors.

    OMP_NUM_THREADS=1 python scripts/validate_planner.py            # the full sweep (a few minutes)
    OMP_NUM_THREADS=1 python scripts/validate_planner.py --quick    # one small configuration
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing the package

#: model shape + training knobs per configuration; hidden 768 x 8 layers x 32k vocab is ~106M parameters
SWEEP: list[dict[str, Any]] = [
    dict(name="ckpt-qv", hidden=768, inter=2048, layers=8, heads=12, vocab=32000, mb=4, cutoff=256, ckpt=True, targets="qv"),
    dict(name="nockpt-qv", hidden=768, inter=2048, layers=8, heads=12, vocab=32000, mb=4, cutoff=256, ckpt=False, targets="qv"),
    dict(name="nockpt-all", hidden=768, inter=2048, layers=8, heads=12, vocab=32000, mb=4, cutoff=256, ckpt=False, targets="all"),
    dict(name="ckpt-all-bigvocab", hidden=512, inter=1408, layers=6, heads=8, vocab=152064, mb=2, cutoff=256, ckpt=True, targets="all"),
    dict(name="nockpt-qv-long", hidden=512, inter=1408, layers=8, heads=8, vocab=32000, mb=2, cutoff=768, ckpt=False, targets="qv"),
    # a small vocabulary, so the backward through one recomputed layer (not the loss) sets the peak
    dict(name="ckpt-all-smallvocab", hidden=768, inter=2048, layers=8, heads=12, vocab=8000, mb=4, cutoff=256, ckpt=True, targets="all"),
    # grouped key/value heads (as Qwen2): unpadded batches let SDPA skip repeating them, the plan does not
    dict(name="nockpt-all-gqa", hidden=768, inter=2048, layers=8, heads=12, kv_heads=4, vocab=32000, mb=4, cutoff=256, ckpt=False, targets="all"),
]  # fmt: skip
QUICK: list[dict[str, Any]] = [
    dict(name="quick-nockpt", hidden=256, inter=704, layers=4, heads=4, vocab=32000, mb=2, cutoff=128, ckpt=False, targets="all"),
]  # fmt: skip


def _status() -> dict[str, int]:
    """Resident-memory fields of /proc/self/status, in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(line.split()[1]) * 1024
    return out


def _reset_peak() -> None:
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS


def build_model(cfg: dict[str, Any], out: Path, seed: int = 0) -> None:
    """Save a random LLaMA-architecture model of ``cfg``'s shape and a small tokenizer to ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from llm4rec.models.tiny import train_tokenizer

    tok = train_tokenizer("llama", [], vocab_size=600)
    config = LlamaConfig(
        vocab_size=cfg["vocab"],
        hidden_size=cfg["hidden"],
        intermediate_size=cfg["inter"],
        num_hidden_layers=cfg["layers"],
        num_attention_heads=cfg["heads"],
        num_key_value_heads=cfg.get("kv_heads", cfg["heads"]),
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).to(torch.bfloat16)
    model.save_pretrained(out)
    tok.save_pretrained(out)


def write_samples(path: Path, n: int, words: int, seed: int = 0) -> None:
    """TALLRec-shaped samples whose input is long enough to be cut to ``cutoff_len`` tokens."""
    import random

    rng = random.Random(seed)
    vocab = ["user", "liked", "movie", "film", "comedy", "drama", "action", "horror", "target", "yes", "no"]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            # every word is a history item, so training drops the oldest ones to fit ``cutoff_len`` exactly
            items = [rng.choice(vocab) + str(rng.randrange(100)) for _ in range(words)]
            starts = [sum(len(w) + 1 for w in items[:k]) for k in range(words)]
            sample = {
                "instruction": "Will the user like the target movie?",
                "input": (text := " ".join(items)),
                "output": "Yes." if i % 2 else "No.",
                "label": i % 2,
                "history_spans": [
                    [s, s + len(w), min(s + len(w) + 1, len(text))] for s, w in zip(starts, items)
                ],
            }
            f.write(json.dumps(sample) + "\n")


def recipe_for(cfg: dict[str, Any], model_dir: Path, data: Path, out: Path, steps: int = 3) -> Any:
    """The training recipe of a configuration (CPU, fp32 compute, 4-bit NF4 base)."""
    from llm4rec.config import recipe_from_dict

    return recipe_from_dict(
        {
            "model": {
                "path": str(model_dir),
                "family": "llama",
                "template": "alpaca",
                "load_in_4bit": True,
                "compute_dtype": "float32",
                "gradient_checkpointing": cfg["ckpt"],
            },
            "lora": {"r": 8, "alpha": 16, "dropout": 0.05, "targets": cfg["targets"]},
            "data": {"train": str(data), "valid": "", "cutoff_len": cfg["cutoff"], "group_by_length": False},
            "train": {
                "output_dir": str(out),
                "max_steps": steps,
                "epochs": 1,
                "micro_batch_size": cfg["mb"],
                "batch_size": cfg["mb"],
                "warmup_steps": 1,
                "resume": "never",
            },
            "logging": {"progress_bar": False},
        }
    )


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Train in this (fresh) process and return its memory figures (run via ``--child``)."""
    import accelerate  # noqa: F401  - everything train() imports lands in the baseline, not the peak
    import bitsandbytes  # noqa: F401
    import peft  # noqa: F401
    import torch
    import transformers.models.llama.modeling_llama  # noqa: F401

    import llm4rec  # noqa: F401  - first: it quiets bitsandbytes' import-time notice
    import llm4rec.eval.metrics  # noqa: F401
    import llm4rec.eval.scoring  # noqa: F401
    import llm4rec.train.loop as loop

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    # warm up the allocator and autograd so their one-time buffers land in the baseline
    x = torch.randn(64, 64, requires_grad=True)
    (x @ x).sum().backward()
    del x
    recipe = recipe_for(
        spec["cfg"], Path(spec["model"]), Path(spec["data"]), Path(spec["out"]), spec["steps"]
    )
    _reset_peak()
    base = _status()
    loaded: dict[str, int] = {}
    original = loop.load_base_model

    def load_then_reset(*args: Any, **kwargs: Any) -> Any:
        model = original(*args, **kwargs)
        _reset_peak()
        loaded.update(_status())
        return model

    loop.load_base_model = load_then_reset
    try:
        summary = loop.train(recipe)
    finally:
        loop.load_base_model = original
    end = _status()
    return {
        "baseline_rss": base["VmRSS"],
        "loaded_rss": loaded["VmRSS"],
        "peak_rss": end["VmHWM"],
        "peak_delta": end["VmHWM"] - base["VmRSS"],
        "steps": summary["steps"],
        "status": {"baseline": base, "loaded": loaded, "end": end},
    }


def measure(
    cfg: dict[str, Any], workdir: Path, steps: int = 3, default_malloc: bool = False
) -> dict[str, Any]:
    """Build the model and data of ``cfg`` under ``workdir``, train it in a subprocess, and plan it."""
    from llm4rec.models.planner import plan_recipe

    model_dir = workdir / f"model-{cfg['name']}"
    if not (model_dir / "config.json").is_file():
        build_model(cfg, model_dir)
    data = workdir / f"train-{cfg['name']}.jsonl"
    write_samples(data, n=cfg["mb"] * steps, words=cfg["cutoff"])
    spec = {
        "cfg": cfg,
        "model": str(model_dir),
        "data": str(data),
        "out": str(workdir / f"run-{cfg['name']}"),
        "steps": steps,
    }
    env = dict(
        os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), TOKENIZERS_PARALLELISM="false"
    )
    # glibc's dynamic mmap threshold keeps freed tensor memory in the heap (RSS) and lets it fragment; a
    # fixed threshold returns every large tensor to the OS on free, so RSS tracks live tensors
    if not default_malloc:
        env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    measured = json.loads(lines[-1])
    plan = plan_recipe(recipe_for(cfg, model_dir, data, workdir / "unused"), gpu_gb=1e6, device="cpu")
    planned = plan.total_bytes
    static = sum(
        v
        for k, v in plan.parts.items()
        if k not in ("activations", "loss / backward peak", "LoRA gradients", "optimizer states")
    )
    return {
        "name": cfg["name"],
        "params": plan.params.total,
        "tokens": cfg["mb"] * cfg["cutoff"],
        "measured_peak": measured["peak_delta"],
        "planned_peak": planned,
        "ratio": measured["peak_delta"] / planned,
        "measured_after_load": measured["loaded_rss"] - measured["baseline_rss"],
        "planned_static": static,
        "parts": plan.parts,
        "status": measured["status"],
    }


def main(argv: list[str] | None = None) -> int:
    """Run the sweep (or ``--quick``) and print measured vs planned peak memory."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one small configuration (what the test runs)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument(
        "--default-malloc",
        action="store_true",
        help="keep glibc's dynamic mmap threshold (RSS then also holds freed memory)",
    )
    ap.add_argument("--only", help="run only the configuration of this name")
    ap.add_argument("--verbose", action="store_true", help="print the plan's parts and the RSS fields")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    rows = []
    mib = 2**20
    print(
        f"{'config':<20}{'params':>12}{'tokens':>8}{'measured MiB':>14}{'planned MiB':>13}{'ratio':>7}{'static meas/plan MiB':>24}"
    )
    with tempfile.TemporaryDirectory(prefix="llm4rec-validate-") as tmp:
        configs = QUICK if args.quick else SWEEP
        if args.only:
            configs = [c for c in SWEEP + QUICK if c["name"] == args.only]
        for cfg in configs:
            r = measure(cfg, Path(tmp), args.steps, args.default_malloc)
            rows.append(r)
            if args.verbose:
                print(json.dumps({k: r[k] for k in ("parts", "status")}, indent=1))
            print(
                f"{r['name']:<20}{r['params']:>12,}{r['tokens']:>8}{r['measured_peak'] / mib:>14.1f}"
                f"{r['planned_peak'] / mib:>13.1f}{r['ratio']:>7.3f}"
                f"{r['measured_after_load'] / mib:>12.1f} / {r['planned_static'] / mib:.1f}",
                flush=True,
            )
    if args.json:
        from llm4rec.io import write_json_atomic

        write_json_atomic(args.json, rows)
    worst = max(abs(r["ratio"] - 1) for r in rows)
    print(f"largest deviation: {worst:.1%} (target: within 20%)")
    return 0 if worst <= 0.2 else 1


if __name__ == "__main__":
    raise SystemExit(main())
