#!/usr/bin/env bash
# One prepared GPU check: throughput, a walk training run and its evaluation, one sweep
# iteration, and the cost of full-float32 matmuls, every stage bounded in time, all within
# GPU_CHECK_BUDGET_S (default 540 s = 9 minutes), results packed into $OUT.
#
# On the GPU machine (after `bash tools/prepare_device.sh` here), with the device tool:
#     run(command="bash tools/gpu_check.sh", carry=[".device"], timeout_s=600)
# On CPU, to check the script itself at tiny sizes (batches of 2, a few iterations, native
# physics where the stage allows; a few minutes on 2 cores):
#     JAX_PLATFORMS=cpu bash tools/gpu_check.sh --dry-run        # or GPU_CHECK_DRY=1
#
# Stages (default order on a GPU: install probe bench-4096 train eval sweep bench-1024
# bench-16384 precision-4096; GPU_CHECK_STAGES="bench-4096 train eval" picks and orders them):
#   install        pip-installs .device/whl/*.whl into $WORK/site (dry run: checks that they
#                  would install for CPython 3.12)
#   probe          versions, devices, XLA flags, matmul precision; nvidia-smi
#   bench-B        mimic-mjx bench --json --batch B --rows physics,env,train (MJX physics),
#                  B = 1024, 4096, 16384 (dry run: one batch of 2, the env row only)
#   precision-4096 the same bench at 4096 (rows physics,train) with
#                  JAX_DEFAULT_MATMUL_PRECISION=default, i.e. JAX's own default (TF32 matmuls
#                  on NVIDIA GPUs since Ampere); bench-4096 ran with the package's "highest"
#   train          mimic-mjx train --config walk --set env.physics=mjx
#                  --set time_limit_minutes=M, M = min(GPU_CHECK_TRAIN_MINUTES (4), what the
#                  budget leaves after the eval and sweep limits); skipped under 1 minute
#   eval           mimic-mjx eval RUN --json
#   export         the run's policy alone (mimic_mjx.policy.export: weights and normaliser, a few
#                  MB; the checkpoint also holds every environment's physics state)
#   sweep          mimic-mjx sweep --config configs/sweep_reward_scales.yaml --set iterations=1
#                  (8 members x 512 environments)
# A stage runs under `timeout` with min(its cap, time left); one that would get under
# GPU_CHECK_MIN_STAGE_S (30 s) is skipped and recorded so. After every stage $OUT is rewritten,
# so a check cut off from outside still returns what it finished.
#
# $OUT (the device tool returns at most 8 files, at most two folders down):
#   summary.json, summary.md  every stage's status, wall time and key numbers
#   bench.json                every bench report, keyed by stage
#   logs.tgz                  every stage's stdout and stderr, nvidia-smi
#   walk_run.tgz              the training run without checkpoints (config, metrics.jsonl)
#   walk_checkpoint.tgz       its latest checkpoint (dropped if over 15 MiB: 4096 envs' states)
#   walk_policy.tgz           the exported policy (mimic-mjx eval and render take its folder)
#   sweep_run.tgz             the sweep directory without checkpoints
set -uo pipefail
{ # The whole script is one compound command, read before it runs: editing the file during a
  # check cannot change what the running check does next.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
dry=${GPU_CHECK_DRY:-0}
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry=1 ;;
    -h|--help) sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check: unknown argument $arg (known: --dry-run)" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python3}
OUT=${OUT:-$root/runs/gpu_check}
WORK=${GPU_CHECK_WORK:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
mkdir -p "$OUT" "$WORK/logs"
(cd "$OUT" && rm -f summary.json summary.md bench.json logs.tgz walk_run.tgz walk_checkpoint.tgz walk_policy.tgz \
  sweep_run.tgz)
: > "$WORK/stages.tsv"
export PYTHONUNBUFFERED=1 MIMIC_MJX_NO_FETCH=1
# train, eval and sweep keep compiled programs here (bench keeps none: its compile_s stay compiles).
export MIMIC_MJX_COMPILE_CACHE=${MIMIC_MJX_COMPILE_CACHE:-$WORK/jax_cache}
if [ -d "$root/.device/clips" ] && [ -z "${MIMIC_MJX_CLIPS:-}" -o "$dry" = 0 ]; then
  export MIMIC_MJX_CLIPS=$root/.device/clips
fi

if [ "$dry" = 1 ]; then
  budget=${GPU_CHECK_BUDGET_S:-2400}
  stages=${GPU_CHECK_STAGES:-install probe bench-2 precision-2 train eval export sweep}
  # native: the rehearsal checks the stage's plumbing, and a cold MJX env compile costs a minute on CPU
  bench_rows=env; precision_rows=env; bench_steps=32; bench_physics=native
  train_minutes=0.01  # stops after the first iteration: exercises the time limit and its checkpoint
  small=(--set num_envs=2 --set horizon=8 --set env.episode_seconds=1.0 --set iterations=3 --set checkpoint_every=1)
  train_args=(--set env.physics=native "${small[@]}")
  eval_args=(--episodes 1)
  sweep_args=(--set num_envs=2 --set "set=[env.episode_seconds=1.0, horizon=8]")
  declare -A cap=([install]=120 [probe]=120 [bench]=900 [precision]=900 [train]=900 [eval]=600 [export]=300
                  [sweep]=1200)
else
  budget=${GPU_CHECK_BUDGET_S:-540}
  # Breadth first: one bench, then every other kind of stage, then the other batches and the
  # precision cost, so that a first run whose compiles take longer than hoped still shows
  # whether each command works on the GPU.
  stages=${GPU_CHECK_STAGES:-install probe bench-4096 train eval export sweep bench-1024 bench-16384 precision-4096}
  bench_rows=physics,env,train; precision_rows=physics,train; bench_steps=64; bench_physics=mjx
  train_minutes=${GPU_CHECK_TRAIN_MINUTES:-4}
  train_args=(--set env.physics=mjx)
  eval_args=()
  sweep_args=(--set "set=[env.physics=mjx]")
  declare -A cap=([install]=60 [probe]=60 [bench]=150 [precision]=120 [train]=330 [eval]=90 [export]=60
                  [sweep]=150)
fi
stages=$(echo "$stages" | tr ',' ' ')
min_stage=${GPU_CHECK_MIN_STAGE_S:-30}
start=$SECONDS
deadline=$((start + budget))
run_dir=$WORK/walk
sweep_dir=$WORK/sweep
policy_dir=$WORK/walk_policy
probe_ok=1

# The summary and the archives; rerun after every stage.
pack() {
  "$PY" "$root/tools/gpu_check_summary.py" --work "$WORK" --out "$OUT" --dry-run "$dry" --budget "$budget" \
    --stages "$stages" --elapsed $((SECONDS - start)) 2> "$WORK/logs/summary.err" || echo "gpu_check: summary failed (logs/summary.err)" >&2
  tar czf "$OUT/logs.tgz" -C "$WORK" logs stages.tsv 2> /dev/null
}

pack_runs() {
  if [ -d "$run_dir" ]; then
    tar czf "$OUT/walk_run.tgz" -C "$WORK" --exclude=walk/checkpoints walk
    local latest
    latest=$(ls -1 "$run_dir/checkpoints" 2> /dev/null | grep -E '^[0-9]+$' | sort -n | tail -1)
    if [ -n "$latest" ]; then
      tar czf "$OUT/walk_checkpoint.tgz" -C "$WORK" "walk/config.yaml" "walk/checkpoints/$latest"
      if [ "$(stat -c %s "$OUT/walk_checkpoint.tgz")" -gt $((15 * 1024 * 1024)) ]; then
        echo "walk_checkpoint.tgz over 15 MiB: dropped" >> "$WORK/logs/pack.log"
        rm -f "$OUT/walk_checkpoint.tgz"
      fi
    fi
  fi
  [ -d "$policy_dir" ] && tar czf "$OUT/walk_policy.tgz" -C "$WORK" walk_policy
  [ -d "$sweep_dir" ] && tar czf "$OUT/sweep_run.tgz" -C "$WORK" --exclude=sweep/checkpoints sweep
  return 0
}

record() {  # name status rc wall_s limit_s command
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$WORK/stages.tsv"
}

# run_stage NAME CAP [ENV=VALUE ...] -- COMMAND...: stdout to logs/NAME.out, stderr to logs/NAME.err.
# Returns 0 when the command succeeded, 1 when it failed or timed out, 2 when it was skipped.
run_stage() {
  local name=$1 stage_cap=$2; shift 2
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  local left=$((deadline - SECONDS)) limit
  left=$(( left < 0 ? 0 : left ))
  limit=$(( stage_cap < left ? stage_cap : left ))
  if [ "$probe_ok" = 0 ] && [ "$name" != install ] && [ "$name" != probe ]; then
    record "$name" "skipped: the probe failed" "" 0 0 "$*"; return 2
  fi
  if [ "$limit" -lt "$min_stage" ]; then
    record "$name" "skipped: ${left} s of the budget left" "" 0 0 "$*"; return 2
  fi
  echo "[gpu_check] $(date +%T) $name (limit ${limit} s): $*" >&2
  local t0=$SECONDS rc
  env "${envs[@]}" timeout -k 10 "$limit" "$@" > "$WORK/logs/$name.out" 2> "$WORK/logs/$name.err"
  rc=$?
  local status=ok
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then status=timeout; elif [ "$rc" != 0 ]; then status=failed; fi
  record "$name" "$status" "$rc" $((SECONDS - t0)) "$limit" "$*"
  echo "[gpu_check] $(date +%T) $name: $status (rc $rc, $((SECONDS - t0)) s)" >&2
  [ "$status" = ok ]
}

mm=("$PY" -m mimic_mjx)

stage_install() {
  local wheels=("$root"/.device/whl/*.whl)
  if [ ! -e "${wheels[0]}" ]; then
    if [ "$dry" = 1 ]; then
      record install "skipped: no .device/whl (run tools/prepare_device.sh)" "" 0 0 ""; return 0
    fi
    record install "failed: no .device/whl (run tools/prepare_device.sh here and carry .device)" "" 0 0 ""
    probe_ok=0; return 1
  fi
  if [ "$dry" = 1 ]; then  # would they install on the device's CPython 3.12, x86-64?
    run_stage install "${cap[install]}" -- "$PY" -m pip install --dry-run -q --no-index --no-deps --only-binary=:all: \
      --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
      --platform manylinux_2_17_x86_64 --target "$WORK/site" "${wheels[@]}"
  else
    run_stage install "${cap[install]}" -- "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target "$WORK/site" "${wheels[@]}"
    [ $? = 1 ] && { probe_ok=0; return 1; }
    export PYTHONPATH=$WORK/site:$root${PYTHONPATH:+:$PYTHONPATH}
  fi
}

stage_probe() {
  command -v nvidia-smi > /dev/null && nvidia-smi > "$WORK/logs/nvidia-smi.txt" 2>&1
  run_stage probe "${cap[probe]}" -- "$PY" "$root/tools/gpu_check_summary.py" --probe "$WORK/probe.json"
  [ $? = 1 ] && probe_ok=0
}

stage_bench() {  # bench-B or precision-B
  local name=$1 kind=${1%%-*} batch=${1#*-} rows=$bench_rows envs=()
  if [ "$kind" = precision ]; then rows=$precision_rows; envs=(JAX_DEFAULT_MATMUL_PRECISION=default); fi
  run_stage "$name" "${cap[$kind]}" "${envs[@]}" -- "${mm[@]}" bench --json --batch "$batch" --rows "$rows" \
    --steps "$bench_steps" --physics "$bench_physics"  # GPU: mjx only (on a CPU bench would add native rows)
  cp "$WORK/logs/$name.out" "$WORK/$name.json" 2> /dev/null
}

stage_train() {
  local minutes=$train_minutes
  if [ "$dry" = 0 ]; then  # leave the eval and sweep their time when they follow
    local left=$((deadline - SECONDS)) reserve=30
    case " $stages " in *" eval "*) reserve=$((reserve + cap[eval])) ;; esac
    case " $stages " in *" export "*) reserve=$((reserve + cap[export])) ;; esac
    case " $stages " in *" sweep "*) reserve=$((reserve + cap[sweep])) ;; esac
    minutes=$("$PY" -c "print(round(min($train_minutes, ($left - $reserve) / 60), 2))")
    if "$PY" -c "import sys; sys.exit(0 if $minutes >= 1 else 1)"; then :; else
      record train "skipped: ${left} s left, under 1 minute of training after the reserves" "" 0 0 ""; return 1
    fi
  fi
  local limit=${cap[train]}  # the limit plus start-up, the iteration that crosses it, the checkpoint
  [ "$dry" = 0 ] && limit=$("$PY" -c "print(min(${cap[train]}, int($minutes * 60) + 90))")
  rm -rf "$run_dir"
  run_stage train "$limit" -- "${mm[@]}" train --config walk --out "$run_dir" --set "time_limit_minutes=$minutes" \
    "${train_args[@]}"
  pack_runs
}

stage_eval() {
  if ! ls "$run_dir/checkpoints" 2> /dev/null | grep -qE '^[0-9]+$'; then
    record eval "skipped: no checkpoint in the training run" "" 0 0 ""; return 1
  fi
  run_stage eval "${cap[eval]}" -- "${mm[@]}" eval "$run_dir" --json "${eval_args[@]}"
  cp "$WORK/logs/eval.out" "$WORK/eval.json" 2> /dev/null
}

stage_export() {
  if ! ls "$run_dir/checkpoints" 2> /dev/null | grep -qE '^[0-9]+$'; then
    record export "skipped: no checkpoint in the training run" "" 0 0 ""; return 1
  fi
  if ! "$PY" -c "from mimic_mjx.policy import export" 2> /dev/null; then
    record export "skipped: this checkout has no mimic_mjx.policy.export" "" 0 0 ""; return 1
  fi
  rm -rf "$policy_dir"
  run_stage export "${cap[export]}" -- "$PY" -c "import sys; from mimic_mjx import policy; print(policy.export(*sys.argv[1:]))" \
    "$run_dir" "$policy_dir"
  pack_runs
}

stage_sweep() {
  rm -rf "$sweep_dir"
  run_stage sweep "${cap[sweep]}" -- "${mm[@]}" sweep --config configs/sweep_reward_scales.yaml --set iterations=1 \
    --out "$sweep_dir" "${sweep_args[@]}"
  pack_runs
}

echo "[gpu_check] $(date +%T) dry_run=$dry budget=${budget}s stages: $stages; work $WORK, out $OUT" >&2
for s in $(echo "$stages" | tr ',' ' '); do
  case "$s" in
    install) stage_install ;;
    probe) stage_probe ;;
    bench-[0-9]*|precision-[0-9]*) stage_bench "$s" ;;
    train) stage_train ;;
    eval) stage_eval ;;
    export) stage_export ;;
    sweep) stage_sweep ;;
    *) record "$s" "skipped: unknown stage" "" 0 0 "" ;;
  esac
  pack
done
command -v nvidia-smi > /dev/null && nvidia-smi > "$WORK/logs/nvidia-smi-end.txt" 2>&1
pack_runs
pack
echo "[gpu_check] $(date +%T) done in $((SECONDS - start)) s; $OUT:" >&2
ls -la "$OUT" >&2
cat "$OUT/summary.md" 2> /dev/null
# Exit status: 1 if a stage failed or timed out (skipped stages do not count).
awk -F'\t' '$2 ~ /^(failed|timeout)/ {bad = 1} END {exit bad}' "$WORK/stages.tsv"
exit
}
