"""The backbone registry against the real tokenizer and config files in ../shared: family detection, the
pad/EOS rules and LoRA target sets; two LoRA steps and a validation through three shipped recipes (RECIPES:
LLaMA-2 and Qwen2, en and zh) on tiny models carrying the family's real tokenizer; and for every other
shipped recipe, its family, template and answer words resolved and scored against the real tokenizer of the
release it names (the ChatGLM and ChatGLM3 recipes also train end to end in tests/models/legacy)."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from llm4rec.config import load_recipe
from llm4rec.data.tokenize import IGNORE_INDEX, collate, encode_train_example
from llm4rec.errors import UserError
from llm4rec.models.backbone import answer_words, resolve_family, resolve_template
from llm4rec.models.loading import load_tokenizer
from llm4rec.models.registry import LLAMA_LINEAR, TEMPLATES, detect_family, get_family, list_families
from llm4rec.models.templates import ALPACA
from tests.conftest import REPO, make_tallrec_samples, shared_path, tallrec_draws


def test_shipped_families_and_their_choices():
    names = [f.name for f in list_families()]
    assert names[:2] == ["llama", "qwen2"]
    for name in ("llama", "qwen2"):
        fam = get_family(name)
        assert fam.targets("qv") == ["q_proj", "v_proj"]  # TALLRec's choice
        assert fam.targets("all") == list(LLAMA_LINEAR) and "lm_head" not in fam.targets("all")
        assert fam.targets(["q_proj", "o_proj"]) == ["q_proj", "o_proj"]
        with pytest.raises(UserError, match="choose qv, all"):
            fam.targets("qkv")
        assert (fam.train_padding_side, fam.score_padding_side) == ("right", "left")
    with pytest.raises(UserError, match="did you mean 'llama'"):
        get_family("lama")


@pytest.mark.parametrize("family", [f.name for f in list_families()])
def test_every_family_has_templates_and_answers_in_both_languages(family):
    fam = get_family(family)
    for lang in ("en", "zh"):
        template = resolve_template(fam, "auto", lang)
        assert template.name in TEMPLATES
        pos, neg = answer_words(fam, lang)
        assert pos and neg and pos != neg
        assert "{instruction}" in template.text and "{input}" in template.text


@pytest.mark.parametrize(
    ("release", "expected"),
    [
        ("llama-7b", "llama"),
        ("llama-2-7b", "llama"),
        ("qwen-7b", "qwen"),
        ("chatglm-6b", "chatglm"),
        ("chatglm2-6b", "chatglm2"),
    ],
)
def test_family_detection_from_release_configs(tmp_path, release, expected):
    if expected not in [f.name for f in list_families()]:
        pytest.skip(f"family {expected!r} is not registered in this checkout")
    shutil.copy(shared_path("models", release, "config.json"), tmp_path / "config.json")
    assert detect_family(tmp_path) == expected
    assert resolve_family(str(tmp_path), "auto").name == expected
    assert resolve_family(str(tmp_path), expected).name == expected


def test_chatglm3_release_is_accepted_when_the_recipe_names_it(tmp_path):
    """ChatGLM2 and ChatGLM3 releases have the same config layout: detection cannot tell them apart, so a
    recipe naming either one is accepted and a recipe naming another family is refused."""
    if "chatglm3" not in [f.name for f in list_families()]:
        pytest.skip("family 'chatglm3' is not registered in this checkout")
    shutil.copy(shared_path("models", "chatglm3-6b", "config.json"), tmp_path / "config.json")
    assert resolve_family(str(tmp_path), "chatglm3").name == "chatglm3"
    with pytest.raises(UserError, match="recipe says 'llama'"):
        resolve_family(str(tmp_path), "llama")


def test_recipe_family_that_contradicts_config_json_is_a_clear_error(tmp_path):
    from transformers import Qwen2Config

    shutil.copy(shared_path("models", "llama-7b", "config.json"), tmp_path / "config.json")
    with pytest.raises(UserError) as exc:
        resolve_family(str(tmp_path), "qwen2")
    assert "'qwen2'" in str(exc.value) and "'llama'" in str(exc.value) and "config.json" in str(exc.value)
    Qwen2Config().save_pretrained(tmp_path / "q")
    assert detect_family(tmp_path / "q") == "qwen2"
    assert resolve_family(str(tmp_path / "q"), "qwen2").name == "qwen2"


def test_llama_pads_with_unk_never_eos(tmp_path):
    tok = load_tokenizer(shared_path("models", "llama-7b"), get_family("llama"))
    assert (tok.pad_token, tok.pad_token_id) == ("<unk>", 0)
    assert len({tok.pad_token_id, tok.eos_token_id, tok.bos_token_id}) == 3
    sample = make_tallrec_samples(1)[0]
    ex = encode_train_example(tok, ALPACA, sample, cutoff_len=512)
    assert ex.input_ids[0] == tok.bos_token_id and ex.labels[0] == IGNORE_INDEX
    assert ex.input_ids[-1] == ex.labels[-1] == tok.eos_token_id  # the model learns to stop


def test_qwen_pads_with_endoftext_and_the_loss_still_sees_its_eos():
    tok = load_tokenizer(shared_path("models", "qwen2-7b"), get_family("qwen2"))
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id == tok.eos_token_id
    short, long = make_tallrec_samples(2, seed=3)
    long = dict(long, input=long["input"] + " and more history" * 5)
    a, b = (encode_train_example(tok, ALPACA, s, cutoff_len=512) for s in (short, long))
    assert len(a.input_ids) < len(b.input_ids)
    batch = collate([a, b], tok.pad_token_id, get_family("qwen2").train_padding_side)
    n = len(a.input_ids)
    # pad and EOS share an id; the real EOS keeps its label, the padding after it has none
    assert batch["input_ids"][0, n - 1] == batch["input_ids"][0, n] == tok.eos_token_id
    assert batch["labels"][0, n - 1] == tok.eos_token_id
    assert (batch["labels"][0, n:] == IGNORE_INDEX).all() and (batch["attention_mask"][0, n:] == 0).all()
    assert tok.convert_ids_to_tokens(a.labels[-3:]) == [
        "Yes" if short["label"] else "No",
        ".",
        "<|endoftext|>",
    ]


# --------------------------------------------------------------------------- recipes on tiny models

RECIPES = {
    "tallrec_ml1m_llama2_7b.yaml": ("llama", "llama-2-7b"),
    "tallrec_ml1m_qwen2_7b.yaml": ("qwen2", "qwen2-7b"),
    "tallrec_ml1m_qwen2_7b_zh.yaml": ("qwen2", "qwen2-7b"),
}
GENRES_ZH = ("动作", "喜剧", "剧情", "恐怖")


def make_zh_samples(n: int, seed: int = 0) -> list[dict]:
    """Chinese TALLRec samples in data_prep's --lang zh wording; the label follows the liked genre."""
    rows = []
    for _, _, liked, disliked, target, label in tallrec_draws(n, seed, GENRES_ZH, "电影{k}（{g}）"):
        rows.append(
            {
                "instruction": "根据用户喜欢和不喜欢的电影，判断用户是否会喜欢目标电影，请回答“是”或“否”。",
                "input": "用户喜欢的电影：" + "，".join(f"“{t}”" for t in liked)
                + "\n用户不喜欢的电影：" + "，".join(f"“{t}”" for t in disliked)
                + f"\n用户是否会喜欢目标电影“{target}”？",
                "output": "是" if label else "否",
                "label": label,
            }
        )  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def tiny_real(tmp_path_factory):
    """Tiny models of each family carrying the family's real tokenizer (built once per module)."""
    from llm4rec.models.tiny import build_tiny_model

    built = {}

    def get(family: str, release: str):
        if family not in built:
            src = shared_path("models", release)
            out = tmp_path_factory.mktemp("real") / family
            # hidden 64: the 152k-token embedding and head dominate the cost of a Qwen2 tiny model
            built[family] = build_tiny_model(family, out, tokenizer_from=src, hidden_size=64)
        return built[family]

    return get


@pytest.mark.parametrize("recipe_name", sorted(RECIPES))
def test_recipe_trains_a_tiny_model_of_its_family(tmp_path, tiny_real, recipe_name):
    """Each shipped recipe, unchanged except for paths and sizes, runs LoRA steps and validation."""
    from llm4rec.io import write_jsonl_atomic
    from llm4rec.train.loop import train

    family, release = RECIPES[recipe_name]
    base = load_recipe(REPO / "recipes" / recipe_name)
    # TALLRec's settings, as every recipe header promises
    assert (base.lora.r, base.lora.alpha, base.lora.dropout, base.lora.targets) == (8, 16, 0.05, "qv")
    assert (base.train.learning_rate, base.train.batch_size, base.data.cutoff_len) == (1e-4, 128, 512)
    assert base.model.family == family and base.model.load_in_4bit and base.model.gradient_checkpointing
    rows = make_zh_samples(20) if base.model.lang == "zh" else make_tallrec_samples(20)
    valid = [r for r in rows if r["label"] == 1][:2] + [r for r in rows if r["label"] == 0][:2]
    write_jsonl_atomic(tmp_path / "train.jsonl", [r for r in rows if r not in valid][:8])
    write_jsonl_atomic(tmp_path / "valid.jsonl", valid)
    recipe = load_recipe(
        REPO / "recipes" / recipe_name,
        [
            f"model.path={tiny_real(family, release)}",
            "model.compute_dtype=float32",
            f"data.train={tmp_path / 'train.jsonl'}",
            f"data.valid={tmp_path / 'valid.jsonl'}",
            "data.cutoff_len=160",
            "train.micro_batch_size=4",
            "train.batch_size=4",
            "train.max_steps=2",
            "train.eval_every=2",
            f"train.output_dir={tmp_path / 'run'}",
            "logging.progress_bar=false",
        ],
    )
    summary = train(recipe)
    out = tmp_path / "run"
    assert summary["steps"] == 2
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    meta = json.loads((out / "llm4rec.json").read_text())
    expected_answers = ["是", "否"] if base.model.lang == "zh" else ["Yes.", "No."]
    assert {k: meta[k] for k in ("family", "template", "answers", "lang", "task")} == {
        "family": family,
        "template": base.model.template,
        "answers": expected_answers,
        "lang": base.model.lang,
        "task": "binary",
    }
    records = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 2 and all(math.isfinite(v) and v > 0 for v in losses)
    aucs = [r["valid_auc"] for r in records if "valid_auc" in r]
    assert len(aucs) == 1 and 0.0 <= aucs[0] <= 1.0


#: shipped recipes not trained above -> the release whose real tokenizer their settings are checked with
CHECKED_ONLY = {
    "demo_cpu.yaml": "llama-7b",
    "ranking_ml100k.yaml": "llama-7b",
    "tallrec_ml100k.yaml": "llama-7b",
    "tallrec_ml100k_smollm2.yaml": "llama-7b",
    "tallrec_ml1m.yaml": "llama-7b",
    "tallrec_ml1m_baichuan2_7b_zh.yaml": "baichuan2-7b",
    "tallrec_ml1m_baichuan_7b_zh.yaml": "baichuan-7b",
    "tallrec_ml1m_chatglm2_6b_zh.yaml": "chatglm2-6b",
    "tallrec_ml1m_chatglm3_6b_zh.yaml": "chatglm3-6b",
    "tallrec_ml1m_chatglm_6b_zh.yaml": "chatglm-6b",
    "tallrec_ml1m_qwen_7b_zh.yaml": "qwen-7b",
}


def test_every_shipped_recipe_is_trained_or_checked_here():
    shipped = {p.name for p in (REPO / "recipes").glob("*.yaml")}
    assert shipped == set(RECIPES) | set(CHECKED_ONLY)
    assert not set(RECIPES) & set(CHECKED_ONLY)


@pytest.mark.parametrize("recipe_name", sorted(CHECKED_ONLY))
def test_recipe_settings_resolve_against_the_real_tokenizer(recipe_name):
    """The recipe loads, its family, template and answer words resolve, and the answers start with two
    distinct tokens after a sample's prompt under the real tokenizer of the release it names."""
    from llm4rec.data.tokenize import render_prompt
    from llm4rec.models.answer_tokens import answer_token_ids
    from llm4rec.models.loading import load_backbone_tokenizer

    recipe = load_recipe(REPO / "recipes" / recipe_name)
    m = recipe.model
    release = shared_path("models", CHECKED_ONLY[recipe_name])
    tokenizer, family = load_backbone_tokenizer(release, m.family)
    assert family.name == m.family
    template = resolve_template(family, m.template, m.lang, release)
    assert template.lang == m.lang
    answers = answer_words(family, m.lang, template)
    sample = (make_zh_samples(1) if m.lang == "zh" else make_tallrec_samples(1))[0]
    ids = answer_token_ids(tokenizer, render_prompt(template, sample), answers)
    assert len(set(ids)) == 2
