#!/usr/bin/env bash
# The strong-regime GPU figures of docs/results.md on a machine with one CUDA GPU:
#   scripts/gpu_fast.sh OUT_DIR CIFAR10_FOLDER [SWEEP_SECONDS]
# A one-epoch smoke run of experiment=fast, then experiment=ablation_fast (9 arms x 10 seeds), cut after
# SWEEP_SECONDS (default: no limit), then the report of what completed. OUT_DIR receives sweep.log, jobs.json
# (per job: status, metrics, seconds) and the report (report.md, results.csv).
# EXTRA (environment): overrides appended to every training command, e.g. for a smoke test on a CPU.
# N_JOBS (environment, default 1): jobs of the sweep at once (hydra/launcher=parallel), e.g. N_JOBS=4.
set -uo pipefail
out=$(realpath "$1"); data=$2; limit=${3:-0}
read -ra extra <<< "${EXTRA:-}"
launcher=()
if [ "${N_JOBS:-1}" != 1 ]; then launcher=(hydra/launcher=parallel "hydra.launcher.n_jobs=${N_JOBS}"); fi
mkdir -p "$out"
sweep=$(mktemp -d)/ablation_fast
{
  echo "### smoke: experiment=fast, 0.2 epochs ($(date -u +%H:%M:%S))"
  python3 -m downsample_lab.train experiment=fast data.source=folder "data.root=$data" optim.train_epochs=0.2 \
    trainer.max_epochs=1 "hydra.run.dir=$(dirname "$sweep")/smoke" "${extra[@]}" 2>&1 | tail -4 || exit 1
  echo "### ablation_fast ($(date -u +%H:%M:%S))"
  t0=$(date +%s)
  timeout --signal=INT "${limit/#0/infinity}" python3 -m downsample_lab.train -m experiment=ablation_fast "${launcher[@]}" \
    data.source=folder "data.root=$data" "hydra.sweep.dir=$sweep" "${extra[@]}" 2>&1 | grep -v "^\[.*INFO\] - Epoch" | tail -40
  echo "sweep wall seconds: $(( $(date +%s) - t0 ))"
} > "$out/sweep.log" 2>&1
python3 - "$sweep" "$out/jobs.json" <<'PY'
import json, pathlib, re, sys, datetime as dt
jobs = {}
for status in sorted(pathlib.Path(sys.argv[1]).glob("*/status.json")):
    rec = json.loads(status.read_text())
    stamps = re.findall(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+)\]", (status.parent / "train.log").read_text(), re.M)
    parse = lambda s: dt.datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f")
    rec["seconds"] = (parse(stamps[-1]) - parse(stamps[0])).total_seconds() if len(stamps) > 1 else None
    jobs[status.parent.name] = rec
pathlib.Path(sys.argv[2]).write_text(json.dumps(jobs, indent=1))
PY
python3 -m downsample_lab.report "$sweep" --out "$out/report" >> "$out/sweep.log" 2>&1
echo done
