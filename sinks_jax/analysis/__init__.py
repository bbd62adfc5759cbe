"""Pure, jit- and vmap-compatible measurements of attention sinks and over-mixing.

Every function takes and returns arrays with documented shapes; none does I/O. The model
enters only through a forward function passed in (`jacobian_sensitivity`) or an attention
function (`received_attention`, computed by `sinks_jax.model.received`, the one implementation
the decoder's `received_attn` statistic also uses).
"""

from sinks_jax.analysis.bootstrap import bootstrap_interval
from sinks_jax.analysis.bos_loss import bos_layouts, same_target_hits, same_target_nll
from sinks_jax.analysis.collapse import (
    rank_collapse,
    repeat_last_token,
    representational_collapse,
    representational_collapse_repeat,
)
from sinks_jax.analysis.entropy import attention_entropy
from sinks_jax.analysis.received import (
    broadcast_kv_heads,
    received_attention,
    received_attention_from_probs,
    received_attention_from_qkv,
)
from sinks_jax.analysis.sensitivity import jacobian_sensitivity, path_bound
from sinks_jax.analysis.sinks import (
    sink_indicator,
    sink_profile,
    sink_rate,
    sink_rate_per_head,
    sink_rate_per_layer,
    sink_scores,
    sink_scores_from_column,
)
from sinks_jax.analysis.spread import (
    drop_prefix,
    perturbation_divergence,
    relative_divergence,
    spread_ratio,
    swap_span,
    swap_token,
)
from sinks_jax.analysis.values import noop_score, sink_value_ratio, value_norms

__all__ = [
    "attention_entropy",
    "bootstrap_interval",
    "bos_layouts",
    "broadcast_kv_heads",
    "drop_prefix",
    "jacobian_sensitivity",
    "noop_score",
    "path_bound",
    "perturbation_divergence",
    "rank_collapse",
    "received_attention",
    "received_attention_from_probs",
    "received_attention_from_qkv",
    "relative_divergence",
    "repeat_last_token",
    "representational_collapse",
    "representational_collapse_repeat",
    "same_target_hits",
    "same_target_nll",
    "sink_indicator",
    "sink_profile",
    "sink_rate",
    "sink_rate_per_head",
    "sink_rate_per_layer",
    "sink_scores",
    "sink_scores_from_column",
    "sink_value_ratio",
    "spread_ratio",
    "swap_span",
    "swap_token",
    "value_norms",
]
