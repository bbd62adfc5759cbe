#!/usr/bin/env bash
# The reduced-scale reproduction (configs/repro.py, REPRODUCTION.md) on one host with GPUs,
# within a wall-time budget; call it again to continue.
#
#   launch/repro_h200.sh --budget SECONDS [--experiment context|depth|packing|strong|variants]
#                        [--gpus N] [--only A,B] [--data DIR] [--work DIR] [--out DIR]
#                        [--reserve S] [--tiny] [--dry-run]
#   launch/repro_h200.sh --budget 560 --experiment context --out "$OUT/repro"
#
# Steps, each skipped when already done: (1) install missing packages from .whl/; (2) train
# the byte-level BPE (16,384 ids) on DIR's training files; (3) tokenise the corpus into
# WORK/prepared (train: DATA/*/*.jsonl.xz except the held-out DATA/*/valid-*.jsonl.xz);
# (4) train the experiment's runs (configs/repro.py variants) N at a time, one per GPU
# (CUDA_VISIBLE_DEVICES), each worker taking the next run nobody has taken; finished runs
# are skipped and interrupted ones resume from their checkpoints; (5) when the budget is
# nearly spent, every run gets SIGTERM (it saves a checkpoint and exits), then the report
# (table with 95 % intervals, figures) is written and the small files are copied to OUT.
#
#   --budget S     wall seconds for this whole call (setup, training, report); required.
#   --experiment   which list of runs (default context: T 128/512/2048 seed 0, T 128/2048 seed 1;
#                  strong: causal fixed <bos>, T 128/2048, seeds 0-2; variants: softmax and the
#                  five attention variants at T 2048).
#   --gpus N       runs at once, one GPU each (default 2).
#   --only A,B     only these runs of the experiment (names as in --dry-run's workdirs).
#   --data DIR     the corpus copy (default data_repro: gutenberg/ openstax/ kjv_bible/).
#   --work DIR     tokenizer, prepared corpus and runs (default runs_repro); keep it between
#                  calls (it holds the checkpoints); not DATA, which a carried copy replaces.
#   --out DIR      where the small results are copied (metrics.jsonl, summary.json,
#                  config.json, sink_scores.npz, logs, report.md, figures); default WORK/out.
#   --reserve S    seconds kept at the end for the SIGTERM grace, report and copies (default
#                  75); runs are stopped at budget - S, and none starts with less than 120 s.
#   --tiny         CPU check of the whole script: tiny model and vocabulary (512), 4 steps.
#   --dry-run      print the plan (the train commands) and exit.
#   PYTHON=...     the interpreter with jax (default python3); run from the repository root.
#
# Packages: jax (CUDA), flax, optax, orbax-checkpoint, tokenizers, numpy, matplotlib, tqdm,
# absl-py, etils and protobuf are expected installed. Carry wheels in .whl/ for what is not:
# grain (needs array_record, cloudpickle, portpicker, psutil) and ml_collections (needs
# PyYAML); tensorboardX is optional (TensorBoard files; metrics.jsonl is written anyway);
# gguf is not needed. Step (1) runs `pip install --no-index --find-links .whl ...`.
set -euo pipefail

usage() { sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; }
budget=""; experiment=context; gpus=2; only=""; data=data_repro; work=runs_repro; out=""; tiny=0; dry=0
reserve=75
while [[ $# -gt 0 ]]; do
  case "$1" in
    --budget) budget="$2"; shift 2 ;;
    --experiment) experiment="$2"; shift 2 ;;
    --gpus) gpus="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    --data) data="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --reserve) reserve="$2"; shift 2 ;;
    --tiny) tiny=1; shift ;;
    --dry-run) dry=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "repro_h200.sh: unknown argument $1; see --help." >&2; exit 2 ;;
  esac
done
if ! [[ "$budget" =~ ^[1-9][0-9]*$ ]]; then
  echo "repro_h200.sh: --budget SECONDS is required (a positive integer), e.g. --budget 560." >&2; exit 2
fi
if ! [[ "$gpus" =~ ^[1-9][0-9]*$ ]]; then echo "repro_h200.sh: --gpus $gpus is not a positive integer." >&2; exit 2; fi
if ! [[ "$reserve" =~ ^[0-9]+$ ]]; then
  echo "repro_h200.sh: --reserve $reserve is not a whole number of seconds." >&2; exit 2
fi
case "$experiment" in context|depth|packing|strong|variants) ;; *)
  echo "repro_h200.sh: --experiment $experiment: choose context, depth, packing, strong or variants." >&2; exit 2 ;; esac

start=$(date +%s)
deadline=$((start + budget - reserve))  # the last S s: SIGTERM grace (<= 50 s), report, copies.
grace=$(( reserve > 60 ? 50 : (reserve * 2 / 3 > 5 ? reserve * 2 / 3 : 5) ))
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
sj() { "$PY" -m sinks_jax.cli "$@"; }
out=${out:-$work/out}
runs="$work/$experiment"
vocab=16384; size=h200
if [[ "$tiny" -eq 1 ]]; then vocab=512; size=tiny; export JAX_PLATFORMS=cpu; fi
tokenizer="hf:$work/bpe$vocab/tokenizer.json"
text="text:$data/*/*.jsonl.xz?valid=$data/*/valid-*.jsonl.xz"
source="prepared:$work/prepared"
overrides=(--config.data.source="$source" --config.data.tokenizer="$tokenizer"
           --config.model.vocab_size="$vocab")
log() { echo "[repro $(date -u +%H:%M:%S) +$(($(date +%s) - start))s] $*"; }

plan() {  # one `sinks-jax train ...` line per run of the experiment (those of --only)
  local lines name
  lines=$(sj sweep "configs/repro.py:experiment=$experiment,size=$size" --workdir "$runs" --print "${overrides[@]}")
  [[ -z "$only" ]] && { echo "$lines"; return; }
  for name in ${only//,/ }; do
    grep -E -- "--workdir=$runs/$name( |\$)" <<< "$lines" \
      || { echo "repro_h200.sh: --only: no run $name in experiment $experiment (see --dry-run)." >&2; return 2; }
  done
}
if [[ "$dry" -eq 1 ]]; then plan; exit 0; fi
mkdir -p "$work" "$runs" "$out"

# (1) packages
if ! "$PY" -c "import grain, ml_collections" 2>/dev/null; then
  if [[ ! -d .whl ]]; then
    echo "repro_h200.sh: grain/ml_collections are not installed and there is no .whl/ folder; carry the wheels (see --help)." >&2; exit 2
  fi
  log "installing wheels from .whl/"
  "$PY" -m pip install -q --no-index --find-links .whl grain ml_collections
  "$PY" -m pip install -q --no-index --find-links .whl tensorboardX 2>/dev/null || log "tensorboardX not installed (optional)"
fi
"$PY" -c "import grain, ml_collections, tokenizers, orbax.checkpoint, optax, flax, matplotlib" \
  || { echo "repro_h200.sh: a required package is missing (see above and --help)." >&2; exit 2; }

# (2) tokenizer
tok_file="$work/bpe$vocab/tokenizer.json"
prepared_done() { grep -qs '"complete": true' "$work/prepared/train/progress.json" \
                  && grep -qs '"complete": true' "$work/prepared/valid/progress.json"; }
if [[ ! -f "$tok_file" ]] || ! prepared_done; then
  ls "$data"/*/valid-*.jsonl.xz >/dev/null 2>&1 \
    || { echo "repro_h200.sh: no held-out files $data/*/valid-*.jsonl.xz; copy the corpus to $data first." >&2; exit 2; }
fi
if [[ ! -f "$tok_file" ]] || ! prepared_done; then  # which sources the tokenizer and corpus get
  log "corpus: $(for d in "$data"/*/; do printf '%s (%s files) ' "$(basename "$d")" "$(ls "$d" | grep -c '\.jsonl\.xz$')"; done)"
fi
if [[ ! -f "$tok_file" ]]; then
  log "training the BPE tokenizer ($vocab ids) on $text"
  rm -rf "$work/bpe$vocab.partial"
  sj tokenizer train --kind bpe --source "$text" --vocab-size "$vocab" --out "$work/bpe$vocab.partial"
  mkdir -p "$(dirname "$tok_file")"
  mv "$work/bpe$vocab.partial/tokenizer.json" "$tok_file"  # only a complete file counts as done.
  rmdir "$work/bpe$vocab.partial"
fi

# (3) prepared corpus
if ! prepared_done; then
  log "tokenising $text into $work/prepared"
  sj prepare --source "$text" --tokenizer "$tokenizer" --out "$work/prepared" --seq-len 2048
fi

# (4) runs, one worker per GPU
claims="$runs/.claims-$start"  # a run is taken by creating its folder here (atomic mkdir).
mkdir -p "$claims"
plan > "$runs/plan.txt"
log "plan: $(wc -l < "$runs/plan.txt") runs of experiment $experiment; training until +$((deadline - start))s"

finished() { grep -qs '"status": "finished"' "$1/summary.json"; }

worker() {
  local gpu=$1 line name dir left rc
  while IFS= read -r line; do
    dir=${line##*--workdir=}; dir=${dir%% *}; name=$(basename "$dir")
    finished "$dir" && continue
    mkdir "$claims/$name" 2>/dev/null || continue
    left=$((deadline - $(date +%s)))
    if (( left < 120 )); then log "gpu $gpu: ${left}s left, not starting $name"; continue; fi
    log "gpu $gpu: $name (up to ${left}s)"
    rc=0
    # shellcheck disable=SC2086  # the plan's words are shell-quoted by `sweep --print`.
    CUDA_VISIBLE_DEVICES=$gpu timeout -s TERM -k "$grace" "$left" \
      bash -c "exec $(printf '%q ' "$PY" -m sinks_jax.cli) ${line#sinks-jax }" >> "$runs/$name.log" 2>&1 || rc=$?
    if finished "$dir"; then log "gpu $gpu: $name finished"
    else log "gpu $gpu: $name stopped (exit $rc; rerun to resume; log $runs/$name.log)"; fi
  done < "$runs/plan.txt"
}

pids=()
for ((g = 0; g < gpus; g++)); do worker "$g" & pids+=("$!"); sleep 2; done
for pid in "${pids[@]}"; do wait "$pid" || true; done

# (5) report and copies
sj report "$runs" > "$runs/report.log" 2>&1 || log "report failed: see $runs/report.log"
"$PY" - "$runs" > "$runs/status.json" <<'EOF'
import json, os, sys
runs, status = sys.argv[1], {}
for name in sorted(os.listdir(runs)):
    d = os.path.join(runs, name)
    if not os.path.isfile(os.path.join(d, "config.json")):
        continue
    steps = []
    if os.path.isfile(os.path.join(d, "metrics.jsonl")):
        steps = [json.loads(x)["step"] for x in open(os.path.join(d, "metrics.jsonl")) if x.strip()]
    summary = {}
    if os.path.isfile(os.path.join(d, "summary.json")):
        summary = json.load(open(os.path.join(d, "summary.json")))
    total = json.load(open(os.path.join(d, "config.json")))["num_steps"]
    status[name] = {"status": summary.get("status", "unfinished"), "last_logged_step": max(steps, default=0),
                    "num_steps": total}
print(json.dumps(status, indent=1))
EOF
mkdir -p "$out/$experiment"
dest=$(cd "$out/$experiment" && pwd)
(cd "$runs" && find . -maxdepth 2 -type f \( -name 'metrics.jsonl' -o -name 'summary.json' -o -name 'config.json' \
   -o -name 'sink_scores.npz' -o -name '*.log' -o -name 'report.md' -o -name '*.png' -o -name 'status.json' \
   -o -name 'plan.txt' \) -print0 | xargs -0 -r cp --parents -t "$dest")
cp "$work/prepared/manifest.json" "$dest/prepared_manifest.json" 2>/dev/null || true
log "status: $(tr -d '\n ' < "$runs/status.json")"
log "results in $dest (report: $dest/report.md); used $(($(date +%s) - start))s of ${budget}s"
