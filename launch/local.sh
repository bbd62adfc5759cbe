#!/usr/bin/env bash
# Run a sinks-jax command as N JAX processes on this machine.
#
#   launch/local.sh [-n N] [--one-gpu-each] [--port P] [--dry-run] -- COMMAND [ARGS...]
#   launch/local.sh -n 2 --one-gpu-each -- sinks-jax train --config configs/context_length.py:small,512 --workdir runs/T512
#
# With N > 1 every process gets JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID,
# which sinks_jax passes to jax.distributed.initialize(); --one-gpu-each gives process i
# GPU i only (CUDA_VISIBLE_DEVICES=i). launch/multiprocess.sh starts them (and has more
# options: fake CPU devices, log files). With N = 1 the command simply runs (one process sees
# every local device, which is the simplest way to use several GPUs of one host).
set -euo pipefail

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }
n=1; one_gpu=0; port=12355; dry=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    -n) n="$2"; shift 2 ;;
    --one-gpu-each) one_gpu=1; shift ;;
    --port) port="$2"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
if [[ $# -eq 0 ]]; then echo "local.sh: no command given." >&2; usage >&2; exit 2; fi
if ! [[ "$n" =~ ^[1-9][0-9]*$ ]]; then echo "local.sh: -n $n is not a positive integer." >&2; exit 2; fi

if [[ "$n" -eq 1 ]]; then
  if [[ "$dry" -eq 1 ]]; then printf '%q ' "$@"; echo; exit 0; fi
  exec "$@"
fi

args=(-n "$n" --port "$port")
[[ "$one_gpu" -eq 1 ]] && args+=(--one-gpu-each)
[[ "$dry" -eq 1 ]] && args+=(--dry-run)
exec bash "$(dirname "$0")/multiprocess.sh" "${args[@]}" -- "$@"
