#!/usr/bin/env bash
# Run the same sinks-jax command on every worker of a Cloud TPU VM pod slice.
#
#   launch/tpu_pod.sh TPU_NAME ZONE [--project P] [--repo DIR] [--dry-run] -- COMMAND [ARGS...]
#   launch/tpu_pod.sh my-v5p-64 us-east5-a -- sinks-jax train \
#       --config configs/context_length.py:paper,2048 --workdir /mnt/shared/ctx/T2048 \
#       --config.model.attention=splash --config.mesh.fsdp=-1 --config.mesh.data=1
#
# Every worker needs this repository at --repo (default: ~/sinks_jax) with sinks_jax installed,
# and the workdir must be storage all workers share (NFS, or a bucket mounted with gcsfuse;
# gs:// paths are not read or written directly yet). The command runs with
# SINKS_JAX_DISTRIBUTED=1, so each process calls jax.distributed.initialize(), which finds
# the pod's other workers from the TPU VM metadata.
set -euo pipefail

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
if [[ $# -lt 2 || "$1" == -* ]]; then usage >&2; exit 2; fi
tpu="$1"; zone="$2"; shift 2
project=(); repo='~/sinks_jax'; dry=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --project) project=(--project "$2"); shift 2 ;;
    --repo) repo="$2"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --) shift; break ;;
    *) echo "tpu_pod.sh: unknown option $1 (put the command after --)." >&2; exit 2 ;;
  esac
done
if [[ $# -eq 0 ]]; then echo "tpu_pod.sh: no command given after --." >&2; exit 2; fi

remote="cd ${repo} && SINKS_JAX_DISTRIBUTED=1 $(printf '%q ' "$@")"
cmd=(gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" "${project[@]}" --worker=all --command="$remote")
if [[ "$dry" -eq 1 ]]; then printf '%q ' "${cmd[@]}"; echo; exit 0; fi
exec "${cmd[@]}"
