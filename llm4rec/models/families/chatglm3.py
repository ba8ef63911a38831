"""ChatGLM3-6B: ChatGLM2's architecture, converted by :mod:`llm4rec.models.families.chatglm2`.

ChatGLM3's ``config.json`` is indistinguishable from ChatGLM2's (a recipe names the family); the tensor map
and the converted config are ChatGLM2's. What is ChatGLM3's own is here: its tokenizer's role tokens
(recognised inside text), generation that stops when the model starts the next role, the rotary base
scaled by ``rope_ratio`` (ChatGLM3-32K), its chat template and its registry entry.
"""

from __future__ import annotations

from pathlib import Path

from llm4rec.models.families.chatglm2 import SPECIAL_TOKENS as GLM2_SPECIAL_TOKENS
from llm4rec.models.families.chatglm2 import GlmGeneration, convert_generation, glm_family, one_format

#: ChatGLM3's chat role markers: the only special tokens recognised inside text (as its chat template does)
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|observation|>")
#: special tokens ChatGLM3's tokenizer appends after the sentencepiece pieces, in id order
SPECIAL_TOKENS = (*GLM2_SPECIAL_TOKENS, *ROLE_TOKENS)
#: an assistant turn ends when the model starts the next role: <|user|> or <|observation|>
GLM3 = GlmGeneration(
    "chatglm3",
    SPECIAL_TOKENS,
    text_special=ROLE_TOKENS,
    stop_tokens=("<|user|>", "<|observation|>"),
    rope_ratio_scales_base=True,
)


def convert(src: Path, out: Path, family: str = "chatglm3") -> Path:
    """Convert an original ChatGLM3-6B directory into a GLM directory at ``out`` (atomically)."""
    return convert_generation(src, out, family, GLM3)


#: ChatGLM3's chat format (``<|user|>\n content<|assistant|>``, as its chat template writes it); the reply
#: starts after the assistant's metadata line "\n".
CHATGLM3_ZH, CHATGLM3_EN = one_format(
    "chatglm3", "<|user|>\n {instruction}\n{input}<|assistant|>\n", "<|user|>\n {instruction}<|assistant|>\n"
)

FAMILY = glm_family(
    GLM3,
    "ChatGLM3-6B (converted to transformers' GLM classes; Chinese-first)",
    (CHATGLM3_ZH, CHATGLM3_EN),
    convert,
)
