"""The training loop, top to bottom: setup, train, validate, save. No callbacks, no inheritance.

``train(recipe)`` fine-tunes a LoRA adapter on a (4-bit) base with accelerate. The output directory
holds the best adapter (by validation AUC), the tokenizer, the resolved recipe, ``metrics.jsonl`` and
``checkpoint-last/`` for resuming after an interruption.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from llm4rec.config import Recipe, save_recipe
from llm4rec.data.tokenize import OverlongPrompt, TruncationStats, collate, length_grouped_batches
from llm4rec.errors import UserError
from llm4rec.eval.task_check import file_task
from llm4rec.io import (
    atomic_dir,
    disk_full_names,
    follow_umask,
    line_numbers,
    read_jsonl,
    require_writable,
    write_json_atomic,
)
from llm4rec.models.backbone import Backbone, device_capability, resolve_backbone, settle_recipe
from llm4rec.models.loading import load_base_model, save_tokenizer
from llm4rec.run_lock import locked
from llm4rec.safetensors_check import check_adapter_dir
from llm4rec.train.fingerprint import check_resume, write_fingerprint
from llm4rec.train.loss import effective_batch_tokens, head_inputs, loss_sum
from llm4rec.train.packing import pack, resolve_packing
from llm4rec.train.state import TrainState

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def _set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _rng_state() -> dict[str, Any]:
    """Every generator's state as tensors and plain values, so it loads with ``weights_only=True``."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "mt": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _load_rng_state(state: dict[str, Any]) -> None:
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["mt"].tolist()), py["gauss"]))
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_resume_state(ckpt: Path, optimizer: Any, scheduler: Any) -> None:
    """Optimizer, scheduler and RNG state, none of it a pickle of arbitrary objects (see _load_resume_state)."""
    torch.save(optimizer.state_dict(), ckpt / "optimizer.pt")
    write_json_atomic(ckpt / "scheduler.json", scheduler.state_dict())
    torch.save(_rng_state(), ckpt / "rng.pt")


def _load_resume_state(ckpt: Path, optimizer: Any, scheduler: Any) -> None:
    """Restore what _save_resume_state wrote; ``weights_only=True`` means a shared checkpoint runs no code."""
    if not (ckpt / "scheduler.json").is_file():
        raise UserError(
            f"{ckpt}: no scheduler.json (a checkpoint from an older llm4rec, with pickled state that is not "
            "loaded for safety); start a fresh run or set train.resume: never"
        )
    try:
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
        rng = torch.load(ckpt / "rng.pt", weights_only=True)
    except Exception as exc:  # an unsafe or truncated pickle
        raise UserError(f"{ckpt}: cannot load the resume state ({str(exc).splitlines()[0]})") from None
    scheduler.load_state_dict(json.loads((ckpt / "scheduler.json").read_text()))
    _load_rng_state(rng)


def _lr_lambda(kind: str, warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 1.0 - progress if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def _make_optimizer(name: str, params: list[torch.nn.Parameter], lr: float, weight_decay: float):
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if not torch.cuda.is_available():
        raise UserError(f"train.optimizer: {name!r} needs bitsandbytes on CUDA; use 'adamw' on CPU")
    import bitsandbytes as bnb

    cls = bnb.optim.PagedAdamW8bit if name == "paged_adamw_8bit" else bnb.optim.AdamW8bit
    return cls(params, lr=lr, weight_decay=weight_decay)


def _append_metrics(path: Path, record: dict[str, Any]) -> None:
    with disk_full_names(path), open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop records written after the checkpoint so the log has no duplicated steps."""
    if not path.is_file():
        return
    keep = [
        ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step
    ]
    path.write_text("".join(k + "\n" for k in keep))


def _save_adapter(model: Any, out: Path) -> None:
    """Write the adapter files into ``out`` through a temporary directory (never half-written)."""
    tmp = out / ".adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with disk_full_names(out / ADAPTER_FILES[0]):
            model.save_pretrained(str(tmp))
            # safetensors writes 0600: other users of a shared server could not load the adapter
            follow_umask(tmp)
            for name in ADAPTER_FILES:
                os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _find_resume(recipe: Recipe) -> Path | None:
    mode = recipe.train.resume
    if mode == "never":
        return None
    if mode == "auto":
        ckpt = Path(recipe.train.output_dir) / "checkpoint-last"
        return ckpt if (ckpt / "trainer_state.json").is_file() else None
    ckpt = Path(mode)
    if not (ckpt / "trainer_state.json").is_file():
        raise UserError(f"train.resume: {ckpt} is not a checkpoint directory (no trainer_state.json)")
    return ckpt


def _memory_budget_gb(recipe: Recipe, device: torch.device) -> float:
    """What ``auto`` settings may plan for: ``train.auto_memory_gb``, else the card's free memory plus the
    CUDA context (the plan counts it, and it is already taken), else on CPU half the available RAM."""
    from llm4rec.models.planner import CUDA_CONTEXT_BYTES, GIB

    if recipe.train.auto_memory_gb:
        return recipe.train.auto_memory_gb
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return (free + CUDA_CONTEXT_BYTES) / GIB
    with open("/proc/meminfo", encoding="ascii") as f:
        avail = next((int(ln.split()[1]) * 1024 for ln in f if ln.startswith("MemAvailable:")), 8 * GIB)
    return avail / 2 / GIB


def _resolve_memory_settings(
    recipe: Recipe, backbone: Backbone, lengths: list[int], world: int, accelerator: Any
) -> Recipe:
    """Resolve ``auto`` micro-batch / checkpointing from the plan of this data on this device, print the
    choice; on CUDA print the plan's expected peak and warn when it does not fit. Never blocks training
    except through a wrong recipe."""
    from llm4rec.models.planner import choose_auto, has_auto, plan_recipe, resolve_auto

    device = accelerator.device
    kind = "cuda" if device.type == "cuda" else "cpu"
    seq_len = max(lengths)
    # lengths that vary make the allocator cache blocks later micro-batches cannot reuse
    spread = 1.0 - min(lengths) / seq_len
    budget = _memory_budget_gb(recipe, device) if kind == "cuda" or has_auto(recipe) else 0.0
    saved = Path(recipe.train.output_dir) / "recipe.yaml"
    if has_auto(recipe) and _find_resume(recipe) is not None and saved.is_file():
        # a resumed run keeps the micro-batch it started with: its position in the epoch counts them
        from llm4rec.config import load_recipe

        before = load_recipe(saved)
        model = dataclasses.replace(recipe.model, gradient_checkpointing=before.model.gradient_checkpointing)
        train = dataclasses.replace(recipe.train, micro_batch_size=before.train.micro_batch_size)
        recipe = dataclasses.replace(recipe, model=model, train=train)
        accelerator.print(
            f"auto: micro_batch_size={recipe.train.micro_batch_size} gradient_checkpointing="
            f"{str(recipe.model.gradient_checkpointing).lower()} (as chosen when this run started)"
        )
    elif has_auto(recipe):
        choice = choose_auto(
            recipe,
            budget,
            kind,
            world,
            seq_len,
            spread,
            backbone=backbone,
            capability=device_capability(device),
        )
        recipe = resolve_auto(recipe, choice)
        accelerator.print(choice.line())
    if kind == "cuda":
        try:  # warn, never fail: the plan is an estimate
            plan = plan_recipe(
                recipe, gpu_gb=budget, seq_len=seq_len, shape_spread=spread, backbone=backbone,
                capability=device_capability(device),
            )  # fmt: skip
            accelerator.print(
                f"expected nvidia-smi peak: {plan.total_gb:.2f} GiB (longest sample {seq_len} tokens)"
            )
            if not plan.fits:
                accelerator.print(
                    f"warning: that is more than the {budget:.1f} GiB free; " + "; ".join(plan.advice)
                )
        except Exception as exc:  # noqa: BLE001 - the planner must never block training
            accelerator.print(f"note: memory planner unavailable ({exc})")
    return recipe


@dataclasses.dataclass
class _Data:
    """The encoded training examples and the validation rows that fit data.cutoff_len."""

    examples: list[Any]
    lengths: list[int]
    valid_rows: list[dict[str, Any]]
    valid_src: list[str]
    valid_labels: list[int]
    truncation: dict[str, TruncationStats]


@dataclasses.dataclass
class _Run:
    """What the steps of one run share; ``state`` is what ``checkpoint-last`` saves and resume restores."""

    recipe: Recipe
    accelerator: Any
    backbone: Backbone
    data: _Data
    model: Any
    optimizer: Any
    scheduler: Any
    params: list[torch.nn.Parameter]
    out: Path
    state: TrainState
    wandb_run: Any = None

    @property
    def metrics_path(self) -> Path:
        return self.out / "metrics.jsonl"


def train(recipe: Recipe) -> dict[str, Any]:
    """Fine-tune a LoRA adapter as the recipe says; return a summary (best AUC, steps, output dir).

    The output directory is checked to be writable before anything loads, and locked for the run (the
    main process holds the lock: see :mod:`llm4rec.run_lock`)."""
    require_writable(recipe.train.output_dir, "train.output_dir")
    with locked(recipe.train.output_dir, enabled=os.environ.get("RANK", "0") == "0"):
        return _train(recipe)


def _train(recipe: Recipe) -> dict[str, Any]:
    # ---------------------------------------------------------------- setup
    accelerator = _setup_accelerator()
    world = accelerator.num_processes
    _set_seed(recipe.train.seed)
    backbone, recipe = _setup_backbone(recipe, accelerator.device)
    data = _setup_data(recipe, backbone, accelerator)
    recipe = _resolve_memory_settings(recipe, backbone, data.lengths, world, accelerator)
    t, d = recipe.train, recipe.data
    accum = _accumulation_steps(t, world)
    check_resume(recipe, _find_resume(recipe), world, backbone.config)
    model, resume_dir = _setup_model(recipe, backbone, accelerator)
    micro_per_epoch = math.ceil(len(data.examples) / (t.micro_batch_size * world))
    steps_per_epoch = max(1, math.ceil(micro_per_epoch / accum))
    total_steps = t.max_steps or math.ceil(steps_per_epoch * t.epochs)
    params, optimizer, scheduler = _setup_optimizer(t, model, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    eval_every = t.eval_every or steps_per_epoch
    save_every = t.save_every or eval_every
    state = TrainState()
    run = _Run(
        recipe, accelerator, backbone, data, model, optimizer, scheduler, params,
        Path(t.output_dir), state,
    )  # fmt: skip
    _start_outputs(run, resume_dir)

    # ---------------------------------------------------------------- train
    model.train()
    bar = _progress_bar(run, total_steps)
    # a packed micro-batch has no padding to save: plain shuffled batches keep the order random and the
    # rows' lengths alike (the allocator then reuses its blocks)
    grouped = d.group_by_length and not d.packing
    t0 = time.time()
    running, n_running, window_tokens = 0.0, 0, 1
    stop = run.state.step >= total_steps
    while not stop:
        batches = list(
            length_grouped_batches(
                data.lengths, t.micro_batch_size * world, t.seed + run.state.epoch, grouped
            )
        )
        for i in range(run.state.micro_in_epoch, len(batches)):
            batch = _micro_batch(run, batches[i])
            if n_running == 0:  # a new optimizer step: count its labelled tokens over every process
                window_tokens = max(1, effective_batch_tokens(data.examples, batches[i : i + accum]))
            with torch.autocast(accelerator.device.type, torch.bfloat16, enabled=t.bf16_autocast):
                part = loss_sum(model, batch) / window_tokens
            # DDP averages gradients over processes; each holds its shard's sum over the global count
            accelerator.backward(part * world)
            running += part.detach()
            n_running += 1
            run.state.micro_in_epoch = i + 1
            if n_running < accum and i + 1 < len(batches):
                continue
            step_loss = _optimizer_step(run, running)
            running, n_running = 0.0, 0
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}", best_auc=run.state.best_auc)
            if run.state.step % recipe.logging.log_every == 0:
                _log_step(run, (i + 1) / len(batches), step_loss, t0)
            done = run.state.step >= total_steps
            if run.state.step % eval_every == 0 or done:
                done = _validate_and_keep_best(run) or done
            if run.state.step % save_every == 0 or done:
                _save_checkpoint(run)
            if done:
                stop = True
                break
        else:
            run.state.epoch += 1
            run.state.micro_in_epoch = 0
    bar.close()

    # ---------------------------------------------------------------- save
    return _finish(run, t0)


def _accumulation_steps(t: Any, world: int) -> int:
    """Micro-batches per optimizer step on each process."""
    if t.batch_size % (t.micro_batch_size * world):
        raise UserError(
            f"train.batch_size: {t.batch_size} is not a multiple of micro_batch_size x processes "
            f"({t.micro_batch_size} x {world})"
        )
    return t.batch_size // (t.micro_batch_size * world)


def _setup_optimizer(t: Any, model: Any, total_steps: int) -> tuple[list[torch.nn.Parameter], Any, Any]:
    """The trainable parameters, their optimizer and the learning-rate schedule over ``total_steps``."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _make_optimizer(t.optimizer, params, t.learning_rate, t.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(t.lr_scheduler, min(t.warmup_steps, total_steps), total_steps)
    )
    return params, optimizer, scheduler


def _setup_accelerator() -> Any:
    from accelerate import Accelerator

    if torch.cuda.is_available() and "PYTORCH_CUDA_ALLOC_CONF" not in os.environ:
        # micro-batches of different lengths leave cached blocks that later shapes cannot reuse, so torch
        # reserves far more than it uses (2.2x on an H200, docs/benchmarks.md); growable segments avoid that
        torch.cuda.memory._set_allocator_settings("expandable_segments:True")
    return Accelerator(cpu=not torch.cuda.is_available())


def _setup_backbone(recipe: Recipe, device: torch.device) -> tuple[Backbone, Recipe]:
    """The recipe's backbone, resolved once for this device, and the recipe with every ``auto`` of its
    model section and ``data.packing`` settled (what ``recipe.yaml`` then records)."""
    backbone = resolve_backbone(recipe.model, cutoff_len=recipe.data.cutoff_len, device=device)
    return backbone, resolve_packing(settle_recipe(recipe, backbone), backbone.family)


def _setup_data(recipe: Recipe, backbone: Backbone, accelerator: Any) -> _Data:
    """Read and encode the training rows, fit the validation rows; warn once about what was truncated."""
    d, seed = recipe.data, recipe.train.seed
    train_rows = read_jsonl(d.train, required=("instruction", "input", "output"))
    valid_rows = read_jsonl(d.valid, required=("instruction", "input", "label")) if d.valid else []
    valid_src = [f"{d.valid}:{n}" for n in line_numbers(d.valid)] if d.valid else []
    if d.max_valid_samples and len(valid_rows) > d.max_valid_samples:
        picked = random.Random(seed).sample(range(len(valid_rows)), d.max_valid_samples)
        valid_rows, valid_src = [valid_rows[i] for i in picked], [valid_src[i] for i in picked]
    # fail early (before loading weights) when the answers cannot be scored with this tokenizer
    backbone.answer_token_ids(train_rows[0])
    # one truncation rule for training and validation: whole history items go, oldest first
    truncation = {"train": TruncationStats(), "valid": TruncationStats()}
    examples = []
    for r, n in zip(train_rows, line_numbers(d.train)):
        try:
            examples.append(
                backbone.encode_train(r, d.train_on_inputs, where=f"{d.train}:{n}", stats=truncation["train"])
            )
        except OverlongPrompt as exc:
            if not d.skip_overlong:
                raise UserError(f"{exc}; raise data.cutoff_len or set data.skip_overlong") from None
            truncation["train"].skipped += 1
    if not examples:
        raise UserError(
            f"{d.train}: every sample is over data.cutoff_len {d.cutoff_len} even without history"
        )
    kept_valid = []
    for i, r in enumerate(valid_rows):
        try:
            truncation["valid"].add(backbone.encode_prompt(r, valid_src[i]).dropped)
            kept_valid.append(i)
        except OverlongPrompt as exc:
            if not d.skip_overlong:
                raise UserError(f"{exc}; raise data.cutoff_len or set data.skip_overlong") from None
            truncation["valid"].skipped += 1
    valid_rows, valid_src = [valid_rows[i] for i in kept_valid], [valid_src[i] for i in kept_valid]
    warnings_ = [w for k, v in truncation.items() if (w := v.warning(k, d.cutoff_len))]
    if warnings_:
        accelerator.print("warning: " + "; ".join(w.removeprefix("warning: ") for w in warnings_))
    lengths = [len(e.input_ids) for e in examples]
    valid_labels = [int(r["label"]) for r in valid_rows]
    return _Data(examples, lengths, valid_rows, valid_src, valid_labels, truncation)


def _setup_model(recipe: Recipe, backbone: Backbone, accelerator: Any) -> tuple[Any, Path | None]:
    """The base model prepared for (k-bit) training with its LoRA adapter: new, or the one to resume."""
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

    m = recipe.model
    model = load_base_model(backbone, device=accelerator.device)
    model.config.use_cache = False
    if m.load_in_4bit:
        # non-reentrant checkpointing: torch's recommended mode, and the one that works with frozen inputs
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=m.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif m.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    resume_dir = _find_resume(recipe)
    if resume_dir is not None:
        check_adapter_dir(resume_dir, model, backbone.weights)
        return PeftModel.from_pretrained(model, str(resume_dir), is_trainable=True), resume_dir
    lora = LoraConfig(
        r=recipe.lora.r,
        lora_alpha=recipe.lora.alpha,
        lora_dropout=recipe.lora.dropout,
        target_modules=backbone.family.targets(recipe.lora.targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, lora), None
    except ValueError as exc:
        raise UserError(f"lora.targets: {str(exc).splitlines()[0]}") from None


def _start_outputs(run: _Run, resume_dir: Path | None) -> None:
    """Write recipe, tokenizer and llm4rec.json; restore the state to resume from; open wandb."""
    accelerator, out, recipe = run.accelerator, run.out, run.recipe
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_recipe(recipe, out / "recipe.yaml")
        save_tokenizer(run.backbone.tokenizer, out)
        write_json_atomic(
            out / "llm4rec.json", {**run.backbone.to_record(), "task": file_task(recipe.data.train)}
        )
    if resume_dir is not None:
        run.state = TrainState.load(resume_dir / "trainer_state.json")
        _load_resume_state(resume_dir, run.optimizer, run.scheduler)
        if accelerator.is_main_process:
            _truncate_metrics(run.metrics_path, run.state.step)
        accelerator.print(f"resumed from {resume_dir} at step {run.state.step}")
    elif accelerator.is_main_process and run.metrics_path.exists():
        run.metrics_path.unlink()
    if recipe.logging.wandb.mode != "disabled" and accelerator.is_main_process:
        import wandb

        run.wandb_run = wandb.init(
            mode=recipe.logging.wandb.mode,
            project=recipe.logging.wandb.project,
            name=recipe.logging.wandb.name or out.name,
            config=recipe.to_dict(),
            dir=str(out),
            resume="allow",
        )


def _progress_bar(run: _Run, total_steps: int) -> tqdm:
    return tqdm(
        total=total_steps,
        initial=run.state.step,
        desc="train",
        unit="step",
        disable=not (run.recipe.logging.progress_bar and run.accelerator.is_local_main_process),
    )


def _micro_batch(run: _Run, indices: list[int]) -> dict[str, torch.Tensor]:
    """This process's share of one micro-batch, collated and on its device."""
    accelerator, world = run.accelerator, run.accelerator.num_processes
    shard = [run.data.examples[j] for j in indices[accelerator.process_index :: world] or indices[:1]]
    if run.recipe.data.packing:
        batch = pack(shard, varlen=run.recipe.model.attn_implementation == "flash_attention_2")
    else:
        bb = run.backbone
        batch = collate(shard, bb.tokenizer.pad_token_id, bb.family.train_padding_side)
    batch["head_index"], batch["head_targets"] = head_inputs(batch["labels"])
    # the varlen lengths stay Python ints: flash attention reads them on the host
    return {
        k: v.to(accelerator.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


def _optimizer_step(run: _Run, running: Any) -> float:
    """Clip, step optimizer and scheduler, count the step; return the step's loss."""
    t = run.recipe.train
    if t.max_grad_norm:
        run.accelerator.clip_grad_norm_(run.params, t.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.state.step += 1
    return float(running) * run.accelerator.num_processes  # one host sync per step; exact on one process


def _log_step(run: _Run, epoch_part: float, loss: float, t0: float) -> None:
    """Log one optimizer step: its loss, learning rate and where it stands in epochs and seconds."""
    _log(
        run,
        {
            "step": run.state.step,
            "epoch": run.state.epoch + epoch_part,
            "loss": loss,
            "lr": run.scheduler.get_last_lr()[0],
            "elapsed_s": round(time.time() - t0, 2),
        },
    )


def _log(run: _Run, record: dict[str, Any]) -> None:
    if run.accelerator.is_main_process:
        _append_metrics(run.metrics_path, record)
        if run.wandb_run is not None:
            run.wandb_run.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])


def _validate(run: _Run) -> float | None:
    """Validation AUC with the same scoring core as `llm4rec evaluate` (None if undefined)."""
    from llm4rec.eval.metrics import UndefinedMetricError, auc
    from llm4rec.eval.scoring import score_binary

    if not run.data.valid_rows:
        return None
    accelerator, model = run.accelerator, run.model
    model.eval()
    with torch.no_grad():
        scores = score_binary(
            accelerator.unwrap_model(model),
            run.backbone,
            run.data.valid_rows,
            batch_size=run.recipe.eval.batch_size,
            sources=run.data.valid_src,
            # with several processes each scores a shard; every one gets all scores back, in order
            distributed=accelerator.num_processes > 1,
        )
    model.train()
    try:
        return auc(scores, run.data.valid_labels)
    except UndefinedMetricError as exc:
        accelerator.print(f"validation AUC undefined: {exc}")
        return None


def _validate_and_keep_best(run: _Run) -> bool:
    """Validate, log, keep the adapter when the AUC improved; True when early stopping ends the run."""
    val_auc = _validate(run)
    if val_auc is None:
        return False
    state, patience = run.state, run.recipe.train.early_stopping_patience
    improved = state.best_auc is None or val_auc > state.best_auc
    _log(run, {"step": state.step, "valid_auc": val_auc, "n_valid": len(run.data.valid_rows)})
    if improved:
        state.best_auc, state.best_step, state.bad_evals = val_auc, state.step, 0
        if run.accelerator.is_main_process:
            _save_adapter(run.accelerator.unwrap_model(run.model), run.out)
    else:
        state.bad_evals += 1
    if patience and state.bad_evals >= patience:
        run.accelerator.print(f"early stopping: no AUC gain in {state.bad_evals} validations")
        return True
    return False


def _save_checkpoint(run: _Run) -> None:
    if not run.accelerator.is_main_process:
        return
    with atomic_dir(run.out / "checkpoint-last") as tmp:
        run.accelerator.unwrap_model(run.model).save_pretrained(str(tmp))
        _save_resume_state(tmp, run.optimizer, run.scheduler)
        run.state.save(tmp / "trainer_state.json")
        write_fingerprint(tmp, run.recipe, run.accelerator.num_processes, run.backbone.config)
    if os.environ.get("LLM4REC_TEST_KILL_AFTER_STEP") == str(run.state.step):
        os.kill(os.getpid(), signal.SIGKILL)  # tests: a run killed right after this checkpoint, every time


def _finish(run: _Run, t0: float) -> dict[str, Any]:
    """Keep the last adapter when nothing was validated; write and return the summary."""
    accelerator, state = run.accelerator, run.state
    if accelerator.is_main_process and state.best_auc is None:
        _save_adapter(
            accelerator.unwrap_model(run.model), run.out
        )  # no validation set: keep the last adapter
    summary = {
        "output_dir": str(run.out),
        "steps": state.step,
        "best_valid_auc": state.best_auc,
        "best_step": state.best_step,
        "train_seconds": round(time.time() - t0, 1),
        "truncation": {
            "cutoff_len": run.recipe.data.cutoff_len,
            **{k: v.as_dict() for k, v in run.data.truncation.items()},
        },
    }
    if accelerator.is_main_process:
        write_json_atomic(run.out / "train_summary.json", summary)
    if run.wandb_run is not None:
        run.wandb_run.summary.update(summary)
        run.wandb_run.finish()
    accelerator.wait_for_everyone()
    # callers print the summary once, from the main process
    return {**summary, "main_process": accelerator.is_main_process}
