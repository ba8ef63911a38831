"""`llm4rec tiny-model`: an ordinary HF directory of the family's architecture that loads 4-bit."""

import torch
from transformers import AutoConfig, AutoTokenizer

from llm4rec.models.answer_tokens import answer_token_ids
from llm4rec.models.loading import load_base_model, load_tokenizer
from llm4rec.models.registry import detect_family, get_family
from llm4rec.models.templates import ALPACA


def test_llama_and_qwen2_tiny_models(tiny_llama, tiny_qwen2):
    for path, family, model_type in ((tiny_llama, "llama", "llama"), (tiny_qwen2, "qwen2", "qwen2")):
        assert AutoConfig.from_pretrained(path).model_type == model_type
        assert detect_family(path) == family
        fam = get_family(family)
        tok = load_tokenizer(path, fam)
        assert tok.pad_token is not None
        if family == "llama":
            assert tok.pad_token_id != tok.eos_token_id  # LLaMA must not pad with EOS
        model = load_base_model(path, fam, load_in_4bit=True, compute_dtype="float32", device="cpu")
        assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
        ids = torch.tensor([tok("User Preference: Yes.")["input_ids"]])
        assert model(input_ids=ids).logits.shape[-1] == len(tok)
        yes, no = answer_token_ids(tok, ALPACA.render("Do you like it?", "A film"), ["Yes.", "No."])
        assert yes != no


def test_cli_builds_and_errors(tmp_path, capsys):
    from llm4rec.cli import main

    corpus = tmp_path / "c.txt"
    corpus.write_text("hello world\nthe user liked the movie\n")
    assert (
        main(["tiny-model", "--family", "qwen2", "--out", str(tmp_path / "m"), "--corpus", str(corpus)]) == 0
    )
    assert AutoTokenizer.from_pretrained(tmp_path / "m").eos_token == "<|endoftext|>"
    try:
        main(["tiny-model", "--family", "lama", "--out", str(tmp_path / "x")])
    except SystemExit as exc:
        assert exc.code == 2
    assert "did you mean 'llama'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
