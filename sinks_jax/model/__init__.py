"""The model: `ModelConfig`, the NNX `Transformer`, its pure `forward`, and attention backends.

The attention entry point is `sinks_jax.model.attention.attention`.
Model surgery (another backend, the residual stream, received attention per layer) is in
`sinks_jax.model.surgery`.
"""

from sinks_jax.model import attention
from sinks_jax.model.config import ModelConfig
from sinks_jax.model.transformer import COLLECTABLE, Transformer, forward
from sinks_jax.model.windows import sink_query_mask

__all__ = ["ModelConfig", "Transformer", "forward", "sink_query_mask", "attention", "COLLECTABLE"]
