"""Pretrained models from GGUF files: reading (`gguf`), tokenizers (`gguf_tokenizer`),
downloading (`fetch`, the `sinks-jax models` command) and greedy generation (`generate`).

Load a model with `sinks_jax.hf.load("model.gguf")`, the one entry point for safetensors
folders and GGUF files alike.
"""
