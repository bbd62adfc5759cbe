"""The built-in ml_collections configs, one file per experiment family, shipped with the package.

    sinks-jax train --config quickstart --workdir runs/quickstart             # by name
    sinks-jax train --config sinks_jax:configs/quickstart.py:128 --workdir runs/T128
    sinks-jax train --config configs/quickstart.py --workdir runs/quickstart  # the old path

| file | what |
|---|---|
| `quickstart.py` | tiny models on the built-in Bigram-Backcopy task at T = 64, 128, 256 (CPU) |
| `context_length.py` | context length at constant tokens per step (sizes `paper`, `small`, `tiny`) |
| `depth.py` | depth at constant context |
| `packing.py` | the packing grid (causal/intra-document, `<bos>`/`<eos>`/fixed `<bos>`) |
| `paper_120m.py` | the reconstructed 120M recipe |
| `repro.py` | the reduced-scale reproduction (REPRODUCTION.md) |

Each file is read by path (`sinks_jax.train.config_file.load_config`), so a copy of one
anywhere on disk is a starting point for a new experiment.
"""
