#!/usr/bin/env bash
# Long-context sink statistics of the two GGUF models (docs/real_models.md, "Long context").
#   OUT=DIR bash docs/real_models_long.sh [BACKEND] [SMOLLM2_LENGTHS] [GEMMA3_LENGTHS]
# Defaults: cudnn, "1024 4096 8192", "1024 4096 8192 16384 32768". Writes
# $OUT/smollm2_long.json and $OUT/gemma3_long.json (Gemma: if cuDNN fails, blockwise instead,
# $OUT/gemma3_long_blockwise.json). Run from the repository root, models under models/.
set -u
B=${1:-cudnn}
LS=${2:-1024 4096 8192}
LG=${3:-1024 4096 8192 16384 32768}
W=results/real_models/windows.jsonl
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
long() {  # MODEL NAME BACKEND LENGTHS
    python -m sinks_jax.cli analyze --hf "$1" --prompts $W --long-context-only \
        --long-backend "$3" --long-context $4 --out "$OUT" && mv "$OUT/report.json" "$OUT/$2.json"
}
long models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf smollm2_long "$B" "$LS"
long models/gemma3-270m/gemma-3-270m-q4_k_m.gguf gemma3_long "$B" "$LG" \
    || long models/gemma3-270m/gemma-3-270m-q4_k_m.gguf gemma3_long_blockwise blockwise "$LG"
