"""Training: optimizer, mesh and sharding, jitted steps, checkpointing, the loop, sweeps, reports.

    sinks-jax train --config configs/quickstart.py --workdir runs/quickstart

Modules: `optim` (AdamW + schedule), `sharding` (mesh, FSDP rules), `step` (jitted train and
eval steps with in-step sink statistics), `checkpoint` (orbax manager, resume, `load_model`),
`validate` (config checks before anything is built), `loop` (the training loop), `main` (the
CLI), `sweep`, `report`.
"""
