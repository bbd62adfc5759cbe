"""sinks_jax: attention sinks in JAX/Flax.

Subpackages: `model` (config, attention backends, NNX decoder), `analysis` (pure jitted
measurements), `data` (sources, tokenizers, packing, loading), `train` (optimizer, sharding,
steps, loop, checkpoints). Top-level modules: `hf` (Hugging Face import), `plots`, `cli`.
"""

__version__ = "0.1.0"
