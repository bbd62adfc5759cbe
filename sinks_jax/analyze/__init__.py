"""`sinks-jax analyze`: sink, perturbation-spread and Jacobian report on a model.

    inputs        tokenizers, prompts, token rows, the swapped perturbation prompt
    loading       the model and its tokenizer from a workdir, a checkpoint or a random init
    measurements  the report's numbers
    figures       the report's figures
    command       the argument parser, `run` and `main`

Imports run downwards only: command -> figures, measurements -> sinks_jax.model (its surgery:
`with_backend`, `residual_stream_fn`, `received_attention_model`, re-exported here);
command, measurements -> inputs; loading -> inputs.
"""

from sinks_jax.analyze.command import build_parser, main, run
from sinks_jax.analyze.figures import write_figures
from sinks_jax.analyze.inputs import (
    choose_prompts,
    choose_swap,
    load_prompts,
    load_tokenizer,
    make_sequences,
    prompts_from_source,
)
from sinks_jax.analyze.loading import Loaded, load_model
from sinks_jax.analyze.measurements import (
    batch_statistics,
    bos_loss_report,
    collapse_vs_length,
    long_context_report,
    sink_report,
    spread_report,
)
from sinks_jax.model.surgery import received_attention_model, residual_stream_fn, with_backend

__all__ = [
    "Loaded",
    "batch_statistics",
    "bos_loss_report",
    "build_parser",
    "choose_prompts",
    "choose_swap",
    "collapse_vs_length",
    "load_model",
    "load_prompts",
    "load_tokenizer",
    "long_context_report",
    "main",
    "make_sequences",
    "prompts_from_source",
    "received_attention_model",
    "residual_stream_fn",
    "run",
    "sink_report",
    "spread_report",
    "with_backend",
    "write_figures",
]
