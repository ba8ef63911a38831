"""The scoring core against the plain definition: one full forward per prompt, softmax over answer logits."""

from __future__ import annotations

import pytest
import torch

from llm4rec.data.tokenize import TruncationStats, drop_history, encode_prompt, fit_prompt, render_prompt
from llm4rec.errors import UserError
from llm4rec.eval.scoring import (
    ScoringStats,
    encode_prompts,
    fit_prompts,
    pointwise_samples,
    score_binary,
    score_choices,
    score_pointwise,
)
from llm4rec.eval.sequence_scoring import common_prefix, score_token_sequences, unique_prefix_tokens
from llm4rec.models.answer_tokens import answer_token_ids
from llm4rec.models.backbone import resolve_backbone
from llm4rec.models.templates import ALPACA
from tests.conftest import make_tallrec_samples


def _load(path, family, four_bit=True):
    """The model and its backbone (Alpaca template, fp32 compute on CPU)."""
    bb = resolve_backbone(path, template="alpaca", load_in_4bit=four_bit, device="cpu")
    assert bb.family.name == family and bb.template is ALPACA
    return bb.load_model("cpu"), bb


@pytest.fixture(scope="module")
def llama(tiny_llama):
    return _load(tiny_llama, "llama")


@pytest.fixture(scope="module")
def lora_llama(tiny_llama):
    """A LoRA model whose adapter changes the outputs (B initialised non-zero)."""
    from peft import LoraConfig, get_peft_model

    model, bb = _load(tiny_llama, "llama")
    torch.manual_seed(1)
    peft = get_peft_model(
        model,
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], lora_dropout=0.0),
    )
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    return peft.eval(), bb


def naive_logits(model, tok, prompts, ids, cutoff=512):
    """The definition: each prompt alone through the whole model, last position's answer logits."""
    out = []
    with torch.no_grad():
        for p in prompts:
            x = torch.tensor([encode_prompt(tok, p, cutoff)])
            out.append(model(input_ids=x).logits[0, -1, ids].float())
    return torch.stack(out)


def varied_samples(n, seed=0):
    """TALLRec-style samples with histories of very different lengths."""
    rows = make_tallrec_samples(n, seed=seed)
    for i, r in enumerate(rows):
        extra = "Extra history line. " * (i % 5)
        r["input"] = extra + r["input"]
        r["history_spans"] = [[x + len(extra) for x in span] for span in r["history_spans"]]
    return rows


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_binary_equals_one_prompt_at_a_time(family, tiny_llama, tiny_qwen2):
    model, bb = _load(tiny_llama if family == "llama" else tiny_qwen2, family)
    tok = bb.tokenizer
    rows = varied_samples(13, seed=2)
    prompts = [render_prompt(ALPACA, r) for r in rows]
    ids = answer_token_ids(tok, prompts[0], ("Yes.", "No."))
    stats = ScoringStats()
    with torch.no_grad():
        got = score_binary(model, bb, rows, batch_size=4, stats=stats)
    want = torch.softmax(naive_logits(model, tok, prompts, ids), -1)[:, 0]
    assert got.dtype == torch.float32 and got.shape == (13,)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert stats.fast_path and stats.shared_prefix_tokens > 20
    # the preamble ran once: fewer positions than the prompts hold, none of them padding-heavy
    assert stats.tokens_run < stats.prompt_tokens
    assert stats.tokens_run >= stats.unique_tokens


def test_lora_model_fast_path_keeps_the_adapter(lora_llama):
    model, bb = lora_llama
    tok = bb.tokenizer
    rows = varied_samples(12, seed=3)
    prompts = [render_prompt(ALPACA, r) for r in rows]
    ids = answer_token_ids(tok, prompts[0], ("Yes.", "No."))
    seqs = encode_prompts(tok, prompts, 512)
    with torch.no_grad():
        fast = score_token_sequences(model, seqs, ids, batch_size=3, prefix_safe=True)
        generic = score_token_sequences(model, seqs, ids, batch_size=3, fast=False, prefix_safe=True)
        want = naive_logits(model, tok, prompts, ids)
        with model.disable_adapter():
            base = naive_logits(model, tok, prompts, ids)
    assert (want - base).abs().max() > 1e-2  # the adapter matters, so the comparison below means something
    torch.testing.assert_close(fast, want, atol=1e-4, rtol=0)
    torch.testing.assert_close(generic, want, atol=1e-4, rtol=0)


def test_fit_prompts_matches_one_at_a_time_fitting(llama):
    _, bb = llama
    tok = bb.tokenizer
    rows = varied_samples(9)
    for cutoff in (512, 180):
        stats = TruncationStats()
        got = fit_prompts(bb, rows, cutoff, stats=stats)
        assert got == [fit_prompt(tok, ALPACA, r, cutoff).ids for r in rows]
        assert all(len(s) <= cutoff - 1 for s in got)
        assert (stats.shortened > 0) == (cutoff == 180) and stats.prompts == 9
    prompts = [render_prompt(ALPACA, r) for r in rows]
    assert encode_prompts(tok, prompts, 512) == [encode_prompt(tok, p, 512) for p in prompts]
    with pytest.raises(UserError, match="prompt 1: the prompt needs"):
        encode_prompts(tok, prompts, 40)


def test_truncated_prompts_keep_the_shared_preamble_and_score_right(llama):
    model, bb = llama
    tok = bb.tokenizer
    rows = varied_samples(10, seed=4)
    ids = answer_token_ids(tok, render_prompt(ALPACA, rows[0]), ("Yes.", "No."))
    cutoff = 180
    stats = ScoringStats()
    with torch.no_grad():
        got = score_binary(model, bb, rows, cutoff_len=cutoff, batch_size=4, stats=stats)
        want = []
        for r in rows:
            x = torch.tensor([fit_prompt(tok, ALPACA, r, cutoff).ids])
            want.append(model(input_ids=x).logits[0, -1, ids].float())
    torch.testing.assert_close(got, torch.softmax(torch.stack(want), -1)[:, 0], atol=1e-5, rtol=0)
    full = ScoringStats()
    with torch.no_grad():
        score_binary(model, bb, rows, batch_size=4, stats=full)
    # history items go, the template preamble and instruction stay: the shared prefix is reused as before
    assert stats.truncation.shortened > 0 and full.truncation.shortened == 0
    assert stats.shared_prefix_tokens == full.shared_prefix_tokens > 20


def test_pointwise_groups_compute_each_history_once(llama):
    model, bb = llama
    tok = bb.tokenizer
    users = make_tallrec_samples(5, seed=5)
    titles = ["Film 1 (Action)", "Film 2 (Comedy)", "Film 11 (Horror)", "Film 7 (Drama)"]
    rows, groups = [], []
    for u, r in enumerate(users):
        head = r["input"].rsplit('"', 2)[0]
        # groups of 1 to 4 candidates; group 0 has one member (no group prefix of its own)
        for t in titles[: 1 + u % 4]:
            rows.append({"instruction": r["instruction"], "input": f'{head}"{t}"?'})
            groups.append(u)
    # interleave the groups so batching cannot rely on file order
    order = sorted(range(len(rows)), key=lambda i: (i * 7) % len(rows))
    rows, groups = [rows[i] for i in order], [groups[i] for i in order]
    stats = ScoringStats()
    with torch.no_grad():
        got = score_pointwise(model, bb, rows, groups, batch_size=3, stats=stats)
        alone = score_binary(model, bb, rows, batch_size=3)
    prompts = [render_prompt(ALPACA, r) for r in rows]
    ids = answer_token_ids(tok, prompts[0], ("Yes.", "No."))
    want = torch.softmax(naive_logits(model, tok, prompts, ids), -1)[:, 0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(alone, want, atol=1e-5, rtol=0)
    assert stats.group_prefix_tokens > 0
    seqs = encode_prompts(tok, prompts, 512)
    # work close to the unique tokens: shared preamble + each history once + suffixes (+ a little padding)
    assert stats.tokens_run < 1.3 * unique_prefix_tokens(seqs) < sum(len(s) for s in seqs)


def test_choices_read_the_index_letters(llama):
    model, bb = llama
    tok = bb.tokenizer
    rows = []
    for i, r in enumerate(make_tallrec_samples(6, seed=6)):
        k = 3 + i % 3
        cands = [f"Film {j} (Drama)" for j in range(k)]
        listing = "\n".join(f"{chr(65 + j)}. {c}" for j, c in enumerate(cands))
        rows.append(
            {"instruction": "Pick the film.", "input": r["input"] + "\n" + listing, "candidates": cands}
        )
    with torch.no_grad():
        probs = score_choices(model, bb, rows, batch_size=2)
    assert probs.shape == (6, 5)
    torch.testing.assert_close(probs.sum(1), torch.ones(6))
    prompts = [render_prompt(ALPACA, r) for r in rows]
    ids = answer_token_ids(tok, prompts[0], list("ABCDE"))
    logits = naive_logits(model, tok, prompts, ids)
    for i, r in enumerate(rows):
        k = len(r["candidates"])
        torch.testing.assert_close(probs[i, :k], torch.softmax(logits[i, :k], -1), atol=1e-5, rtol=0)
        assert (probs[i, k:] == 0).all()


def test_answers_without_distinct_first_tokens_are_named(llama):
    model, bb = llama
    with pytest.raises(UserError, match="distinct"):
        score_binary(model, bb, make_tallrec_samples(2), answers=("Yes.", "Yes!"))
    with pytest.raises(UserError, match="no samples"):
        score_binary(model, bb, [])


def test_prefix_helpers():
    assert common_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert common_prefix([[7], [8]]) == 0
    # trie nodes: 1,2,3 / 2->5 / 9,9
    assert unique_prefix_tokens([[1, 2, 3], [1, 2, 5], [9, 9], [1, 2]]) == 6


@pytest.fixture(scope="module")
def ranking_rows(tmp_path_factory):
    """Test samples of the ranking task as prep writes them, in English and in Chinese (10 candidates)."""
    from tests.data.logs import random_events, read, run, write_ml100k

    d = tmp_path_factory.mktemp("ranking")
    src = write_ml100k(d / "src", random_events(12, 40, seed=4, lo=12, hi=20), 40)
    out = {}
    for lang in ("en", "zh"):
        argv = ["--src", src, "--out", d / lang, "--task", "ranking", "--candidates", "10", "--lang", lang]
        assert run("movielens", *argv) == 0
        out[lang] = read(d / lang / "ranking" / "test.jsonl")
    return out


def test_pointwise_english_prompts_are_the_history_then_the_candidate(ranking_rows):
    rows = ranking_rows["en"]
    flat, owner, counts = pointwise_samples(rows)
    assert counts == [10] * len(rows) and owner == [i for i in range(len(rows)) for _ in range(10)]
    question = 'Given the user\'s history, identify whether the user will choose the candidate by answering "Yes." or "No.".'
    for j, f in enumerate(flat):
        row = rows[owner[j]]
        history = row["input"].split("\nCandidate pool:\n")[0]
        assert f["instruction"] == question
        assert f["input"] == f'{history}\nCandidate: "{row["candidate_titles"][j % 10]}"'
        # the history keeps its place at the start, so its items stay droppable
        spans = f["history_spans"]
        assert spans == row["history_spans"] and len(spans) == len(row["history"]) > 0
        assert [f["input"][s:e] for s, e, _ in spans] == [row["input"][s:e] for s, e, _ in spans]


def test_pointwise_chinese_prompts_ask_in_chinese_without_the_pool_header(ranking_rows):
    rows = ranking_rows["zh"]
    flat, owner, _ = pointwise_samples(rows)
    for j, f in enumerate(flat):
        row = rows[owner[j]]
        history = row["input"].split("\n候选池：\n")[0]
        assert row["lang"] == "zh" and history.startswith("用户历史：")
        assert f["instruction"] == "根据用户的历史记录，判断用户是否会选择该候选项，请回答“是”或“否”。"
        assert f["input"] == f"{history}\n候选：“{row['candidate_titles'][j % 10]}”"
        assert "候选池" not in f["input"] and "Candidate" not in f["input"]
    # a prompt fitted to a small budget drops history items from every candidate's prompt alike
    fitted = drop_history(flat[0], 2)
    assert fitted["input"].endswith(flat[0]["input"].rsplit("\n", 1)[1])
    assert len(fitted["history_spans"]) == len(flat[0]["history_spans"]) - 2


def test_pointwise_prompts_of_older_or_broken_samples(ranking_rows):
    row = ranking_rows["zh"][0]
    # samples written before 'lang' existed are scored as before: the English question
    old = {k: v for k, v in row.items() if k != "lang"}
    assert pointwise_samples([old])[0][0]["instruction"].startswith("Given the user's history")
    # every history item dropped: the header alone is the history part
    bare = drop_history(row, len(row["history_spans"]))
    assert pointwise_samples([bare])[0][0]["input"] == f"用户历史：\n候选：“{row['candidate_titles'][0]}”"
    with pytest.raises(UserError, match=r"^x\.jsonl:3: pointwise ranking needs the sample's 'history_spans'"):
        pointwise_samples([{k: v for k, v in row.items() if k != "history_spans"}], sources=["x.jsonl:3"])
    with pytest.raises(UserError, match="sample 1: 'lang' is 'fr'"):
        pointwise_samples([dict(row, lang="fr")])
    moved = dict(row, input=row["input"][:20])  # the input edited after prep: its spans no longer fit
    with pytest.raises(UserError, match="history_spans entry"):
        pointwise_samples([moved])
    # a sample bringing its own Yes/No inputs keeps them
    own = dict(row, pointwise_inputs=[f"q{j}" for j in range(10)], pointwise_instruction="Q?")
    assert [f["input"] for f in pointwise_samples([own])[0]] == [f"q{j}" for j in range(10)]
