"""Data: sources (TFDS, local text, synthetic), tokenizers, the packing grid, the loader.

Imports nothing else from sinks_jax. TensorFlow is imported only by the `tfds:` source.
"""

from sinks_jax.data.packing import (
    FIELDS,
    MODES,
    attention_mask_from_segments,
    pack_documents,
)

__all__ = ["FIELDS", "MODES", "attention_mask_from_segments", "pack_documents"]
