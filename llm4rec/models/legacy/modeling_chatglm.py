"""ChatGLM-6B (first generation) as a native transformers model: no remote code, transformers 5 caches.

The architecture (GLM-130B's recipe at 6B) differs from every decoder transformers ships:

* **prefix-LM attention**: the prompt is everything before the first ``<sop>`` and attends to itself
  bidirectionally; ``<sop>`` and the tokens after it attend causally;
* **2-D rotary positions**: the first half of each head is rotated by the token's position, the second half
  by its *block* position. Prompt tokens have positions 0..L-1 and block position 0; from ``<sop>`` on, every
  token takes the position of the mask token (``[gMASK]``, else ``[MASK]``) and block positions 1, 2, ...
  Each half uses the rotate-half layout over d/2 dims with frequencies ``10000^(-2i/(d/2))`` rounded to
  fp16, as the release stores them;
* **scaled post-norm residuals** (DeepNorm): ``x = LN1(h); h = alpha * x + attn(x); y = LN2(h);
  h = alpha * y + mlp(y)`` with ``alpha = sqrt(2 * 28)`` in the release (its blocks never receive the
  configured layer count; ``residual_alpha`` in the config);
* a plain GELU (tanh approximation) MLP with biases, LayerNorm with biases, biases on every projection.

The fused per-head ``query_key_value`` of the release is split into ``q_proj``/``k_proj``/``v_proj`` at
conversion (:mod:`llm4rec.models.families.chatglm`), so LoRA targets read as for LLaMA.

Positions and the prefix mask are derived from ``input_ids`` and the 2-D ``attention_mask`` (left or right
padding), so a padded row computes exactly what the unpadded sequence computes. With a KV cache the prompt
(up to and including ``<sop>``) must be in the first forward call: bidirectional attention cannot be
extended to tokens that arrive later.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, GenerationMixin, PreTrainedConfig
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import PreTrainedModel

MODEL_TYPE = "llm4rec_chatglm"


@strict
class ChatGLM6BConfig(PreTrainedConfig):
    """Configuration of the native ChatGLM-6B (first generation)."""

    model_type = MODEL_TYPE
    keys_to_ignore_at_inference = ["cache"]

    vocab_size: int = 130528
    hidden_size: int = 4096
    intermediate_size: int = 16384
    num_hidden_layers: int = 28
    num_attention_heads: int = 32
    layer_norm_eps: float = 1e-5
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0
    initializer_range: float = 0.02
    use_cache: bool = True
    tie_word_embeddings: bool = True
    bos_token_id: int | None = 130004
    eos_token_id: int | list[int] | None = 130005
    pad_token_id: int | None = 3
    mask_token_id: int = 130000
    gmask_token_id: int = 130001
    #: residual scale; None = sqrt(2 * num_hidden_layers). Converted releases store sqrt(56): the release's
    #: GLMBlock is built without ``num_layers`` and keeps its default of 28 whatever the config says.
    residual_alpha: float | None = None


class GLMPositions:
    """Per-row prefix-LM state of a batch: where the prompt ends and which position generated tokens take.

    ``ctx`` is the number of prompt tokens (tokens before ``<sop>``; 0 for rows without ``<sop>``, which are
    treated as plain causal text with positions 0, 1, ...), ``mask_pos`` the position of the mask token, all
    counted over real (non-padding) tokens.
    """

    def __init__(self, ctx: torch.Tensor, mask_pos: torch.Tensor, has_sop: torch.Tensor) -> None:
        self.ctx, self.mask_pos, self.has_sop = ctx, mask_pos, has_sop

    @classmethod
    def from_ids(cls, ids: torch.Tensor, real: torch.Tensor, config: ChatGLM6BConfig) -> GLMPositions:
        """Find ``<sop>`` and the mask token in each row of ``ids`` ([batch, seq]), ignoring padding."""
        rel = real.long().cumsum(-1) - 1
        sop_hit = (ids == config.bos_token_id) & real
        has_sop = sop_hit.any(-1)
        sop_at = sop_hit.long().argmax(-1)
        ctx = torch.where(has_sop, rel.gather(1, sop_at[:, None])[:, 0], torch.zeros_like(sop_at))
        g_hit = (ids == config.gmask_token_id) & real
        m_hit = (ids == config.mask_token_id) & real
        mask_at = torch.where(g_hit.any(-1), g_hit.long().argmax(-1), m_hit.long().argmax(-1))
        has_mask = g_hit.any(-1) | m_hit.any(-1)
        # without a mask token (not a ChatGLM prompt) the generated part continues from the last prompt token
        mask_pos = torch.where(has_mask, rel.gather(1, mask_at[:, None])[:, 0], (ctx - 1).clamp(min=0))
        return cls(ctx, mask_pos, has_sop)

    def position_ids(self, rel: torch.Tensor) -> torch.Tensor:
        """[batch, 2, seq] positions and block positions of tokens whose real-token index is ``rel``."""
        gen = self.has_sop[:, None] & (rel >= self.ctx[:, None])
        pos = torch.where(gen, self.mask_pos[:, None].expand_as(rel), rel.clamp(min=0))
        block = torch.where(gen, rel - self.ctx[:, None] + 1, torch.zeros_like(rel))
        return torch.stack((pos, block), dim=1)

    def allowed(self, rel_k: torch.Tensor, real_k: torch.Tensor, q_index: torch.Tensor) -> torch.Tensor:
        """[batch, 1, q, k] boolean attention mask: real keys that are causal or inside the prompt."""
        k_index = torch.arange(rel_k.shape[1], device=rel_k.device)
        causal = k_index[None, :] <= q_index[:, None]  # [q, k]
        prompt = self.has_sop[:, None] & (rel_k < self.ctx[:, None])  # [b, k]
        allowed = (causal[None] | prompt[:, None, :]) & real_k[:, None, :]
        # a padding query would see nothing; let it see itself so softmax stays finite (its output is unused)
        eye = k_index[None, :] == q_index[:, None]
        allowed = allowed | (eye[None] & ~allowed.any(-1, keepdim=True))
        return allowed[:, None]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class ChatGLM6BRotary(nn.Module):
    """2-D rotary embedding: positions turn the first half of each head, block positions the second."""

    def __init__(self, config: ChatGLM6BConfig) -> None:
        super().__init__()
        self.half = config.hidden_size // config.num_attention_heads // 2
        self.theta = config.rope_theta

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) of shape [batch, 2, seq, half] for ``position_ids`` [batch, 2, seq]."""
        # computed on the fly (32 numbers): no buffer to materialise; the release's table is fp16-rounded
        inv = 1.0 / (self.theta ** (torch.arange(0, self.half, 2, device=x.device).float() / self.half))
        inv = inv.half().float()
        angles = position_ids[..., None].float() * inv
        emb = torch.cat((angles, angles), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def apply_2d_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate [batch, heads, seq, d]: dims [0, d/2) by the positions, [d/2, d) by the block positions."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # q/k may be fp32 under QLoRA while embeddings are not
    c1, c2 = cos[:, 0, None], cos[:, 1, None]
    s1, s2 = sin[:, 0, None], sin[:, 1, None]
    return torch.cat((x1 * c1 + _rotate_half(x1) * s1, x2 * c2 + _rotate_half(x2) * s2), dim=-1)


class ChatGLM6BAttention(nn.Module):
    """Multi-head self-attention with 2-D rotary positions and a prefix-LM mask."""

    def __init__(self, config: ChatGLM6BConfig, layer_idx: int) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        h = config.hidden_size
        self.q_proj = nn.Linear(h, h, bias=True)
        self.k_proj = nn.Linear(h, h, bias=True)
        self.v_proj = nn.Linear(h, h, bias=True)
        self.o_proj = nn.Linear(h, h, bias=True)

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor,
        cache: Cache | None = None,
    ) -> torch.Tensor:
        b, n, _ = hidden_states.shape
        shape = (b, n, self.heads, self.head_dim)
        q = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        k = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        v = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        cos, sin = rotary
        q, k = apply_2d_rotary(q, cos, sin), apply_2d_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        if self.config._attn_implementation == "eager":
            scores = (q @ k.transpose(-1, -2)) * self.head_dim**-0.5
            scores = scores.float().masked_fill(~attention_mask, float("-inf"))
            out = scores.softmax(-1).to(v.dtype) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1))


class ChatGLM6BMLP(nn.Module):
    """h -> GELU(tanh) -> h, both projections with bias."""

    def __init__(self, config: ChatGLM6BConfig) -> None:
        super().__init__()
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=True)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.up_proj(x), approximate="tanh"))


class ChatGLM6BBlock(GradientCheckpointingLayer):
    """One GLM block with DeepNorm-style residuals on the normalised inputs."""

    def __init__(self, config: ChatGLM6BConfig, layer_idx: int) -> None:
        super().__init__()
        alpha = config.residual_alpha
        self.alpha = alpha if alpha is not None else (2 * config.num_hidden_layers) ** 0.5
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = ChatGLM6BAttention(config, layer_idx)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = ChatGLM6BMLP(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        x = self.input_layernorm(hidden_states)
        h = x * self.alpha + self.self_attn(x, rotary, attention_mask, cache)
        y = self.post_attention_layernorm(h)
        return y * self.alpha + self.mlp(y)


class ChatGLM6BPreTrainedModel(PreTrainedModel):
    """Weights initialisation and loading for the native ChatGLM-6B."""

    config: ChatGLM6BConfig
    config_class = ChatGLM6BConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["ChatGLM6BBlock"]
    _skip_keys_device_placement = ["cache"]
    _supports_sdpa = True


class ChatGLM6BModel(ChatGLM6BPreTrainedModel):
    """The ChatGLM-6B transformer without its output head. Embedding getters and setters are transformers'
    defaults, which find ``embed_tokens`` (here and under ``model``) and ``lm_head``."""

    def __init__(self, config: ChatGLM6BConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(ChatGLM6BBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.rotary = ChatGLM6BRotary(config)
        self.gradient_checkpointing = False
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast:
        """Hidden states of ``input_ids`` ([batch, seq]); ``position_ids`` ([batch, 2, seq], the release's
        layout) overrides the 2-D positions derived from ``<sop>`` / ``[gMASK]`` (1-D ones are ignored);
        ``attention_mask`` is the usual 2-D padding mask (over past and new tokens when a cache is passed)
        or the release tokenizer's boolean [batch, 1, q, k] mask (True = masked)."""
        cache = _one_cache(cache, kwargs)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if self.gradient_checkpointing and self.training:
            use_cache = False
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        b, n = inputs_embeds.shape[:2]
        past = cache.get_seq_length() if cache is not None else 0
        device = inputs_embeds.device
        release_mask = None
        if attention_mask is not None and attention_mask.dim() == 4:
            # the release tokenizer's [batch, 1, q, k] mask, True = masked: taken as given
            release_mask = ~attention_mask.to(device=device, dtype=torch.bool)
            real = release_mask[:, 0].any(-2)
        elif attention_mask is None:
            real = torch.ones(b, past + n, dtype=torch.bool, device=device)
        else:
            real = attention_mask.to(device=device, dtype=torch.bool)
            if real.shape[1] == n and past:
                real = torch.cat((torch.ones(b, past, dtype=torch.bool, device=device), real), dim=1)
            if real.shape[1] != past + n:
                raise ValueError(f"attention_mask covers {real.shape[1]} tokens, expected {past + n}")
        rel = real.long().cumsum(-1) - 1  # index among real tokens, over past + new
        state = getattr(cache, "llm4rec_glm", None) if past else None
        if state is None:
            if past:
                raise ValueError(
                    "this KV cache was not filled by ChatGLM6BModel: its prompt positions are unknown"
                )
            if input_ids is not None:
                state = GLMPositions.from_ids(input_ids, real, self.config)
            else:  # embeddings only: no <sop> to find, plain causal text
                zeros = torch.zeros(b, dtype=torch.long, device=device)
                state = GLMPositions(zeros, zeros, torch.zeros(b, dtype=torch.bool, device=device))
        if cache is not None:
            cache.llm4rec_glm = state
        if position_ids is None or position_ids.dim() != 3:
            # 1-D positions (what generate() derives from the mask) cannot express GLM's 2-D scheme
            position_ids = state.position_ids(rel[:, past:])
        q_index = torch.arange(past, past + n, device=device)
        if release_mask is None:
            mask = state.allowed(rel, real, q_index)
        else:  # padding rows of the release mask see nothing: let them see themselves (output unused)
            eye = torch.arange(past + n, device=device)[None, :] == q_index[:, None]
            mask = release_mask | (eye & ~release_mask.any(-1, keepdim=True))
        rotary = self.rotary(inputs_embeds, position_ids.to(device))
        hidden = inputs_embeds
        for layer in self.layers:
            hidden = layer(hidden, rotary=rotary, attention_mask=mask, cache=cache)
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden), cache=cache)


def _one_cache(cache: Cache | None, kwargs: dict[str, Any]) -> Cache | None:
    """The KV cache passed as ``cache=`` or as ``past_key_values=`` (transformers models' name for it; left in
    ``**kwargs`` it would be ignored and the cache would stay empty). Both at once, different, is an error."""
    other = kwargs.pop("past_key_values", None)
    if other is not None and cache is not None and other is not cache:
        raise ValueError("pass the KV cache once: as cache= or as past_key_values=, not two different ones")
    return cache if cache is not None else other


class ChatGLM6BForCausalLM(ChatGLM6BPreTrainedModel, GenerationMixin):
    """ChatGLM-6B with its language-model head (tied to the embedding in the release)."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: ChatGLM6BConfig) -> None:
        super().__init__(config)
        self.model = ChatGLM6BModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Logits (and the shifted next-token loss when ``labels`` are given, -100 = ignored). The cache may be
        passed as ``cache=`` or ``past_key_values=``."""
        cache = _one_cache(cache, kwargs)
        out = self.model(input_ids, attention_mask, position_ids, cache, inputs_embeds, use_cache)
        hidden = out.last_hidden_state
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden = hidden[:, -logits_to_keep:]
        elif isinstance(logits_to_keep, torch.Tensor):
            hidden = hidden[:, logits_to_keep]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=out.cache)


def _register() -> None:
    """Make ``AutoConfig`` / ``AutoModel`` / ``AutoModelForCausalLM`` load ``model_type: llm4rec_chatglm``."""
    try:
        AutoConfig.register(MODEL_TYPE, ChatGLM6BConfig)
    except ValueError:  # already registered (module reloaded)
        return
    AutoModel.register(ChatGLM6BConfig, ChatGLM6BModel)
    AutoModelForCausalLM.register(ChatGLM6BConfig, ChatGLM6BForCausalLM)


_register()
