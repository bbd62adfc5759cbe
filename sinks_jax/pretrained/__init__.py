"""Pretrained models: Hugging Face checkpoints (`hf`: `load`, `build`, `random_model`;
`hf_config`: config.json -> ModelConfig; `safetensors`; `plans`: checkpoint names -> our
parameters per family; `weights`: building and placing the parameters; `hf_tokenizer`), GGUF
files (`gguf`, `gguf_tokenizer`), downloading (`fetch`, the `sinks-jax models` command) and
greedy generation (`generate`).

Load a model with `sinks_jax.hf.load(path)` (re-exported from `pretrained.hf`), the one entry
point for safetensors folders and GGUF files alike.
"""
