"""The text of ``report.md``, one function per section: the summary line, the results (arm table, what each
column means, plots, shared settings), the runs not counted, the runs stopped at start-up and the runs of other
tools."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from downsample_lab.console import counted
from downsample_lab.report.arms import (
    BASELINE_KEY,
    BASELINE_VALUE,
    IGNORED_KEYS,
    Arm,
    baseline_differences,
    data_roots,
    is_baseline,
    lost_baseline,
)
from downsample_lab.report.read import (
    ABSENT,
    CONSISTENCY,
    DASH,
    DEGENERATE,
    INTERRUPTED,
    NOT_STARTED,
    TEST_ACC_TTA,
    Run,
    value_text,
)
from downsample_lab.report.render import markdown_table, relative
from downsample_lab.report.stats import HOLM, MIN_CI_RUNS, PAPER_KEY, warmup_excluded
from downsample_lab.study import DATA_DIGEST

# What the results say when training runs were found but none completed (yet).
NOTHING_TO_COMPARE = "No completed run yet: nothing to compare."


@dataclass
class Report:
    """What :func:`build_report` read and wrote: the runs, the arms, the results table and the files."""

    root: Path
    out: Path
    runs: list[Run]
    skipped: list[Run]
    arms: list[Arm]
    keys: list[str]
    labels: dict[Path, str]
    results: pd.DataFrame
    table: pd.DataFrame
    shift: pd.DataFrame  # shift_summary(): the shift-robustness curves per arm, tidy (empty: none logged)
    shift_table: pd.DataFrame
    bench: pd.DataFrame  # report.bench.bench_summary(): the bench runs per setting and strategy (empty: none)
    bench_table: pd.DataFrame
    bench_count: int  # the bench runs summed up in it (those with a readable bench.json)
    bench_left_out: list[tuple[Path, str]]  # the other bench runs, with the reason

    @property
    def path(self) -> Path:
        """``report.md``."""
        return self.out / "report.md"


def report_markdown(rep: Report) -> str:
    """The whole of ``report.md``; without a training run, only the runs of other tools (e.g. a bench sweep)."""
    if not rep.runs:
        found = f"`{rep.root}` holds {counted(len(rep.skipped), 'run')} of other tools (listed below) and no training run"
        lines = ["# Report", "", f"{found}: no arms to compare.", *_bench_section(rep)]
        return "\n".join([*lines, *_other_tools(rep)]).rstrip() + "\n"
    lines = [*_summary(rep), "", "## Results", ""]
    lines += _results(rep) if not rep.table.empty else [NOTHING_TO_COMPARE, ""]
    lines += ["", "## Runs not counted", "", *_not_counted(rep)]
    lines += _stopped_at_start_up(rep)
    lines += _bench_section(rep)
    lines += _other_tools(rep)
    return "\n".join(lines).rstrip() + "\n"


def _summary(rep: Report) -> list[str]:
    started = [r for r in rep.runs if r.status != NOT_STARTED]
    n_not_started = len(rep.runs) - len(started)
    apart = (
        f" {n_not_started} more stopped at start-up, before training (listed apart)." if n_not_started else ""
    )
    n_degenerate = sum(r.status == DEGENERATE for r in started)
    n_interrupted = sum(r.status == INTERRUPTED for r in started)
    return [
        "# Ablation report",
        "",
        f"Runs below `{rep.root}`: {counted(len(started), 'training run')} found, "
        f"{sum(r.status == 'completed' for r in started)} completed and counted, "
        + (f"{n_degenerate} completed but degenerate, " if n_degenerate else "")
        + f"{sum(r.status == 'failed' for r in started)} failed, "
        + (f"{n_interrupted} interrupted, " if n_interrupted else "")
        + f"{sum(r.status in ('running', 'incomplete') for r in started)} running or incomplete "
        f"(listed below, not counted).{apart} Written {time.strftime('%Y-%m-%d %H:%M:%S %z')} by "
        "`python -m downsample_lab.report`.",
        *_lost_baseline(rep),
    ]


def _lost_baseline(rep: Report) -> list[str]:
    lost = lost_baseline(rep.runs)
    if not lost:
        return []
    return [
        "",
        f"**No baseline:** all {len(lost)} `{BASELINE_KEY}={BASELINE_VALUE}` runs collapsed (degenerate, listed below), "
        "so no arm is compared with it (no Δ, no p); `--keep-degenerate` counts them.",
    ]


def _results(rep: Report) -> list[str]:
    arm_desc = ", ".join(f"`{k}`" for k in rep.keys) or "none (every run has the same settings)"
    lines = [
        f"Arms differ in: {arm_desc}. The seed (an arm's replicates) and the keys that say where files "
        "are, how progress is shown or how a run was resumed do not define an arm: "
        + ", ".join(f"`{k}`" for k in sorted(IGNORED_KEYS - {"seed"}))
        + ".",
        "",
        markdown_table(rep.table),
        "",
        *_column_notes(rep),
        "",
        "![Validation accuracy per epoch](val_acc.png)",
        "",
        "![Test accuracy against training throughput](acc_vs_throughput.png)",
        "",
        "Unrounded numbers: `results.csv` (one row per arm, accuracies as fractions) and `runs.csv` "
        "(one row per run).",
        *_shift_section(rep),
    ]
    common = _common_settings(rep.runs, rep.keys)
    if common:
        lines += ["", "Settings shared by every completed run:", "", "`" + "`, `".join(common) + "`"]
    return lines


def _column_notes(rep: Report) -> list[str]:
    """What each column of the arm table means; a note for each optional column the table has."""
    baselines = sorted({a.baseline.label for a in rep.arms if a.baseline})
    warmup = warmup_excluded(rep.arms)  # True, False (no run left its warm-up out) or None (a mix)
    notes = [
        "- **test acc %**: test accuracy of the weights each run tested (its best checkpoint by val/acc, or its final weights with `eval.test_weights`), mean ± sample std (ddof=1) "
        "over the completed runs; **95% CI**: t-distribution interval of the mean (n − 1 degrees of "
        f"freedom). With n = 1 there is no std or CI ({DASH}); with fewer than {MIN_CI_RUNS} runs, or an interval "
        f"reaching outside 0–100 %, the interval is {DASH} with the reason (e.g. `{DASH} (n < {MIN_CI_RUNS})`): "
        "two runs give a t interval too wide to mean anything.",
        "- **Δ vs baseline, pp [95% CI]**: the arm's mean test accuracy minus its baseline's "
        f"({', '.join(f'`{b}`' for b in baselines) or DASH}), in percentage points, with the 95% confidence "
        "interval of that difference (Welch: unequal variances, Welch–Satterthwaite degrees of freedom). "
        "**p vs baseline**: the two-sided Welch's t-test of the same comparison, uncorrected; "
        f"**p Holm**: that p adjusted by the Holm–Bonferroni method (`{HOLM}`, statsmodels' `multipletests`) "
        f"over the family of every arm's test against its baseline in this report ({counted(_family(rep, 'welch_p'), 'test')}"
        f"). {DASH} for a baseline itself, an arm without one (a note says why) and where either side has "
        "fewer than 2 runs (the interval: "
        f"fewer than {MIN_CI_RUNS}, as above); the interval is not adjusted for multiplicity.",
        "- **best val acc %**: each run's final `val/acc_best` (best validation accuracy over its epochs).",
        "- **train images/s**: per run, the mean of the per-epoch `train/images_per_sec` (global "
        "training throughput, evaluation excluded) leaving out the first epoch, which includes warm-up, "
        "when the run has at least 2 epochs; then mean ± std over runs. Throughput is only comparable between runs on "
        "the same machine under the same load."
        + (
            ""
            if warmup
            else f" **Here {'every run' if warmup is False else 'some runs'} had one epoch: "
            "the figure includes the warm-up** (and the first job of a sweep pays its process's too), so it "
            "understates the speed; compare runs of 2 epochs or more."
        ),
        "- **params**, **FLOPs/image**: `model/params` and `model/flops_per_image` (forward pass, "
        "`torch.utils.flop_counter`), mean over the arm's runs.",
    ]
    if DATA_DIGEST in rep.keys:
        notes.append(
            f"- **`{DATA_DIGEST}`**: a checksum of the decoded training and test images and labels a run read. "
            "Arms that differ in it read different images (e.g. the JPEG and the PNG copy of CIFAR-10), and none "
            f"is tested against a baseline that read others; {ABSENT}: runs written before the digest was "
            f"recorded, which cannot be shown to have read the same images as any other arm. Where: {_digest_roots(rep)}."
        )
    notes += [f"- {line}" for line in baseline_caveats(rep.arms)]
    if "TTA test acc %" in rep.table:
        notes.append(
            f"- **TTA test acc %**, **TTA 95% CI**, **TTA Δ**, **TTA p vs baseline**, **TTA p Holm**: the same "
            f"for the final `{TEST_ACC_TTA}` (test-time augmentation, `eval.tta_level`), over the runs that "
            f"logged it; Holm's family is the {_family(rep, 'welch_p_tta')} TTA tests, apart from the plain ones."
        )
    if "shift consistency %" in rep.table:
        notes.append(
            f"- **shift consistency %**: final `{CONSISTENCY}`, mean ± std over the runs that logged "
            f"it; {DASH} for arms whose runs predate it."
        )
    if "paper error % (Table 3)" in rep.table:
        notes.append(
            "- **paper error % (Table 3)**: CIFAR-10 test error without augmentation reported by "
            "Springenberg et al. 2014 (Striving for Simplicity: The All Convolutional Net), "
            f"keyed by `{PAPER_KEY}`; **test error %** is ours, 100 − test acc."
        )
    return notes


def _digest_roots(rep: Report) -> str:
    """Each data digest of the counted runs with the folders (``data.root``) or source its runs read."""
    where: dict[str, dict[str, int]] = {}
    for hp in (r.hparams for arm in rep.arms for r in arm.runs):
        counts = where.setdefault(value_text(hp.get(DATA_DIGEST, ABSENT)), {})
        place = str(hp.get("data.root") if hp.get("data.source") == "folder" else hp.get("data.source"))
        counts[place] = counts.get(place, 0) + 1

    def listed(places: dict[str, int]) -> str:
        return ", ".join(f"`{p}` ({counted(n, 'run')})" for p, n in sorted(places.items()))

    return "; ".join(f"`{digest}` {listed(places)}" for digest, places in sorted(where.items()))


def baseline_caveats(arms: Sequence[Arm]) -> list[str]:
    """One sentence per arm tested against a baseline that differs from it in more than the downsampling, per
    arm left without one because no candidate was tested on the same images, and per arm whose runs, or whose
    baseline's, read other data folders (markdown; the console too)."""
    lines = []
    for arm in arms:
        roots = data_roots(arm)
        if len(roots) > 1:
            lines.append(
                f"`{arm.label}` pools runs on {len(roots)} data folders (`data.root`: "
                f"{', '.join(f'`{r}`' for r in sorted(roots))}): if they hold different copies (the JPEG and the "
                "PNG copy of CIFAR-10), its runs did not see the same images; report each copy's runs apart."
            )
        theirs = data_roots(arm.baseline) if arm.baseline else set()
        if roots and theirs and not roots & theirs:
            lines.append(
                f"`{arm.label}` read data from {', '.join(f'`{r}`' for r in sorted(roots))} and its baseline "
                f"from {', '.join(f'`{r}`' for r in sorted(theirs))} (`data.root`): if these are different "
                "copies, its Δ measures the copy too."
            )
        others = baseline_differences(arm)
        if others:
            assert arm.baseline is not None
            lines.append(
                f"`{arm.label}` is tested against `{arm.baseline.label}`, which differs from it in "
                f"{', '.join(f'`{k}`' for k in others)} too: no max-pool arm matches it in every other setting, "
                "so its Δ measures more than the downsampling."
            )
        if arm.other_images:
            keys = ", ".join(f"`{k}`" for k in arm.other_images)
            which = "max-pool arm" if any(is_baseline(a.values) for a in arms) else "arm before it"
            lines.append(
                f"`{arm.label}` has no baseline: no counted {which} was tested on the same images (they differ "
                f"in {keys}), so it has no Δ or p."
            )
    return lines


def _family(rep: Report, column: str) -> int:
    """How many tests a Holm family has: the arms with a defined p in ``column``."""
    return int(rep.results[column].notna().sum()) if column in rep.results else 0


def _shift_section(rep: Report) -> list[str]:
    """The shift-robustness table and figure, when a counted run logged the curves."""
    if rep.shift_table.empty:
        return []
    n_images = "about `eval.shift_images`"
    return [
        "",
        "### Shift robustness",
        "",
        "Consistency (%) with the unshifted prediction of the plain network (no TTA) when the test images move "
        "down and right by the same number of pixels (a diagonal shift), circular (content wraps around) and "
        "linear (content leaves, zeros of the normalised image, i.e. the mean colour, come in), on a fixed random "
        f"subset of {n_images} test images; then the accuracy (%) on that subset unshifted and at the largest "
        "linear shift. Mean over the arm's runs; every curve, also along x, with std and n: "
        "`shift_robustness.csv`.",
        "",
        markdown_table(rep.shift_table),
        "",
        "![Shift robustness](shift_robustness.png)",
    ]


def _common_settings(runs: Sequence[Run], keys: Sequence[str]) -> list[str]:
    """``key=value`` of every hyperparameter that all completed runs share, except the arm and ignored keys."""
    done = [r for r in runs if r.status == "completed"]
    if not done:
        return []
    shared = set.intersection(*(set(r.hparams) for r in done)) - set(keys) - IGNORED_KEYS
    return [f"{k}={value_text(done[0].hparams[k])}" for k in sorted(shared)]


def _not_counted(rep: Report) -> list[str]:
    """The failed, and the running or incomplete, training runs: one table each."""
    left_out = [r for r in rep.runs if r.status not in (NOT_STARTED, "completed")]
    lines = [] if left_out else ["None: every run found completed." if rep.runs else "No training run found."]
    groups = (
        ("Degenerate: the model collapsed (`--keep-degenerate` counts them)", (DEGENERATE,)),
        ("Failed", ("failed",)),
        ("Interrupted, running or incomplete", (INTERRUPTED, "running", "incomplete")),
    )
    for title, states in groups:
        chosen = [r for r in left_out if r.status in states]
        if chosen:
            listed = pd.DataFrame(
                {
                    "run": [f"`{relative(r.path, rep.root)}`" for r in chosen],
                    "arm": [rep.labels[r.path] for r in chosen],
                    "seed": [r.seed for r in chosen],
                    "status": [r.status for r in chosen],
                    "reason": [" ".join(r.reason.split()) for r in chosen],
                }
            )
            lines += [f"### {title} ({len(chosen)})", "", markdown_table(listed), ""]
    return lines


def _stopped_at_start_up(rep: Report) -> list[str]:
    refused = [r for r in rep.runs if r.status == NOT_STARTED]
    if not refused:
        return []
    return [
        "",
        f"## Stopped at start-up ({len(refused)})",
        "",
        "Command lines refused before training began (a config, resume or data error): no run to count.",
        "",
        *(f"- `{relative(r.path, rep.root)}`: {' '.join(r.reason.split())}" for r in refused),
    ]


def _bench_section(rep: Report) -> list[str]:
    """The bench runs per setting and strategy (:mod:`downsample_lab.report.bench`), and those left out."""
    if not rep.bench_count and not rep.bench_left_out:
        return []
    lines = ["", f"## Benchmark runs ({rep.bench_count + len(rep.bench_left_out)})", ""]
    if rep.bench_count:
        shared = [
            rep.bench[c].iloc[0] for c in ("machine", "precision", "versions") if rep.bench[c].nunique() == 1
        ]
        lines += [
            f"{counted(rep.bench_count, 'run')} of `python -m downsample_lab.bench`"
            + (f" ({'; '.join(shared)})" if shared else "")
            + f", from their `bench.json`. Per setting and strategy: the mean ± std over the runs of each path's "
            "images/s (a run's figure is the median of its timed windows) and of their ratio with its 95% t "
            "interval; the mean host µs per step (the process's CPU time over all its threads: with several torch "
            "threads on a CPU it exceeds the step's wall time; on a GPU it is the host work the GPU waits on); and "
            "the Lightning path's images/s against max-pooling's in the same "
            "runs (paired: each run times its strategies in one process), as exp(mean log ratio) − 1 in %, with "
            f"the t interval of the mean log ratio. No interval from fewer than {MIN_CI_RUNS} runs. **others, "
            "max**: the most CPU cores other processes kept busy while a run of the row timed it (the bench's "
            "`others`; near 0 on a quiet machine). All numbers in `bench.csv`.",
            "",
            markdown_table(rep.bench_table),
            *(["", f"**Busy machine:** {busy}"] if (busy := busy_bench(rep)) else []),
        ]
    if rep.bench_left_out:
        lines += ["", "Not summed up:", ""]
        lines += [f"- `{relative(run, rep.root)}`: {why}" for run, why in rep.bench_left_out]
    return lines


# Other processes' CPU load (cores) above which a bench run's figures are too noisy to compare.
BUSY_CORES = 0.1  # docs/BENCHMARKS.md: at 0.1 and above the bench's figures were visibly noisy


def busy_bench(rep: Report) -> str:
    """A sentence when some bench rows were timed on a busy machine (:data:`BUSY_CORES`), else ""."""
    if rep.bench.empty or "others_max" not in rep.bench:
        return ""
    busy = rep.bench[rep.bench["others_max"] > BUSY_CORES]
    if busy.empty:
        return ""
    rows = ", ".join(
        f"{s} ({r})" if s != "all runs" else r for s, r in zip(busy.setting, busy.strategy, strict=True)
    )
    return (
        f"other processes kept up to {busy['others_max'].max():.2f} CPU cores busy while {rows} "
        f"{'was' if len(busy) == 1 else 'were'} timed: their "
        "figures are noisy and the comparisons with them unreliable; time them again on a quiet machine."
    )


def _other_tools(rep: Report) -> list[str]:
    if not rep.skipped:
        return []
    return [
        "",
        f"## Runs of other tools ({len(rep.skipped)})",
        "",
        "Evaluation and benchmark runs are not arms of the ablation:",
        "",
        *(
            f"- `{relative(r.path, rep.root)}` ({r.task or 'eval'}, {r.recorded or 'no status.json'})"
            for r in rep.skipped
        ),
    ]
