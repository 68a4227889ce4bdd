#!/usr/bin/env bash
# The fair study at GPU scale (README, "The fair study") in one call of a machine with one CUDA GPU:
#   scripts/gpu_fair.sh OUT_DIR CIFAR10_FOLDER
# Runs scripts/reproduce_ablation.sh fair (27 tuning runs, the selection, 9 arms x 10 fresh seeds, the reports)
# into a study directory beside OUT_DIR's, then packs what is to be committed (selection.md, report.md,
# results.csv, runs.csv, the plots, shift_robustness.csv, study.json, study.log) into OUT_DIR/fair-study.tar.gz
# and copies report.md and selection.md beside it. Sized for ~10 minutes on one H200 (one job at a time,
# ~5 s per run). EXTRA (environment): overrides appended to every training command, e.g. for a CPU smoke test.
# STUDY_DIR (environment) continues a study that an earlier call left there.
set -uo pipefail
out=$(realpath "$1"); data=$2
read -ra extra <<< "${EXTRA:-}"
mkdir -p "$out"
study="${STUDY_DIR:-$(mktemp -d)/fair}"
here=$(cd "$(dirname "$0")/.." && pwd)
STUDY_DIR="$study" PYTHON="${PYTHON:-python3}" bash "$here/scripts/reproduce_ablation.sh" fair \
  data.source=folder "data.root=$data" "${extra[@]}" > "$study.log" 2>&1
status=$?
grep -v "INFO\] - Epoch" "$study.log" | tail -60
cp "$study.log" "$study/study.log"
(cd "$study" && tar -czf "$out/fair-study.tar.gz" --ignore-failed-read selection.md selection.csv report.md \
  results.csv runs.csv val_acc.png acc_vs_throughput.png shift_robustness.png shift_robustness.csv study.json \
  study.log final_commands.txt)
cp "$study/report.md" "$study/selection.md" "$out/" 2>/dev/null
exit "$status"
