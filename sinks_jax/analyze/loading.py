"""The model under analysis and its tokenizer, from one of four sources: a training run's
workdir, a Hugging Face (or GGUF) checkpoint, a random model of a Hugging Face shape, or a
random tiny model."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, NamedTuple

import jax
from flax import nnx

from sinks_jax.analyze.inputs import load_tokenizer
from sinks_jax.model import ModelConfig, Transformer


class Loaded(NamedTuple):
    model: Transformer
    tokenizer: Any
    tokenizer_spec: str  # the tokenizer actually used (the run's or checkpoint's, or --tokenizer)
    description: str
    run_config: dict | None  # the training config with --workdir


def load_model(args: argparse.Namespace) -> Loaded:
    """The model and its tokenizer from --workdir, --hf, --init-hf-config or --init-tiny."""
    if args.init_tiny:
        tok = load_tokenizer(args.tokenizer)
        cfg = ModelConfig(
            vocab_size=tok.vocab_size,
            num_layers=2,
            d_model=32,
            num_heads=4,
            num_kv_heads=2,
            d_ff=64,
            attention="xla",
        )
        model = Transformer(cfg, rngs=nnx.Rngs(args.seed))
        return Loaded(model, tok, args.tokenizer, f"tiny random init (seed {args.seed})", None)
    if args.init_hf_config:
        from sinks_jax import hf

        if args.init_hf_config.lower() == "llama-3.1-8b":
            hf_config = hf.LLAMA_3_1_8B
        elif os.path.isfile(args.init_hf_config):
            with open(args.init_hf_config) as f:
                hf_config = json.load(f)
        else:
            raise FileNotFoundError(
                f"--init-hf-config {args.init_hf_config!r}: not a file; give a config.json "
                "path or 'llama-3.1-8b'."
            )
        dtype = "bfloat16" if jax.default_backend() == "gpu" else "float32"
        model = hf.random_model(hf_config, seed=args.seed, dtype=dtype, attention="xla")
        desc = f"random init of {args.init_hf_config}"
        return Loaded(model, load_tokenizer(args.tokenizer), args.tokenizer, desc, None)
    if args.hf:
        try:
            from sinks_jax import hf
        except ImportError as e:
            raise RuntimeError(
                f"--hf needs sinks_jax.hf, which could not be imported ({e})."
            ) from e
        model, tok = hf.load(args.hf)
        if tok is None and args.tokenizer == "byte":
            raise FileNotFoundError(
                f"--hf {args.hf!r}: no tokenizer.json in the folder; pass "
                "the model's tokenizer with --tokenizer hf:PATH/tokenizer.json."
            )
        desc = f"hf:{os.path.abspath(args.hf)}"
        if tok is None:
            return Loaded(model, load_tokenizer(args.tokenizer), args.tokenizer, desc, None)
        path = os.path.abspath(args.hf)
        if path.endswith(".gguf"):  # the tokenizer the GGUF file's metadata describes
            spec = f"gguf:{path}"
        else:
            spec = f"hf:{os.path.join(path, 'tokenizer.json')}"
        return Loaded(model, tok, spec, desc, None)
    try:
        from sinks_jax.train import checkpoint
    except ImportError as e:
        raise RuntimeError(
            f"--workdir needs sinks_jax.train.checkpoint, which could not be imported ({e})."
        ) from e
    if not os.path.isdir(args.workdir):
        raise FileNotFoundError(f"--workdir {args.workdir!r}: no such folder.")
    model, info = checkpoint.load_model(args.workdir)
    spec = _tokenizer_spec(info) or args.tokenizer
    desc = f"workdir:{os.path.abspath(args.workdir)}"
    return Loaded(model, load_tokenizer(spec), spec, desc, info)


def _tokenizer_spec(info: Any) -> str | None:
    """The tokenizer a training config names (`data.tokenizer`), if any."""
    try:
        return str(info["data"]["tokenizer"])
    except (KeyError, TypeError, IndexError):
        data = getattr(info, "data", None)
        return getattr(data, "tokenizer", None)
