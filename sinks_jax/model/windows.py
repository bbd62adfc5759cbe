"""Local (sliding-window) layers: the window a layer looks through, and which queries can
see their sink key in each layer (`sink_query_mask`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sinks_jax.model import attention as attention_lib
from sinks_jax.model.config import ModelConfig


def layer_window(cfg: ModelConfig, local, seq_len: int):
    """The window a layer's queries look through: None (global), `sliding_window`, or, for a
    traced `local` flag, a traced int (seq_len stands for "no limit")."""
    if isinstance(local, bool):
        return cfg.sliding_window if local else None
    return jnp.where(local, cfg.sliding_window, seq_len)


def sink_query_mask(
    cfg: ModelConfig, seq_len: int, segment_ids_BxT: jax.Array | None = None
) -> jax.Array:
    """[L, B or 1, T] bool: per layer, the queries that can see their sink key.

    False where the sink key is masked: in another document (segment ids with
    sink_key="window"), or, in a local layer, `sliding_window` or more tokens back (key 0 is
    seen by queries t < sliding_window only) unless `global_first_key` keeps key 0 visible.
    Their `sink_attn` is exactly 0; pass this mask to the first-token score to average over
    the queries that could attend to the sink.
    """
    batch = 1 if segment_ids_BxT is None else segment_ids_BxT.shape[0]
    sink_idx_BxT = attention_lib.sink_index(
        segment_ids_BxT, seq_len, batch, per_segment=cfg.sink_key == "segment"
    )
    masks = {
        local: attention_lib.sink_visible(
            sink_idx_BxT,
            segment_ids_BxT,
            global_first_key=cfg.global_first_key,
            window=layer_window(cfg, local, seq_len),
        )
        for local in set(cfg.local_layers)
    }
    return jnp.stack([masks[local] for local in cfg.local_layers])
