#!/usr/bin/env bash
# Multi-process A2C training throughput on one machine: P processes x D forced CPU devices each,
# joined over loopback with jax.distributed, the same global batch (256 envs x 16 steps) for every
# setting. Prints the median env-steps/s of the blocks of updates after the first (which compiles),
# from each run's learning_curve.csv. Usage: bash benchmarks/multihost_scaling.sh ["P D" ...]
# (default settings: "1 1" "1 2" "2 1" "4 1"). Run from the repository root with the package installed.
set -euo pipefail
cd "$(dirname "$0")/.."
FLAGS="--dataset synthetic --num-envs 256 --rollout-steps 16 --total-steps $((256 * 16 * 40)) --updates-per-call 5
       --checkpoint-every 40 --eval-episodes 0 --no-progress --no-tensorboard --parallel shard_map"
settings=("$@")
[ ${#settings[@]} -eq 0 ] && settings=("1 1" "1 2" "2 1" "4 1")
for setting in "${settings[@]}"; do
  read -r P D <<< "$setting"
  out=$(mktemp -d)
  port=$(python -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
  pids=()
  for ((i = 0; i < P; i++)); do
    multi=()
    [ "$P" -gt 1 ] && multi=(--coordinator "127.0.0.1:$port" --num-processes "$P" --process-id "$i")
    # shellcheck disable=SC2086
    JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES=$D python -m agents.a2c $FLAGS --num-devices "$D" --out "$out/run" \
      "${multi[@]}" > "$out/process$i.log" 2>&1 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
  python - "$out/run/learning_curve.csv" "$P" "$D" <<'PY'
import csv, statistics, sys
speeds = [float(row["charts/steps_per_second"]) for row in csv.DictReader(open(sys.argv[1]))]
blocks = sorted(set(speeds), key=speeds.index)  # one value per block of updates
print(f"processes={sys.argv[2]} devices_per_process={sys.argv[3]} env_steps_per_s={statistics.median(blocks[1:]):.0f}")
PY
  rm -rf "$out"
done
