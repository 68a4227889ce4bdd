#!/usr/bin/env bash
# The GPU figures of docs/BENCHMARKS.md ("GPU"), in one go, on a machine with one CUDA GPU:
#   scripts/gpu_bench.sh OUT_DIR CIFAR10_FOLDER
# OUT_DIR receives a few files (logs, bench JSON, a summary); CIFAR10_FOLDER holds train/ and test/ class folders.
# Steps: environment and import times; the CUDA sync test; the bench (raw loop vs Lightning path) at batch 256,
# 512 and 1024; the bench's overhead mode; 10-epoch runs of the default model at lr 0.4 (batch 512 and 1024);
# the README's default command, timed, with the progress bar on (in a pseudo-terminal).
# EXTRA (environment): overrides appended to every command, e.g. for a smoke test on a CPU.
set -uo pipefail
out=$(realpath "$1"); data=$2
read -ra extra <<< "${EXTRA:-}"
mkdir -p "$out"
tmp=$(mktemp -d)
log() { printf '\n### %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
{
  log "environment"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import sys, torch, lightning; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'lightning', lightning.__version__)"
  log "import times (s)"
  for m in train report shapes; do
    python3 -c "import time; t=time.perf_counter(); import downsample_lab.$m; print('$m', round(time.perf_counter()-t, 2))"
  done
  log "CUDA sync test"
  python3 -m pytest -q -p no:cacheprovider tests/test_sync_free.py 2>&1 | tail -3
} > "$out/env.log" 2>&1

log "bench" > "$out/bench.log"
python3 -m downsample_lab.bench -m trainer=gpu 'model.widths=[64,128,256]' 'bench.strategies=[maxpool,conv,blurpool]' \
  data.batch_size=256,512,1024 bench.window_steps=20 bench.windows=7 "hydra.sweep.dir=$tmp/bench" "${extra[@]}" >> "$out/bench.log" 2>&1
python3 -m downsample_lab.bench --config-name bench_overhead trainer=gpu "hydra.run.dir=$tmp/overhead" "${extra[@]}" >> "$out/bench.log" 2>&1
python3 - "$tmp" "$out/bench.json" <<'PY'
import json, pathlib, sys
runs = {str(p.relative_to(sys.argv[1])): json.loads(p.read_text()) for p in sorted(pathlib.Path(sys.argv[1]).rglob("bench.json"))}
pathlib.Path(sys.argv[2]).write_text(json.dumps(runs, indent=1))
PY

log "recipe: 10 epochs, lr 0.4, batch 512 and 1024" > "$out/train.log"
python3 -m downsample_lab.train -m data.source=folder "data.root=$data" data.batch_size=512,1024 optim.lr=0.4 \
  "hydra.sweep.dir=$tmp/recipe" "${extra[@]}" >> "$out/train.log" 2>&1
log "the README's default command, bar on" >> "$out/train.log"
t0=$(date +%s%N)
script -qec "python3 -m downsample_lab.train data.source=folder data.root=$data hydra.run.dir=$tmp/default ${EXTRA:-}" /dev/null \
  | tr '\r' '\n' | grep -v '^Epoch .*it/s' >> "$out/train.log" 2>&1
echo "wall ms: $(( ($(date +%s%N) - t0) / 1000000 ))" >> "$out/train.log"
python3 - "$tmp" "$out/runs.json" <<'PY'
import json, pathlib, sys
runs = {str(p.parent.relative_to(sys.argv[1])): json.loads(p.read_text()) for p in sorted(pathlib.Path(sys.argv[1]).rglob("status.json"))}
for p in pathlib.Path(sys.argv[1]).rglob("overrides.yaml"):
    key = str(p.parent.parent.relative_to(sys.argv[1]))
    if key in runs:
        runs[key]["overrides"] = p.read_text()
pathlib.Path(sys.argv[2]).write_text(json.dumps(runs, indent=1))
PY
cp "$tmp/default/train.log" "$out/default_train.log" 2>/dev/null
echo done
