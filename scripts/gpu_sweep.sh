#!/usr/bin/env bash
# Issue 17's GPU figures in one call of a lent GPU machine: the strong regime's wall time per run in a sweep,
# one job at a time and k at once on the one GPU.
#   scripts/gpu_sweep.sh OUT_DIR CIFAR10_FOLDER [K...]          (K default: 1 2 4 8)
# For each k, the same jobs: experiment=ablation_fast cut to SEEDS (default 0,1: 9 arms x 2 seeds = 18 runs),
# k=1 through Hydra's basic launcher, k>1 through hydra/launcher=parallel hydra.launcher.n_jobs=k. OUT_DIR gets
# sweep.log (each sweep's console tail) and sweeps.md: per k the sweep's wall time, seconds per run, the
# projection to the 50 runs of the target (<= 150 s) and to ablation_fast's 90, the jobs' median wall and
# training-step seconds (status.json "times"), and whether every run completed. About 5 minutes on an H200.
# The GPU machine lacks the parallel launcher: after ../shared/gpu/prepare, add its wheels to what travels,
#   pip download --no-deps -d .gpu-carry hydra-joblib-launcher==1.2.0 joblib==1.6.0
# EXTRA (environment): overrides appended to every sweep, e.g. for a smoke test on a CPU:
#   SEEDS=0 EXTRA="trainer=cpu data.source=synthetic model.widths=[8,16,16] optim.train_epochs=0.2 \
#     model.downsample=maxpool,conv" scripts/gpu_sweep.sh /tmp/out unused 1 2
set -uo pipefail
out=$(realpath "$1"); data=$2; shift 2
ks=("$@"); [ ${#ks[@]} -eq 0 ] && ks=(1 2 4 8)
read -ra extra <<< "${EXTRA:-}"
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT   # the runs' checkpoints; what is kept goes to OUT_DIR
: > "$out/sweep.log"
for k in "${ks[@]}"; do
  launcher=()
  if [ "$k" != 1 ]; then launcher=(hydra/launcher=parallel "hydra.launcher.n_jobs=$k"); fi
  echo "### k=$k ($(date -u +%H:%M:%S))" >> "$out/sweep.log"
  t0=$(date +%s%N)
  python3 -m downsample_lab.train -m experiment=ablation_fast "${launcher[@]}" "seed=${SEEDS:-0,1}" \
    data.source=folder "data.root=$data" "hydra.sweep.dir=$tmp/k$k" "${extra[@]}" 2>&1 | tail -5 >> "$out/sweep.log"
  echo "$k $(( ($(date +%s%N) - t0) / 1000000 ))" >> "$tmp/walls"
done
python3 - "$tmp" "$out/sweeps.md" <<'PY'
import json, pathlib, statistics, sys
tmp = pathlib.Path(sys.argv[1])
rows = ["| k | runs | completed | wall s | s per run | 50 runs (s) | 90 runs (s) | job wall median s | train steps median s |",
        "|---|---|---|---|---|---|---|---|---|"]
for line in (tmp / "walls").read_text().split("\n"):
    if not line:
        continue
    k, ms = line.split()
    jobs = [json.loads(p.read_text()) for p in sorted((tmp / f"k{k}").glob("*/status.json"))]
    done = [j for j in jobs if j.get("status") == "completed"]
    wall = int(ms) / 1000
    per = wall / max(len(jobs), 1)
    med = lambda key: statistics.median(j["times"][key] for j in done) if done else float("nan")
    rows.append(f"| {k} | {len(jobs)} | {len(done)} | {wall:.1f} | {per:.2f} | {50 * per:.0f} | {90 * per:.0f} | "
                f"{med('wall'):.2f} | {med('train_steps'):.2f} |")
pathlib.Path(sys.argv[2]).write_text("\n".join(rows) + "\n")
print("\n".join(rows))
PY
