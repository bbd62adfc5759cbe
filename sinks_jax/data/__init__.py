"""Data: sources (TFDS, local text, synthetic), tokenizers, the packing grid, the loader.

Imports from the rest of sinks_jax only the leaf module `progress` (the commands in `command`
also use `cli_args`, and the pretrained room for the `gguf:` tokenizer kind). TensorFlow is
imported only by the `tfds:` source.

    from sinks_jax.data import LoaderSpec, make_loader
    spec = LoaderSpec("synthetic:bigram_backcopy", "byte", seq_len=256, batch_size=64,
                      packing="fixed_bos", intra_doc=True, seed=0)
    loader = make_loader(spec)
    batch = next(loader)              # dict of int32 [64 // process_count, 256] arrays
    state = loader.get_state()        # {"index": .., "epoch": ..}: save with the checkpoint
"""

from sinks_jax.data.loader import Loader, LoaderSpec, document_tokens, make_loader
from sinks_jax.data.packing import (
    FIELDS,
    MODES,
    attention_mask_from_segments,
    pack_documents,
)
from sinks_jax.data.sources import get_source
from sinks_jax.data.tokenizers import Tokenizer, get_tokenizer

__all__ = [
    "FIELDS",
    "MODES",
    "Loader",
    "LoaderSpec",
    "Tokenizer",
    "attention_mask_from_segments",
    "document_tokens",
    "get_source",
    "get_tokenizer",
    "make_loader",
    "pack_documents",
]
