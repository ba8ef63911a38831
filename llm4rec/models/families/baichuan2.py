"""Baichuan2-7B: converted onto LLaMA classes by the Baichuan converter, with its NormHead folded in.

Baichuan2-7B has Baichuan-7B's architecture (see :mod:`llm4rec.models.families.baichuan` for the tensor
map, the converted config and the tokenizer); the converter tells the generations apart by the
``architectures`` spelling or the vocabulary size and divides each row of Baichuan2's output layer by its
L2 norm (:func:`~llm4rec.models.families.baichuan.normalize_rows`). What is Baichuan2's own: the chat
template below and its registry entry.
"""

from __future__ import annotations

from llm4rec.models.families.baichuan import baichuan_family
from llm4rec.models.templates import PromptTemplate

#: Baichuan2-Chat's turn format: the role tokens <reserved_106> (user, id 195) and <reserved_107>
#: (assistant, id 196) are user-defined pieces, so they tokenize to their ids from the text.
BAICHUAN2_CHAT = PromptTemplate(
    name="baichuan2_chat",
    lang="zh",
    text="<reserved_106>{instruction}\n{input}<reserved_107>",
    text_no_input="<reserved_106>{instruction}<reserved_107>",
)

FAMILY = baichuan_family(
    "baichuan2",
    "Baichuan2-7B (converted onto LLaMA classes, NormHead folded in; 13B/ALiBi not supported)",
    templates=(BAICHUAN2_CHAT,),
)
