#!/usr/bin/env bash
# Reproduce the downsampling ablation with one command: run the sweep, then write the report.
#
#   scripts/reproduce_ablation.sh quick  [overrides]   # experiment=ablation_quick: 9 arms x 3 seeds, ~45 min on 2 CPU cores
#   scripts/reproduce_ablation.sh full   [overrides]   # experiment=ablation: 9 arms x 5 seeds, one GPU
#   scripts/reproduce_ablation.sh allcnn [overrides]   # experiment=allcnn: Springenberg et al. Table 3, one GPU, hours
#   scripts/reproduce_ablation.sh allcnn_quick [overrides]  # experiment=allcnn_quick: its CPU-sized smoke version
#   scripts/reproduce_ablation.sh fast     [overrides]   # experiment=ablation_fast: airbench-class, 9 arms x 10 seeds, one GPU
#   scripts/reproduce_ablation.sh fast_cpu [overrides]   # experiment=ablation_fast_cpu: half width, 9 arms x 3 seeds, 2 CPU cores
#   scripts/reproduce_ablation.sh fair_cpu [overrides]   # the fair study on 2 CPU cores: tune, select, 5 fresh seeds, report
#   scripts/reproduce_ablation.sh fair     [overrides]   # the fair study at GPU scale: full width, 10 fresh seeds, one GPU
#
# Overrides go to every job, e.g. a local copy of CIFAR-10:
#   scripts/reproduce_ablation.sh quick data.source=folder data.root=$HOME/.cache/cifar10/cifar10-jpeg
# The report is written even when some jobs failed (they are listed in it); the exit code is then non-zero.
#
# The fair studies run four steps into one study directory (STUDY_DIR, default outputs/study/<mode>):
#   tune/            the tuning sweep (experiment=<mode>_tune): every arm, the same lr grid and seed, validation
#                    split only
#   selection        python -m downsample_lab.report.selection: per arm, the setting with the best mean validation
#                    accuracy of the final weights; writes selection.md and final_commands.txt
#   final/<arm>/     each arm's winning setting on fresh seeds (experiment=<mode>, all 50,000 training images)
#   report           selection.md with the final test accuracies, and report.md (Δ vs maxpool with 95% CI,
#                    Holm-adjusted p, shift-robustness curves, params, FLOPs, images/s) over final/
# and study.json (command, commit, machine, versions, wall time of each step). Run the same command again to
# continue a killed study: finished jobs are kept, an interrupted one continues from its last checkpoint.
# Overrides must not contain spaces.
set -uo pipefail

usage() { sed -n '2,/^set -uo pipefail$/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
modes="quick, full, allcnn, allcnn_quick, fast, fast_cpu, fair_cpu or fair"
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") echo "error: give a mode first: $modes (--help says what each runs)" >&2; exit 2 ;;
esac
mode=$1
shift
case "$mode" in
  quick) experiment=ablation_quick ;;
  full) experiment=ablation ;;
  allcnn) experiment=allcnn ;;
  allcnn_quick) experiment=allcnn_quick ;;
  fast) experiment=ablation_fast ;;
  fast_cpu) experiment=ablation_fast_cpu ;;
  fair_cpu) experiment=fair_cpu; seeds="${FINAL_SEEDS:-0,1,2,3,4}" ;;
  fair) experiment=fair; seeds="${FINAL_SEEDS:-0,1,2,3,4,5,6,7,8,9}" ;;
  *) echo "error: unknown mode '$mode'; use $modes (--help says what each runs)" >&2; exit 2 ;;
esac

python="${PYTHON:-python}"

# A sweep into $1 with the other arguments, or, when $1 holds a sweep already, that sweep resumed.
sweep() {
  local dir=$1
  shift
  if [ -f "$dir/multirun.yaml" ]; then
    "$python" -m downsample_lab.train -m resume=true "hydra.sweep.dir=$dir" "$@"
  else
    "$python" -m downsample_lab.train -m "$@" "hydra.sweep.dir=$dir"
  fi
}

if [ "$mode" != fair_cpu ] && [ "$mode" != fair ]; then
  sweep_dir="${SWEEP_DIR:-outputs/${experiment}/$(date +%Y-%m-%d_%H-%M-%S)}"
  "$python" -m downsample_lab.train -m "experiment=${experiment}" "hydra.sweep.dir=${sweep_dir}" "$@"
  sweep_status=$?
  if [ ! -d "$sweep_dir" ]; then
    exit "$sweep_status"
  fi
  "$python" -m downsample_lab.report "$sweep_dir" || exit $?   # prints "Report: <sweep dir>/report.md"
  exit "$sweep_status"
fi

study="${STUDY_DIR:-outputs/study/${mode}}"
mkdir -p "$study"
log="$study/steps.tsv"   # step, start and end (epoch seconds), exit code: study.json is made from it
step() {
  local name=$1 start rc
  shift
  start=$(date +%s)
  echo "### ${name} ($(date -u +%H:%M:%S))"
  "$@"
  rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$start" "$(date +%s)" "$rc" >> "$log"
  return "$rc"
}
finals() {  # each line of final_commands.txt: python -m downsample_lab.train -m <overrides> hydra.sweep.dir=<dir>
  local line words dir overrides rc=0
  while read -r line; do
    read -ra words <<< "$line"
    dir="" overrides=()
    for w in "${words[@]:4}"; do
      if [[ $w == hydra.sweep.dir=* ]]; then dir=${w#hydra.sweep.dir=}; else overrides+=("$w"); fi
    done
    sweep "$dir" "${overrides[@]}" < /dev/null || rc=1  # the file stays this loop's input
  done < "$study/final_commands.txt"
  return "$rc"
}

status=0
if ! step tune sweep "$study/tune" "experiment=${experiment}_tune" "$@"; then
  echo "error: the tuning sweep did not complete (see above); every arm needs its whole grid before the" \
    "selection: fix the cause, then run the same command again to continue" >&2
  exit 1
fi
step select "$python" -m downsample_lab.report.selection "$study/tune" --out "$study" --seeds "$seeds" \
  --sweep-dir "$study/final" --command "python -m downsample_lab.train -m experiment=${experiment} $*" || exit $?
step final finals || status=1
step report_selection "$python" -m downsample_lab.report.selection "$study/tune" --final "$study/final" --out "$study" \
  --seeds "$seeds" --command "python -m downsample_lab.train -m experiment=${experiment} $*" || status=1
step report "$python" -m downsample_lab.report "$study/final" --out "$study" || status=1
"$python" - "$study" "$mode" "$*" <<'PY'
# study.json: what ran, where and how long (every attempt of each step: a resumed study adds attempts)
import json, platform, re, subprocess, sys
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path

study, mode, extra = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
steps = {}
for line in (study / "steps.tsv").read_text().splitlines():
    name, start, end, rc = line.split("\t")
    steps.setdefault(name, []).append({"start": int(start), "seconds": int(end) - int(start), "exit": int(rc)})
def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        return None
cpu = next((l.split(":", 1)[1].strip() for l in (run("lscpu") or "").splitlines() if l.startswith("Model name")), None)
# Versions read from the installed files and the GPU from nvidia-smi: importing torch would take ~5 s. (torch's
# package metadata leaves out its build, e.g. +cu130; torch/version.py has it.)
torch_version = re.search(r"__version__ = .([^'\"]+)", (Path(find_spec("torch").origin).parent / "version.py").read_text())
gpu = (run("nvidia-smi", "--query-gpu=name", "--format=csv,noheader") or "").splitlines()
record = {
    "command": f"scripts/reproduce_ablation.sh {mode} {extra}".strip(),
    "commit": run("git", "rev-parse", "HEAD"),
    "machine": {"cpu": cpu, "cores": run("nproc"), "gpu": gpu[0] if gpu else None, "platform": platform.platform()},
    "versions": {"python": platform.python_version(), "torch": torch_version[1] if torch_version else version("torch"),
                 "lightning": version("lightning"), "hydra": version("hydra-core")},
    "steps": steps,
    "wall_seconds": sum(a["seconds"] for attempts in steps.values() for a in attempts),
}
(study / "study.json").write_text(json.dumps(record, indent=1) + "\n")
print(f"Study: {study} ({record['wall_seconds']} s in all); selection.md, report.md, study.json")
PY
exit "$status"
