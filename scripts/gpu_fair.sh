#!/usr/bin/env bash
# The fair study at GPU scale (docs/studies.md, "The fair study") on a machine with one CUDA GPU:
#   scripts/gpu_fair.sh OUT_DIR CIFAR10_FOLDER [SECONDS]
# Runs scripts/reproduce_ablation.sh fair (27 tuning runs, the selection, 9 arms x 10 fresh seeds, the reports)
# into STUDY_DIR (default /tmp/fair-study), stopped with Ctrl-C's signal after SECONDS (default: no limit), and
# packs whatever is there to commit (selection.md, report.md, results.csv, runs.csv, the plots,
# shift_robustness.csv, study.json, study.log; no checkpoints) into OUT_DIR/fair-study.tar.gz, also when cut
# short. experiment=fair runs 4 jobs at once (hydra/launcher=parallel; EXTRA=hydra.launcher.n_jobs=<k> changes
# it). One job at a time, at ~5 s a run, 117 runs took ~11 minutes on one H200 (estimate; not yet run with
# parallel jobs on a GPU): give SECONDS (e.g. 540) and, if it is cut short, call again at once with the same
# STUDY_DIR while the machine is warm: the study continues where it stopped. EXTRA (environment): overrides appended to every
# training command, e.g. trainer=cpu and a tiny model for a smoke test on a CPU. The GPU machine lacks the
# parallel launcher: after ../shared/gpu/prepare,
#   pip download --no-deps -d .gpu-carry hydra-joblib-launcher==1.2.0 joblib==1.6.0
set -uo pipefail
out=$(realpath "$1"); data=$2; limit=${3:-0}
read -ra extra <<< "${EXTRA:-}"
mkdir -p "$out"
study="${STUDY_DIR:-/tmp/fair-study}"
mkdir -p "$study"
here=$(cd "$(dirname "$0")/.." && pwd)
pack() {
  (cd "$study" && tar -czf "$out/fair-study.tar.gz" --ignore-failed-read selection.md selection.csv report.md \
    results.csv runs.csv val_acc.png acc_vs_throughput.png shift_robustness.png shift_robustness.csv study.json \
    study.log final_commands.txt steps.tsv 2>/dev/null)
  cp "$study/report.md" "$study/selection.md" "$out/" 2>/dev/null
  echo "study: $study (packed into $out/fair-study.tar.gz)"
}
trap pack EXIT
echo "### $(date -u +%H:%M:%S) study in $study" >> "$study/study.log"
STUDY_DIR="$study" PYTHON="${PYTHON:-python3}" timeout --signal=INT "${limit/#0/infinity}" \
  bash "$here/scripts/reproduce_ablation.sh" fair data.source=folder "data.root=$data" "${extra[@]}" \
  >> "$study/study.log" 2>&1
status=$?
grep -v "INFO\] - Epoch" "$study/study.log" | tail -60
exit "$status"
