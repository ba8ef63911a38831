"""Training throughput, side by side in one process: llm4rec's loop against TALLRec's recipe.

    python scripts/bench_train.py                 # CPU: tiny LLaMA, LLaMA-7B tokenizer (~5 min on 2 cores)
    python scripts/bench_train.py --model DIR --data train.jsonl --micro 8 --batch 128 --steps 3

Contenders, on the same 4-bit NF4 base, the same samples in the same order of the file, LoRA r=8 / alpha 16
/ dropout 0.05 on q_proj and v_proj, lr 1e-4, the same micro-batch and effective batch:

* ``trainer``: TALLRec's ``finetune_rec.py`` recipe: HF ``Trainer`` + ``DataCollatorForSeq2Seq`` (left
  padding to a multiple of 8, random order), ``prepare_model_for_kbit_training`` with gradient
  checkpointing, the loss from the model's full ``[batch, seq, vocab]`` logits;
* ``llm4rec``: ``llm4rec.train.loop.train`` with the same micro-batch and checkpointing on, padded
  length-grouped micro-batches (``data.packing: false``);
* ``llm4rec-packed``: the same, each micro-batch packed into one row with no padding (``data.packing:
  true``, what ``auto`` picks for LLaMA and Qwen2);
* ``llm4rec-bf16``: ``llm4rec`` with ``train.bf16_autocast: true``, the forward under bf16 autocast as
  the Trainer runs it on CUDA (``bf16=True``); on by request only (``--only``), the memory plan is
  calibrated without it;
* ``llm4rec-auto``: the shipped 7B recipes' default, ``micro_batch_size: auto`` and
  ``gradient_checkpointing: auto``, planned for ``--auto-memory-gb`` (24 on CUDA: the card the recipes
  target, whatever card runs the bench).

Both run with ``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`` (what llm4rec's loop sets). Each
reports seconds per optimizer step (mean over steps 2..N; step 1 warms up), samples per second and peak
memory (CUDA: torch's allocated / reserved and the card's used memory as nvidia-smi reports it, through
NVML; CPU: peak RSS above the baseline, weights loading included), and llm4rec's plan of its own peak
beside it, and the share of the tokens fed to the model that were padding. Ratios are against ``trainer``.
With ``--json`` the results are also written to a file.

Setup: ``--model`` is a local checkpoint; without it a tiny LLaMA (hidden 256, 4 layers) is built under
``--work`` with the real LLaMA-7B tokenizer from ``../shared/models/llama-7b`` (32,000 tokens, so the
output head and loss cost what they cost at 7B scale relative to the vocabulary). ``--data`` is a TALLRec
train JSONL; without it TALLRec's ML-100K samples are prepared from ``../shared/data/ml-100k``.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# both contenders run under the allocator setting llm4rec's loop uses (it must be set before CUDA starts);
# without it, batches of varying length make torch reserve ~2x what it uses (docs/benchmarks.md)
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARED = REPO.parent / "shared"
GIB = 2**30
ALPACA = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n"
    "### Input:\n{input}\n\n### Response:\n"
)


# ------------------------------------------------------------------------------------------------ memory


class PeakMemory:
    """Peak memory of a block: torch CUDA allocated/reserved + nvidia-smi polled, or the process's peak RSS."""

    def __init__(self) -> None:
        self.cuda = torch.cuda.is_available()
        self.smi_peak_mib = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _poll(self) -> None:
        # NVML in-process: a subprocess per sample would compete with the training loop for the GIL
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        while not self._stop.is_set():
            used = pynvml.nvmlDeviceGetMemoryInfo(handle).used // 2**20
            self.smi_peak_mib = max(self.smi_peak_mib, used)
            self._stop.wait(0.1)

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            if importlib.util.find_spec("pynvml") is not None:
                self._thread = threading.Thread(target=self._poll, daemon=True)
                self._thread.start()
        else:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            self.base = _status()["VmRSS"]
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.cuda:
            self.result = {
                "allocated_gib": round(torch.cuda.max_memory_allocated() / GIB, 2),
                "reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 2),
                "nvidia_smi_gib": round(self.smi_peak_mib / 1024, 2) if self.smi_peak_mib else None,
            }
        else:
            self.result = {"peak_rss_gib": round((_status()["VmHWM"] - self.base) / GIB, 3)}


def _status() -> dict[str, int]:
    with open("/proc/self/status") as f:
        return {ln.split(":")[0]: int(ln.split()[1]) * 1024 for ln in f if ln.startswith(("VmRSS", "VmHWM"))}


# ------------------------------------------------------------------------------------------------ setup


def build_tiny(work: Path, tokenizer: Path) -> Path:
    """A tiny random LLaMA carrying the real 32k LLaMA-7B tokenizer (cached under ``work``)."""
    from llm4rec.models.tiny import build_tiny_model

    out = work / "tiny-llama-32k"
    if not (out / "config.json").is_file():
        if not tokenizer.is_dir():
            raise SystemExit(f"error: {tokenizer} not found; pass --model DIR or --tokenizer DIR")
        build_tiny_model("llama", out, tokenizer_from=tokenizer, hidden_size=256, layers=4)
    return out


def default_data(work: Path) -> Path:
    """TALLRec's ML-100K train samples as llm4rec's data prep writes them (cached under ``work``)."""
    from llm4rec.data.prep import main as prep

    out = work / "ml100k"
    if not (out / "tallrec" / "train.jsonl").is_file():
        src = SHARED / "data" / "ml-100k"
        if not src.is_dir():
            raise SystemExit(f"error: {src} not found; pass --data train.jsonl")
        prep(["--src", str(src), "--out", str(out), "--task", "tallrec", "--preset", "tallrec"])
    return out / "tallrec" / "train.jsonl"


# ------------------------------------------------------------------------------------------------ contenders


def run_trainer(model_dir: Path, rows: list[dict], args: argparse.Namespace) -> dict[str, Any]:
    """TALLRec's finetune_rec.py: HF Trainer + DataCollatorForSeq2Seq on the same 4-bit base and LoRA."""
    import transformers
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, DataCollatorForSeq2Seq

    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.pad_token_id = 0
    tok.padding_side = "left"
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )
    model = AutoModelForCausalLM.from_pretrained(
        model_dir,
        quantization_config=quant,
        dtype=dtype,
        device_map={"": 0} if cuda else "cpu",
        attn_implementation="sdpa" if args.attn == "auto" else args.attn,
    )
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"], bias="none",
                      task_type="CAUSAL_LM")  # fmt: skip
    model = get_peft_model(model, lora)

    def encode(r: dict) -> dict:
        user = ALPACA.format(**r)
        ids = tok(user + r["output"], truncation=True, max_length=args.cutoff)["input_ids"]
        if ids[-1] != tok.eos_token_id and len(ids) < args.cutoff:
            ids = ids + [tok.eos_token_id]
        n_user = len(tok(user, truncation=True, max_length=args.cutoff)["input_ids"])
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [-100] * n_user + ids[n_user:]}

    times: list[float] = []

    class StepTimes(transformers.TrainerCallback):
        def on_step_end(self, *_a: Any, **_k: Any) -> None:
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter())

    targs = transformers.TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="bench-trainer-"),
        per_device_train_batch_size=args.micro,
        gradient_accumulation_steps=args.batch // args.micro,
        warmup_steps=20,
        max_steps=args.steps,
        learning_rate=1e-4,
        bf16=cuda,
        logging_steps=1,
        optim="adamw_torch",
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        seed=args.seed,
        use_cpu=not cuda,
    )
    collator = DataCollatorForSeq2Seq(tok, pad_to_multiple_of=8, return_tensors="pt", padding=True)
    fed = [0, 0]  # tokens fed, of which real

    def counting_collator(features: list[dict]) -> dict:
        batch = collator(features)
        fed[0] += batch["input_ids"].numel()
        fed[1] += int(batch["attention_mask"].sum())
        return batch

    trainer = transformers.Trainer(
        model=model,
        args=targs,
        train_dataset=[encode(r) for r in rows],
        callbacks=[StepTimes()],
        data_collator=counting_collator,
    )
    start = time.perf_counter()
    trainer.train()
    result = {
        "step_times": [b - a for a, b in zip([start, *times], times, strict=False)],
        "padding_fraction": round(1 - fed[1] / fed[0], 4),
    }
    del trainer, model
    return result


def run_llm4rec(
    model_dir: Path,
    data: Path,
    work: Path,
    args: argparse.Namespace,
    auto: bool,
    packing: bool | str,
    bf16_autocast: bool = False,
) -> dict[str, Any]:
    """llm4rec's own loop; ``auto`` leaves the micro-batch and checkpointing to the planner, ``packing``
    is ``data.packing``, ``bf16_autocast`` is ``train.bf16_autocast``."""
    from llm4rec.config import recipe_from_dict
    from llm4rec.train.loop import train

    out = work / (
        "run-auto" if auto else "run-packed" if packing is True else "run-bf16" if bf16_autocast else "run"
    )
    shutil.rmtree(out, ignore_errors=True)
    recipe = recipe_from_dict(
        {
            "model": {"path": str(model_dir), "family": "llama", "template": "alpaca",
                      "attn_implementation": args.attn,
                      "gradient_checkpointing": "auto" if auto else True},
            "lora": {"r": 8, "alpha": 16, "dropout": 0.05, "targets": "qv"},
            "data": {"train": str(data), "valid": "", "cutoff_len": args.cutoff, "packing": packing},
            "train": {"output_dir": str(out), "max_steps": args.steps, "epochs": 1,
                      "micro_batch_size": "auto" if auto else args.micro, "batch_size": args.batch,
                      "learning_rate": 1e-4, "warmup_steps": 20, "resume": "never", "seed": args.seed,
                      "auto_memory_gb": args.auto_memory_gb, "bf16_autocast": bf16_autocast},
            "logging": {"progress_bar": False},
        }
    )  # fmt: skip
    train(recipe)
    records = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    elapsed = [r["elapsed_s"] for r in records if "loss" in r]
    saved = (out / "recipe.yaml").read_text()
    import yaml

    resolved = yaml.safe_load(saved)
    return {
        "step_times": [b - a for a, b in zip([0.0, *elapsed], elapsed, strict=False)],
        "micro_batch_size": resolved["train"]["micro_batch_size"],
        "gradient_checkpointing": resolved["model"]["gradient_checkpointing"],
        "recipe": resolved,
    }


def llm4rec_padding(resolved: dict, lengths: list[int], seed: int) -> float:
    """Padding share of llm4rec's micro-batches over the first epoch (the bench runs at most one)."""
    from llm4rec.data.tokenize import length_grouped_batches
    from llm4rec.train.packing import padding_fraction

    d, packing = resolved["data"], resolved["data"]["packing"]
    micro = resolved["train"]["micro_batch_size"]
    batches = list(length_grouped_batches(lengths, micro, seed, d["group_by_length"] and not packing))
    return round(padding_fraction(lengths, batches, packing), 4)


def plan_of(resolved: dict, lengths: list[int], device: str) -> float:
    """llm4rec's expected peak (nvidia-smi on CUDA, RSS on CPU) for the resolved recipe and this data."""
    from llm4rec.config import recipe_from_dict
    from llm4rec.models.planner import plan_recipe

    recipe = recipe_from_dict(resolved)
    spread = 1.0 - min(lengths) / max(lengths)
    return plan_recipe(recipe, gpu_gb=1e6, device=device, seq_len=max(lengths), shape_spread=spread).total_gb


def main(argv: list[str] | None = None) -> int:
    """Run the contenders one after the other in this process and print their throughput and memory."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cuda = torch.cuda.is_available()
    ap.add_argument(
        "--model", type=Path, help="local checkpoint (default: a tiny LLaMA with a 32k vocabulary)"
    )
    ap.add_argument("--tokenizer", type=Path, default=SHARED / "models" / "llama-7b")
    ap.add_argument("--data", type=Path, help="TALLRec train JSONL (default: ML-100K from ../shared)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "llm4rec-bench-train")
    ap.add_argument("--micro", type=int, default=8 if cuda else 4)
    ap.add_argument("--batch", type=int, default=128 if cuda else 8)
    ap.add_argument("--steps", type=int, default=4 if cuda else 3)
    ap.add_argument("--cutoff", type=int, default=512)
    ap.add_argument("--auto-memory-gb", type=float, default=24.0 if cuda else 0.0)
    ap.add_argument(
        "--only", help="comma-separated contenders (trainer,llm4rec,llm4rec-packed,llm4rec-auto,llm4rec-bf16)"
    )
    ap.add_argument(
        "--attn",
        default="auto",
        choices=["auto", "sdpa", "eager", "flash_attention_2"],
        help="attention of every contender (model.attn_implementation; flash_attention_2 needs flash-attn)",
    )
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.steps < 2:
        ap.error("--steps must be at least 2 (step 1 is warm-up)")
    args.work.mkdir(parents=True, exist_ok=True)
    model_dir = args.model or build_tiny(args.work, args.tokenizer)
    data = args.data or default_data(args.work)
    rows = [json.loads(ln) for ln in data.read_text().splitlines() if ln.strip()]
    rows = rows[: args.batch * args.steps]
    subset = args.work / "bench_train.jsonl"
    subset.write_text("".join(json.dumps(r) + "\n" for r in rows))

    from llm4rec.config import ModelConfig
    from llm4rec.models.backbone import resolve_backbone

    model_cfg = ModelConfig(path=str(model_dir), family="llama", template="alpaca")
    bb = resolve_backbone(model_cfg, cutoff_len=args.cutoff, device="cpu")
    lengths = [len(bb.encode_train(r).input_ids) for r in rows]
    device = "cuda" if cuda else "cpu"
    print(
        f"device {torch.cuda.get_device_name(0) if cuda else 'cpu'}; model {model_dir}; {len(rows)} samples "
        f"({min(lengths)}-{max(lengths)} tokens, mean {sum(lengths) / len(lengths):.0f}); micro {args.micro}, "
        f"batch {args.batch}, {args.steps} steps",
        flush=True,
    )
    wanted = (args.only or "trainer,llm4rec,llm4rec-packed,llm4rec-auto").split(",")
    results: dict[str, dict[str, Any]] = {}
    for name in wanted:
        with PeakMemory() as mem:
            if name == "trainer":
                r = run_trainer(model_dir, rows, args)
            elif name in ("llm4rec", "llm4rec-packed", "llm4rec-auto", "llm4rec-bf16"):
                packing = {"llm4rec": False, "llm4rec-packed": True, "llm4rec-bf16": False}.get(name, "auto")
                bf16 = name == "llm4rec-bf16"
                r = run_llm4rec(model_dir, subset, args.work, args, name == "llm4rec-auto", packing, bf16)
            else:
                ap.error(f"--only: unknown contender {name!r}")
        r.update(mem.result)
        steady = r["step_times"][1:]
        r["sec_per_step"] = sum(steady) / len(steady)
        r["samples_per_s"] = args.batch / r["sec_per_step"]
        if "recipe" in r:
            r["padding_fraction"] = llm4rec_padding(r["recipe"], lengths, args.seed)
            r["packing"] = r["recipe"]["data"]["packing"]
            r["planned_peak_gib"] = round(plan_of(r.pop("recipe"), lengths, device), 2)
        results[name] = r
        gc.collect()
        print(f"RESULT {json.dumps({'contender': name, **r})}", flush=True)

    base = results.get("trainer")
    padded = results.get("llm4rec")
    print(
        f"\n{'contender':<15}{'micro':>6}{'ckpt':>6}{'padding':>9}{'s/step':>9}{'samples/s':>11}"
        f"{'x trainer':>10}{'x llm4rec':>10}  peak memory"
    )
    for name, r in results.items():
        ratio = f"{r['samples_per_s'] / base['samples_per_s']:.2f}" if base else "-"
        vs_padded = f"{r['samples_per_s'] / padded['samples_per_s']:.2f}" if padded else "-"
        micro = r.get("micro_batch_size", args.micro)
        ckpt = "on" if r.get("gradient_checkpointing", True) else "off"
        mem = ", ".join(f"{k} {v}" for k, v in r.items() if k.endswith("_gib") and v is not None)
        print(
            f"{name:<15}{micro:>6}{ckpt:>6}{r['padding_fraction']:>9.1%}{r['sec_per_step']:>9.3f}"
            f"{r['samples_per_s']:>11.2f}{ratio:>10}{vs_padded:>10}  {mem}"
        )
    if args.json:
        from llm4rec.io import write_json_atomic

        write_json_atomic(args.json, {"args": {k: str(v) for k, v in vars(args).items()}, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
