#!/usr/bin/env bash
# Run a sinks-jax command as N cooperating JAX processes on this machine: a pod rehearsal.
#
#   launch/multiprocess.sh [-n N] [--cpu-devices K | --one-gpu-each] [--port P] [--logs DIR]
#                          [--grace S] [--dry-run] -- COMMAND [ARGS...]
#   launch/multiprocess.sh -n 2 --cpu-devices 4 -- sinks-jax train \
#       --config configs/context_length.py:tiny,32 --workdir runs/mp   # 2 x 4 fake CPU devices
#   launch/multiprocess.sh -n 2 --one-gpu-each -- sinks-jax train --config ... --workdir ...
#
# Process i gets JAX_COORDINATOR_ADDRESS=localhost:P, JAX_NUM_PROCESSES=N, JAX_PROCESS_ID=i,
# which sinks_jax passes to jax.distributed.initialize() (train/sharding.py), exactly as the
# hosts of a pod; P defaults to a free port. --cpu-devices K: each process sees K fake CPU
# devices (JAX_PLATFORMS=cpu); --one-gpu-each: process i sees GPU i (CUDA_VISIBLE_DEVICES=i).
# --logs DIR: process i writes DIR/process_i.log instead of the terminal. Ctrl-C or SIGTERM
# is passed on to every process once (each saves a checkpoint after the step they agree on);
# if one process fails, the others are sent SIGTERM and, after --grace seconds (default 30),
# SIGKILL, since they would wait for it forever. Exit status: the first failure's, else 0.
set -euo pipefail

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }
n=2; cpu_devices=0; one_gpu=0; port=""; logs=""; grace=30; dry=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    -n) n="$2"; shift 2 ;;
    --cpu-devices) cpu_devices="$2"; shift 2 ;;
    --one-gpu-each) one_gpu=1; shift ;;
    --port) port="$2"; shift 2 ;;
    --logs) logs="$2"; shift 2 ;;
    --grace) grace="$2"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) echo "multiprocess.sh: unknown option $1 (put the command after --)." >&2; exit 2 ;;
  esac
done
fail() { echo "multiprocess.sh: $1" >&2; exit 2; }
[[ $# -gt 0 ]] || fail "no command given after --."
[[ "$n" =~ ^[1-9][0-9]*$ ]] || fail "-n $n is not a positive integer."
[[ "$cpu_devices" =~ ^[0-9]+$ ]] || fail "--cpu-devices $cpu_devices is not a positive integer."
[[ "$grace" =~ ^[0-9]+$ ]] || fail "--grace $grace is not a whole number of seconds."
if [[ "$cpu_devices" -gt 0 && "$one_gpu" -eq 1 ]]; then
  fail "--cpu-devices and --one-gpu-each exclude each other; choose one."
fi
if [[ -z "$port" ]]; then
  port=$("${PYTHON:-python3}" -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')
fi
[[ "$port" =~ ^[0-9]+$ ]] || fail "--port $port is not a port number."

process_env() {  # the environment of process $1, as NAME=VALUE words.
  envs=(JAX_COORDINATOR_ADDRESS="localhost:${port}" JAX_NUM_PROCESSES="$n" JAX_PROCESS_ID="$1")
  if [[ "$one_gpu" -eq 1 ]]; then envs+=(CUDA_VISIBLE_DEVICES="$1"); fi
  if [[ "$cpu_devices" -gt 0 ]]; then
    envs+=(JAX_PLATFORMS=cpu
           XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=${cpu_devices}")
  fi
}

if [[ "$dry" -eq 1 ]]; then
  for ((i = 0; i < n; i++)); do process_env "$i"; printf '%q ' env "${envs[@]}" "$@"; echo; done
  exit 0
fi
[[ -z "$logs" ]] || mkdir -p "$logs"

running=()
signal_all() {  # signal_all SIGNAL: to every process (group) still running.
  for pid in ${running[@]+"${running[@]}"}; do kill -s "$1" -- "-$pid" 2>/dev/null || true; done
}
# Job control puts each process in its own process group, so a Ctrl-C on the terminal
# reaches it once, from here (a second Ctrl-C, passed on too, aborts without saving). So no
# command may run in the foreground from now on (it would take the terminal's Ctrl-C).
set -m
forwarded=0
trap 'forwarded=1; signal_all INT' INT
trap 'forwarded=1; signal_all TERM' TERM
trap 'signal_all KILL' EXIT
for ((i = 0; i < n; i++)); do
  process_env "$i"
  if [[ -n "$logs" ]]; then
    env "${envs[@]}" "$@" >"$logs/process_$i.log" 2>&1 &
  else
    env "${envs[@]}" "$@" &
  fi
  running+=("$!")
done

status=0; kill_at=-1
while [[ ${#running[@]} -gt 0 ]]; do
  still=()
  for pid in "${running[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then still+=("$pid"); continue; fi
    code=0; wait "$pid" || code=$?
    if [[ "$code" -ne 0 && "$status" -eq 0 ]]; then
      status=$code
      if [[ ${#running[@]} -gt 1 && "$forwarded" -eq 0 ]]; then
        echo "multiprocess.sh: a process exited with status $code; stopping the others." >&2
        signal_all TERM
        kill_at=$((SECONDS + grace))
      fi
    fi
  done
  running=(${still[@]+"${still[@]}"})
  if [[ "$kill_at" -ge 0 && "$SECONDS" -ge "$kill_at" ]]; then signal_all KILL; fi
  if [[ ${#running[@]} -gt 0 ]]; then sleep 1 & wait "$!" || true; fi
done
exit "$status"
