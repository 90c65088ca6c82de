"""One configuration over several seeds: how much of a difference between rows is noise.

``run_seeds(out, cfg, K)`` runs (or resumes) the same configuration with seeds ``cfg.seed, cfg.seed + 1, ...``:
the first seed's run in ``out`` (so ``--seeds 1`` is the plain run), the others in ``<out>-seed<s>``. It then
writes ``<out>/seeds_summary.json``: per row of the table (every round, best-of-N, best-of-N on the tuned
policy) the mean and the sample standard deviation over the seeds of every metric, and the relative CHAIR_i cut
of each row against the same seed's baseline.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError
from .pipeline import RLAIFVConfig, RLAIFVRun

__all__ = ["seed_dirs", "run_seeds", "mean_std", "aggregate", "chair_i_cut"]

# the summary's best-of-N entries and the table's names of their rows: reward pick (keys without prefix), random pick
# ("random_" keys), log-likelihood pick ("loglik_" keys); %d is N
GUIDED = {"best_of_n": ("best-of-%d", "random", "loglik"), "tuned_best_of_n": ("tuned bo%d", "tuned rand", "tuned ll")}
PREFIXES = ("", "random_", "loglik_")


def seed_dirs(out: str | Path, seed: int, k: int) -> list[tuple[int, Path]]:
    """(seed, run directory) of each of k seeds from ``seed``: ``out`` for the first, ``<out>-seed<s>`` for the rest."""
    if k < 1:
        raise ConfigError(f"--seeds must be >= 1 (how many seeds to run), got {k}")
    out = Path(out)
    return [(seed + i, out if i == 0 else out.with_name(f"{out.name}-seed{seed + i}")) for i in range(k)]


def mean_std(values: Sequence[float | None]) -> dict | None:
    """{"mean", "std", "n"} of the values that exist (std: sample standard deviation, None for one value); None if none."""
    have = [float(v) for v in values if v is not None]
    if not have:
        return None
    return {"mean": statistics.fmean(have), "std": statistics.stdev(have) if len(have) > 1 else None, "n": len(have)}


def _numeric(row: dict) -> dict[str, float | None]:
    """The numeric metrics of a summary row (booleans and texts left out)."""
    return {k: v for k, v in row.items() if (isinstance(v, (int, float)) and not isinstance(v, bool)) or v is None}


def _aggregate_rows(rows: Sequence[dict]) -> dict:
    """Per key: mean and std over the rows (a key missing from some rows is averaged over the others)."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in _numeric(r) if k not in keys]
    return {k: m for k in keys if (m := mean_std([r.get(k) for r in rows])) is not None}


def chair_i_cut(baseline: dict, row: dict, prefix: str = "") -> float | None:
    """Relative CHAIR_i reduction of ``row`` against ``baseline`` (0.76 = 76% fewer hallucinated objects); None if undefined."""
    base, value = baseline.get("chair_i"), row.get(prefix + "chair_i")
    if base is None or value is None or base == 0:
        return None
    return 1.0 - value / base


def aggregate(summaries: Sequence[dict]) -> dict:
    """Mean ± std over the seeds' ``summary.json``: rounds, best-of-N entries, and CHAIR_i cuts keyed by table row name."""
    if not summaries:
        raise ValueError("no summaries to aggregate")
    n_rounds = {len(s["rounds"]) for s in summaries}
    if len(n_rounds) != 1:
        raise ValueError(f"the seeds' runs have different numbers of rounds: {sorted(n_rounds)}")
    out: dict[str, Any] = {"rounds": [_aggregate_rows([s["rounds"][k] for s in summaries]) for k in range(n_rounds.pop())]}
    cuts: dict[str, dict | None] = {f"round {k}": mean_std([chair_i_cut(s["rounds"][0], s["rounds"][k]) for s in summaries]) for k in range(1, len(out["rounds"]))}
    for name in GUIDED:
        entries = [s.get(name) for s in summaries]
        if all(e is None for e in entries):
            out[name] = None
            continue
        if any(e is None for e in entries):
            raise ValueError(f"{name} is in some seeds' summaries but not in others")
        out[name] = _aggregate_rows(entries)  # type: ignore[arg-type]
        labels = (GUIDED[name][0] % entries[0]["n"], *GUIDED[name][1:])  # type: ignore[index]
        for prefix, label in zip(PREFIXES, labels):
            cuts[label] = mean_std([chair_i_cut(s["rounds"][0], s[name], prefix) for s in summaries])
    out["chair_i_cut"] = cuts
    return out


def run_seeds(out: str | Path, cfg: RLAIFVConfig, k: int, progress: bool = True) -> tuple[dict, list[dict], list[RLAIFVRun]]:
    """Run (or resume) ``cfg`` over k seeds from ``cfg.seed``; write ``<out>/seeds_summary.json``.

    Returns (the aggregate as written, each seed's summary, each seed's run).
    """
    summaries, runs = [], []
    dirs = seed_dirs(out, cfg.seed, k)
    for seed, folder in dirs:
        run = RLAIFVRun(folder, replace(cfg, seed=seed), progress=progress)
        summaries.append(run.run())
        run.release()  # K runs in one process: only one seed's models in memory at a time
        runs.append(run)
    agg = {"seeds": [s for s, _ in dirs], "runs": [str(d) for _, d in dirs], **aggregate(summaries), "config": cfg.to_dict()}
    if runs[0].rd.writable:
        runs[0].rd.write_if_changed("seeds_summary.json", _finite(agg))
    return agg, summaries, runs


def _finite(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
