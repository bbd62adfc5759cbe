"""Records of training runs, as their workdirs hold them: `scores` (the final sink scores file,
`sink_scores.npz`, and the profiles with bootstrap intervals recomputed from it) and `runs` (a
workdir read back as one record: config, metrics, last evaluation, swept value, profile).

Training writes these records (`train.sink_eval`, `train.loop`); `sinks-jax report`, its
figures (`plots.training`) and the HTML pages read them. Nothing here imports `train`.
"""
