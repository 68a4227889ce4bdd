#!/usr/bin/env bash
# Reproduce the downsampling ablation with one command: run the sweep, then write the report.
#
#   scripts/reproduce_ablation.sh quick  [overrides]   # experiment=ablation_quick: 5 arms x 3 seeds, ~20 min on 2 CPU cores
#   scripts/reproduce_ablation.sh full   [overrides]   # experiment=ablation: 5 arms x 5 seeds, one GPU
#   scripts/reproduce_ablation.sh allcnn [overrides]   # experiment=allcnn: Springenberg et al. Table 3, one GPU, hours
#   scripts/reproduce_ablation.sh allcnn_quick [overrides]
#   scripts/reproduce_ablation.sh fast     [overrides]   # experiment=ablation_fast: airbench-class, 5 arms x 10 seeds, one GPU
#   scripts/reproduce_ablation.sh fast_cpu [overrides]   # experiment=ablation_fast_cpu: half width, 5 arms x 3 seeds, 2 CPU cores
#
# Overrides go to every job, e.g. a local copy of CIFAR-10:
#   scripts/reproduce_ablation.sh quick data.source=folder data.root=~/.cache/cifar10/cifar10-jpeg
# The report is written even when some jobs failed (they are listed in it); the exit code is then non-zero.
set -uo pipefail

mode="${1:-quick}"
[ $# -gt 0 ] && shift
case "$mode" in
  quick) experiment=ablation_quick ;;
  full) experiment=ablation ;;
  allcnn) experiment=allcnn ;;
  allcnn_quick) experiment=allcnn_quick ;;
  fast) experiment=ablation_fast ;;
  fast_cpu) experiment=ablation_fast_cpu ;;
  *) echo "error: unknown mode '$mode'; use quick, full, allcnn, allcnn_quick, fast or fast_cpu" >&2; exit 2 ;;
esac

python="${PYTHON:-python}"
sweep_dir="${SWEEP_DIR:-outputs/${experiment}/$(date +%Y-%m-%d_%H-%M-%S)}"

"$python" -m downsample_lab.train -m "experiment=${experiment}" "hydra.sweep.dir=${sweep_dir}" "$@"
sweep_status=$?
if [ ! -d "$sweep_dir" ]; then
  exit "$sweep_status"
fi
"$python" -m downsample_lab.report "$sweep_dir" || exit $?   # prints "Report: <sweep dir>/report.md"
exit "$sweep_status"
