"""The attention backends and what each supports, in one table, and the checks that read it.

`BACKENDS` is the single list of backend names (`ModelConfig.attention`); `sinks_jax.model.
attention` dispatches on it. The table is checked before anything compiles: what the model
config alone decides (dtype, `global_first_key`, `attention_variant`) in `ModelConfig.__post_init__`, what depends
on the run (segment ids from intra-document packing, the sequence length, the machine's JAX
platform) when a training config is validated (`sinks_jax.train.validate`).

To teach a backend something new, flip its entry below; every check and every error message
("backends that can: ...") follows.
"""

from __future__ import annotations

import dataclasses

ALL_DTYPES = ("float32", "bfloat16", "float16")
ALL_PLATFORMS = ("cpu", "gpu", "tpu")


@dataclasses.dataclass(frozen=True)
class Capabilities:
    platforms: tuple[str, ...]  # JAX platforms (jax.default_backend()) it runs on.
    dtypes: tuple[str, ...]  # compute dtypes (ModelConfig.dtype) it accepts.
    segment_ids: bool  # intra-document masking (data.intra_doc=True).
    global_first_key: bool  # key 0 visible to every query across documents.
    window: bool  # local (sliding-window) layers, ModelConfig.sliding_window.
    softcap: bool  # attention-logit soft-capping, ModelConfig.attn_logit_softcap.
    seq_block: int  # T must be a multiple of this, or a power of two below it (1: any T).
    sigmoid: bool = False  # its own path for attention_variant="sigmoid" (model/variants.py).
    sigmoid_window: bool = False  # sliding windows under sigmoid, also where `window` is False.


BACKENDS: dict[str, Capabilities] = {
    "xla": Capabilities(
        platforms=ALL_PLATFORMS,
        dtypes=ALL_DTYPES,
        segment_ids=True,
        global_first_key=True,
        window=True,
        softcap=True,
        seq_block=1,
        sigmoid=True,
    ),
    "blockwise": Capabilities(
        platforms=ALL_PLATFORMS,
        dtypes=ALL_DTYPES,
        segment_ids=True,
        global_first_key=True,
        window=True,
        softcap=True,
        seq_block=1,  # pads T to its block itself.
        sigmoid=True,
    ),
    "cudnn": Capabilities(
        platforms=("gpu",),
        dtypes=("bfloat16", "float16"),
        segment_ids=False,
        global_first_key=False,
        window=True,
        softcap=False,
        seq_block=1,
    ),
    "pallas": Capabilities(
        platforms=("gpu",),
        dtypes=ALL_DTYPES,
        segment_ids=True,
        global_first_key=True,  # key 0 merged through the LSE (fused.attend_first_key_globally).
        window=False,
        softcap=False,
        seq_block=128,  # the kernel's default block (model/fused.py); Triton blocks are 2^k.
        sigmoid=True,  # its own kernels (model/sigmoid_kernel.py), which pad T themselves.
        sigmoid_window=True,
    ),
    "splash": Capabilities(
        platforms=("tpu",),  # elsewhere only in Pallas interpret mode (the CPU tests).
        dtypes=ALL_DTYPES,
        segment_ids=True,
        global_first_key=True,  # a mask column, or merged through the LSE across documents.
        window=True,
        softcap=True,
        seq_block=1,  # pads T to a multiple of 128 itself (model/splash.py).
    ),
}


def seq_len_fits(seq_len: int, block: int) -> bool:
    """Whether a kernel tiling by `min(block, T)` (power-of-two tiles) can run length T."""
    if seq_len >= block:
        return seq_len % block == 0
    return seq_len & (seq_len - 1) == 0


def problems(
    name: str,
    *,
    dtype: str | None = None,
    segment_ids: bool = False,
    global_first_key: bool = False,
    window: bool = False,
    softcap: bool = False,
    seq_len: int | None = None,
    platform: str | None = None,
    variant: str | None = None,
) -> list[str]:
    """What backend `name` cannot do of what is asked (None: not asked); [] when it can."""
    if name not in BACKENDS:
        return [f"is not a backend (choose one of {list(BACKENDS)})"]
    c = BACKENDS[name]
    out = []
    if platform is not None and platform not in c.platforms:
        out.append(f"runs only on {'/'.join(c.platforms)}, and JAX's platform here is {platform!r}")
    if dtype is not None and dtype not in c.dtypes:
        out.append(f"does not compute in dtype={dtype!r} (only {'/'.join(c.dtypes)})")
    if segment_ids and not c.segment_ids:
        out.append("has no segment ids (intra-document masking, data.intra_doc=True)")
    if global_first_key and not c.global_first_key:
        out.append("cannot keep key 0 visible across documents (global_first_key=True)")
    if window and not c.window and not (variant == "sigmoid" and c.sigmoid_window):
        out.append("has no sliding window (local layers, sliding_window)")
    if softcap and not c.softcap:
        out.append("cannot soft-cap attention logits (attn_logit_softcap)")
    if variant == "sigmoid" and not c.sigmoid:
        out.append("has no sigmoid attention (attention_variant='sigmoid')")
    if seq_len is not None and not seq_len_fits(seq_len, c.seq_block):
        out.append(
            f"needs sequence lengths that are multiples of {c.seq_block} (or powers of two "
            f"below it), not {seq_len}"
        )
    return out


def supporting(**needs) -> list[str]:
    """The backends that can do everything in `needs` (the keyword arguments of `problems`)."""
    return [name for name in BACKENDS if not problems(name, **needs)]
