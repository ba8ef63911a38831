"""ChatGLM3-6B: ChatGLM2's architecture, converted by :mod:`llm4rec.models.families.chatglm2`.

ChatGLM3's ``config.json`` is indistinguishable from ChatGLM2's (a recipe names the family). The shared
converter gives its tokenizer the role tokens ``<|system|> <|user|> <|assistant|> <|observation|>``
(recognised inside text), stops generation on the next role, and scales the rotary base by ``rope_ratio``
(ChatGLM3-32K); see ``SPECIAL_TOKENS``, ``ROLE_TOKENS`` and ``glm_config_dict`` there. What is ChatGLM3's
own here: its chat template and its registry entry.
"""

from __future__ import annotations

from llm4rec.models.families.chatglm2 import glm_family, one_format

#: ChatGLM3's chat format (``<|user|>\n content<|assistant|>``, as its chat template writes it); the reply
#: starts after the assistant's metadata line "\n".
CHATGLM3_ZH, CHATGLM3_EN = one_format(
    "chatglm3", "<|user|>\n {instruction}\n{input}<|assistant|>\n", "<|user|>\n {instruction}<|assistant|>\n"
)

FAMILY = glm_family(
    "chatglm3",
    "ChatGLM3-6B (converted to transformers' GLM classes; Chinese-first)",
    (CHATGLM3_ZH, CHATGLM3_EN),
)
