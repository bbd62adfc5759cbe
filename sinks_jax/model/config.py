"""`ModelConfig`: every architectural choice of the decoder, validated at construction.

One model with clear switches rather than a copy per family: the LLaMA-style defaults
(RMSNorm, RoPE, SwiGLU, no biases) plus the knobs that pretrained families need (LayerNorm,
GELU, learned absolute positions, biases, embedding scale, Gemma's `1 + w` norm scale, and
Gemma 2/3's local sliding-window layers, q/k norms, post-norms and logit soft-capping).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sinks_jax.model import backends
from sinks_jax.model.backends import BACKENDS
from sinks_jax.model.variants import VARIANTS

DTYPES = backends.ALL_DTYPES
NORM_TYPES = ("rms", "layer")
ACTIVATIONS = ("silu", "gelu", "gelu_tanh", "relu")
POSITION_TYPES = ("rope", "learned", "none")
SINK_KEYS = ("window", "segment")
LAYER_TYPES = ("global", "local")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Decoder-only transformer configuration.

    The first group of fields is the fixed public API (DESIGN.md); the rest default to the
    LLaMA recipe and exist for pretrained families and for the paper's attention variants.
    """

    vocab_size: int = 259
    num_layers: int = 2
    d_model: int = 64
    num_heads: int = 4
    num_kv_heads: int | None = None  # None: multi-head (= num_heads); 1: multi-query.
    d_ff: int = 256
    head_dim: int | None = None  # None: d_model // num_heads.
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    dtype: str = "float32"  # compute dtype of matmuls and activations.
    param_dtype: str = "float32"  # storage dtype of parameters (fp32 master weights).
    logits_dtype: str = "float32"  # output-head accumulation/result dtype ("bfloat16" is faster).
    attention: str = "xla"  # one of BACKENDS.
    attention_variant: str = "softmax"  # one of VARIANTS: a head's no-op (model/variants.py).
    remat: bool = False  # rematerialise each layer in the backward pass.
    scan_unroll: int = 1  # layers per iteration of the layer scan (num_layers: no loop at all).
    head_chunk: int = 0  # training loss: head + CE fused over this many tokens (0: full logits;
    # train/chunked_loss.py). Needs logits_dtype float32 and no final_logit_softcap.

    # Attention masking and the sink key.
    global_first_key: bool = False  # key 0 visible to every query even under intra-doc masking.
    sink_key: str = "window"  # "window": key 0; "segment": first key of the query's document.
    block_size: int = 512  # key/query block of the `blockwise` and `splash` backends.

    # Knobs for pretrained families (defaults: LLaMA).
    norm_type: str = "rms"  # "rms" or "layer" (LayerNorm with bias, GPT-2).
    norm_scale_offset: float = 0.0  # Gemma multiplies by (1 + w): offset 1.0.
    activation: str = "silu"
    gated_mlp: bool = True  # SwiGLU/GeGLU (gate * up) vs a plain two-layer MLP.
    position_type: str = "rope"  # "rope", "learned" (absolute table) or "none".
    max_position_embeddings: int = 8192  # size of the learned table; a bound only for "learned".
    rope_scaling: tuple[tuple[str, Any], ...] | None = None  # e.g. (("rope_type", "llama3"), ...)
    qkv_bias: bool = False
    out_bias: bool = False  # bias on the attention output projection.
    mlp_bias: bool = False
    embedding_scale: float | None = None  # multiply embeddings (Gemma: sqrt(d_model)).
    query_scale: float | None = None  # None: 1/sqrt(head_dim).
    init_std: float = 0.02

    # Local (sliding-window) layers and the other Gemma 2/3 knobs (defaults: off).
    sliding_window: int | None = None  # keys a query of a local layer sees, itself included.
    layer_types: tuple[str, ...] | None = None  # per layer "global"/"local"; None: every layer
    # is local when sliding_window is set, else global.
    rope_local_theta: float | None = None  # RoPE base of local layers, unscaled (Gemma 3: 1e4);
    # None: local layers rotate as global ones (rope_theta, rope_scaling).
    qk_norm: bool = False  # per-head norm of q and k before RoPE (Gemma 3).
    post_norms: bool = False  # norms on the attention and MLP outputs before the residual add.
    attn_logit_softcap: float | None = None  # scores -> cap * tanh(scores / cap) (Gemma 2).
    final_logit_softcap: float | None = None  # logits -> cap * tanh(logits / cap) (Gemma 2).

    def __post_init__(self):
        def need(ok: bool, msg: str):
            if not ok:
                raise ValueError(f"ModelConfig: {msg}")

        if isinstance(self.layer_types, list):  # JSON and ml_collections give lists.
            object.__setattr__(self, "layer_types", tuple(self.layer_types))

        for name in (
            "vocab_size",
            "num_layers",
            "d_model",
            "num_heads",
            "d_ff",
            "block_size",
            "scan_unroll",
        ):
            v = getattr(self, name)
            need(isinstance(v, int) and v > 0, f"{name}={v!r} must be a positive int.")
        kv = self.kv_heads
        need(
            isinstance(kv, int) and kv > 0,
            f"num_kv_heads={self.num_kv_heads!r} must be a positive int or None.",
        )
        need(
            self.num_heads % kv == 0,
            f"num_heads={self.num_heads} is not divisible by num_kv_heads={kv}; "
            f"choose num_kv_heads among the divisors of {self.num_heads}.",
        )
        if self.head_dim is None:
            need(
                self.d_model % self.num_heads == 0,
                f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}; "
                "set head_dim explicitly or change one of them.",
            )
        else:
            need(self.head_dim > 0, f"head_dim={self.head_dim} must be positive.")
        if self.position_type == "rope":
            need(self.head_size % 2 == 0, f"head_dim={self.head_size} must be even for RoPE.")
            need(self.rope_theta > 0, f"rope_theta={self.rope_theta} must be positive.")
        need(self.norm_eps > 0, f"norm_eps={self.norm_eps} must be positive.")
        for name, allowed in (
            ("attention", tuple(BACKENDS)),
            ("dtype", DTYPES),
            ("param_dtype", DTYPES),
            ("logits_dtype", DTYPES),
            ("norm_type", NORM_TYPES),
            ("activation", ACTIVATIONS),
            ("position_type", POSITION_TYPES),
            ("sink_key", SINK_KEYS),
            ("attention_variant", VARIANTS),
        ):
            v = getattr(self, name)
            need(v in allowed, f"{name}={v!r} is not one of {allowed}.")
        needs = dict(
            dtype=self.dtype, global_first_key=self.global_first_key, variant=self.attention_variant
        )
        for problem in backends.problems(self.attention, **needs):
            can = backends.supporting(**needs)
            need(False, f"attention={self.attention!r} {problem}; backends that can: {can}.")
        need(
            self.max_position_embeddings > 0,
            f"max_position_embeddings={self.max_position_embeddings} must be positive.",
        )
        if self.rope_scaling is not None:
            need(
                isinstance(self.rope_scaling, tuple),
                f"rope_scaling={self.rope_scaling!r} must be a tuple of (key, value) pairs "
                "(use ModelConfig.with_rope_scaling(dict)).",
            )
        self._check_local_layers(need)

    def _check_local_layers(self, need) -> None:
        """Sliding windows, per-layer types and soft-capping, and the backends that run them."""
        w = self.sliding_window
        need(
            w is None or (isinstance(w, int) and w > 0),
            f"sliding_window={w!r} must be a positive int or None.",
        )
        if self.layer_types is not None:
            need(
                len(self.layer_types) == self.num_layers,
                f"layer_types has {len(self.layer_types)} entries for num_layers="
                f"{self.num_layers}; give one of {LAYER_TYPES} per layer.",
            )
            bad = sorted(set(self.layer_types) - set(LAYER_TYPES))
            need(not bad, f"layer_types holds {bad}; each entry must be one of {LAYER_TYPES}.")
            need(
                w is not None or "local" not in self.layer_types,
                "layer_types has 'local' layers but sliding_window=None; set sliding_window.",
            )
        for name in ("attn_logit_softcap", "final_logit_softcap", "rope_local_theta"):
            v = getattr(self, name)
            need(v is None or v > 0, f"{name}={v!r} must be positive or None.")
        need(isinstance(self.head_chunk, int) and self.head_chunk >= 0,
             f"head_chunk={self.head_chunk!r} must be an int >= 0 (0: the full logits).")  # fmt: skip
        need(
            not self.head_chunk
            or (self.final_logit_softcap is None and self.logits_dtype == "float32"),
            f"head_chunk={self.head_chunk} fuses a float32 head without soft-capping; set "
            "head_chunk=0 with final_logit_softcap or logits_dtype='bfloat16'.",
        )
        needs = dict(
            window=any(self.local_layers),
            softcap=self.attn_logit_softcap is not None,
            variant=self.attention_variant,  # sigmoid kernels may window where softmax's do not.
        )
        for problem in backends.problems(self.attention, **needs):
            can = backends.supporting(dtype=self.dtype, **needs)
            need(False, f"attention={self.attention!r} {problem}; backends that can: {can}.")

    @property
    def kv_heads(self) -> int:
        return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

    @property
    def head_size(self) -> int:
        return self.d_model // self.num_heads if self.head_dim is None else self.head_dim

    @property
    def local_layers(self) -> tuple[bool, ...]:
        """Per layer: True where the layer attends within `sliding_window` only."""
        if self.layer_types is None:
            return (self.sliding_window is not None,) * self.num_layers
        return tuple(t == "local" for t in self.layer_types)

    @property
    def rope_scaling_dict(self) -> dict[str, Any] | None:
        return None if self.rope_scaling is None else dict(self.rope_scaling)

    def replace(self, **changes) -> "ModelConfig":
        """A copy with some fields changed (validated again)."""
        if isinstance(changes.get("rope_scaling"), dict):
            changes["rope_scaling"] = tuple(sorted(changes["rope_scaling"].items()))
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["rope_scaling"] = self.rope_scaling_dict
        if self.layer_types is not None:
            d["layer_types"] = list(self.layer_types)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Builds a config from a plain dict (e.g. JSON or an ml_collections ConfigDict)."""
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"ModelConfig: unknown fields {unknown}; known fields are {sorted(known)}."
            )
        if isinstance(d.get("rope_scaling"), dict):
            d["rope_scaling"] = tuple(sorted(d["rope_scaling"].items()))
        return cls(**d)

    def param_count(self, include_embeddings: bool = True) -> int:
        """Number of parameters (biases and norms included)."""
        d, hd, h, kv, f = self.d_model, self.head_size, self.num_heads, self.kv_heads, self.d_ff
        norm = d * (2 if self.norm_type == "layer" else 1)
        attn = d * hd * (h + 2 * kv) + h * hd * d
        attn += (hd * (h + 2 * kv) if self.qkv_bias else 0) + (d if self.out_bias else 0)
        mlp = d * f * (3 if self.gated_mlp else 2) + ((f + d) if self.mlp_bias else 0)
        attn += 2 * norm // d * hd if self.qk_norm else 0  # q and k norms over head_dim.
        attn += {"sink_logit": h, "gated": (d + 1) * h * hd, "kv_bias": 2 * kv * hd}.get(
            self.attention_variant, 0
        )
        block_norms = (4 if self.post_norms else 2) * norm
        layers = self.num_layers * (attn + mlp + block_norms) + norm
        if not include_embeddings:
            return layers
        emb = self.vocab_size * d * (1 if self.tie_embeddings else 2)
        if self.position_type == "learned":
            emb += self.max_position_embeddings * d
        return layers + emb
