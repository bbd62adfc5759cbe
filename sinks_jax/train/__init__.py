"""Training: optimizer, mesh and sharding, jitted steps, checkpointing, the loop, sweeps, reports.

    sinks-jax train --config quickstart --workdir runs/quickstart

Modules: `optim` (AdamW + schedule), `sharding` (mesh, FSDP rules), `step` (jitted train and
eval steps with in-step sink statistics), `checkpoint` (orbax manager, resume, `load_model`),
`validate` (config checks before anything is built), `config_file` (config files and
`--config.key=value` overrides), `metrics` (metrics.jsonl, TensorBoard), `stop` (SIGTERM and
Ctrl-C), `loop` (the training loop: setup, restore, run_steps, evaluate, finish), `main` (the
`train` command), `sweep`, `report`.
"""
