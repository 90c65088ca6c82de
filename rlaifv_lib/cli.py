"""The ``rlaifv`` command: ``demo``, ``pretrain-toy``, ``round``, ``run``, ``eval``, ``plan``, ``ablate``.

``rlaifv run`` takes its flags from :class:`RunArguments` (through ``transformers.HfArgumentParser``) and every
other setting from a YAML file (``--config``) that mirrors ``pipeline.RLAIFVConfig`` (nested configs as
mappings; see ``configs/``). Precedence: the preset's defaults < the config file < ``--smoke`` < the flags; the
configuration is built, and validated, once from the final values.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .errors import ConfigError, RLAIFVError

if TYPE_CHECKING:
    from .pipeline import RLAIFVConfig

__all__ = ["RunArguments", "SMOKE", "main", "run_values"]

# tiny settings that run in seconds (`--smoke`): they check that everything runs; their numbers mean nothing
SMOKE: dict[str, Any] = {
    "rounds": 2, "prompts_per_round": 8, "sampling": {"n": 4, "max_new_tokens": 48, "batch_size": 32},
    "dpo": {"max_steps": 2, "batch_size": 4}, "eval_scenes": 10, "best_of_n": 2, "best_of_n_prompts": 4,
}  # fmt: skip
_METRIC_KEYS = [
    "chair_i", "chair_s", "chair_s_halbench", "coverage", "mean_words", "yes_no_accuracy", "self_check_accuracy",
    "labeler_accuracy", "unclaimed_rate", "judge_rejection_rate", "claims_per_response",
]  # fmt: skip


@dataclass
class RunArguments:
    """The flags of ``rlaifv run``; every other setting comes from ``--config``."""

    out: str = field(metadata={"help": "run directory (resumed if it exists)"})
    policy: str | None = field(default=None, metadata={"help": "starting policy: a preset name or a model folder"})
    labeler: str | None = field(default=None, metadata={"help": "a separate labeler (preset or folder); default: self-feedback"})
    decomposer: str | None = field(default=None, metadata={"help": "claim decomposer", "choices": ["toy", "rules", "llm"]})
    prompts: str | None = field(default=None, metadata={"help": "training prompts: .jsonl file, image folder or RLAIF-V parquet; default: the toy world"})
    eval_prompts: str | None = field(default=None, metadata={"help": "the fixed evaluation prompts (.jsonl)"})
    rounds: int | None = field(default=None, metadata={"help": "on-policy rounds"})
    prompts_per_round: int | None = field(default=None, metadata={"help": "fresh training prompts per round"})
    n: int | None = field(default=None, metadata={"help": "candidates per prompt"})
    load_in_4bit: bool = field(default=False, metadata={"help": "load policy, labeler and judge in 4-bit NF4 (bitsandbytes)"})
    config: str | None = field(default=None, metadata={"help": "YAML file mirroring RLAIFVConfig (see configs/)"})
    smoke: bool = field(default=False, metadata={"help": "tiny settings that run in seconds (checks the setup; numbers mean nothing)"})
    seed: int | None = field(default=None, metadata={"help": "seed of everything random in the run"})
    threads: int = field(default=2, metadata={"help": "CPU threads"})
    seeds: int = field(default=1, metadata={"help": "run K seeds (seed, seed+1, ...): the first in --out, the others in <out>-seed<s>; prints mean±std"})


def _merge(base: dict, top: dict) -> dict:
    """``base`` updated with ``top``, nested mappings merged key by key."""
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_config(path: str) -> dict:
    """The mapping of a YAML run configuration file."""
    import yaml

    from .errors import ConfigError

    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of RLAIFVConfig fields, got {type(values).__name__}")
    return values


def run_values(args: Any) -> dict:
    """The nested settings of a run: config file, then ``--smoke``, then the flags (unset flags change nothing)."""
    values = _read_config(args.config) if getattr(args, "config", None) else {}
    if args.smoke:
        values = _merge(values, SMOKE)
    flags: dict[str, Any] = {
        "policy": getattr(args, "policy", None), "labeler": getattr(args, "labeler", None), "prompts": getattr(args, "prompts", None),
        "eval_prompts": getattr(args, "eval_prompts", None), "rounds": args.rounds, "prompts_per_round": args.prompts_per_round, "seed": args.seed,
    }  # fmt: skip
    values = _merge(values, {k: v for k, v in flags.items() if v is not None})
    if getattr(args, "decomposer", None):
        values = _merge(values, {"claims": {"decomposer": args.decomposer}})
    if getattr(args, "n", None) is not None:
        values = _merge(values, {"sampling": {"n": args.n}})
    if getattr(args, "load_in_4bit", False):
        values = _merge(values, {"load": {"load_in_4bit": True}})
    return values


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _set_threads(n: int) -> None:
    """``torch.set_num_threads(n)``; ``ConfigError`` for n < 1 (torch would fail with no word about --threads)."""
    import torch

    if n < 1:
        raise ConfigError(f"--threads must be >= 1 (CPU threads for torch), got {n}")
    torch.set_num_threads(n)


def _print_metrics(m: dict) -> None:
    for k in _METRIC_KEYS:
        if k in m:
            print(f"  {k:<22} {_fmt(m[k])}")
    if "judge" in m:
        print(f"  {'judge':<22} {m['judge']} ({m['n_claims']} claims)")
    if m.get("n_responses_with_objects") == 0:
        print(f"  no response mentions any object of the prompts (0 of {m['n_responses_with_truth']}): CHAIR is not defined")


def cmd_pretrain_toy(args: argparse.Namespace) -> int:
    """Train the toy policy and/or labeler from scratch."""
    from .models import TOY_LABELER, TOY_POLICY
    from .toyworld.pretrain import PretrainConfig, pretrain_toy

    _set_threads(args.threads)
    roles = ["policy", "labeler"] if args.role == "both" else [args.role]
    for role in roles:
        # the labeler gets its own seed so that it does not share the policy's initialisation
        cfg = PretrainConfig(role=role, seed=args.seed + (role == "labeler"))
        if args.steps is not None:
            cfg.steps = args.steps
        if args.vision_steps is not None:
            cfg.vision_steps = args.vision_steps
        out = Path(args.out) / role if args.out else (TOY_POLICY if role == "policy" else TOY_LABELER)
        t0 = time.time()
        pretrain_toy(cfg, out)
        print(f"{role}: saved to {out} ({time.time() - t0:.0f}s)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a model on the fixed held-out toy scenes, or on a prompt file (``--prompts``)."""
    from .models import load_model
    from .records import write_json

    _set_threads(args.threads)
    model, processor = load_model(args.model)
    t0 = time.time()
    if args.prompts:
        m, what = _eval_prompts(args, model, processor), f"{args.prompts}"
    else:
        from .hallucination import EvalConfig, evaluate_policy
        from .toyworld.scenes import evaluation_scenes

        m, what = evaluate_policy(model, processor, evaluation_scenes(args.n), EvalConfig(seed=args.seed), progress=True), f"{args.n} held-out scenes"
    texts = m.pop("texts")
    print(f"{args.model} on {what} ({time.time() - t0:.1f}s):")
    _print_metrics(m)
    if args.show:
        for t in texts[: args.show]:
            print("   ", t)
    if args.out:
        write_json(args.out, m)
        print(f"wrote {args.out}")
    return 0


def _eval_prompts(args: argparse.Namespace, model: Any, processor: Any) -> dict:
    """Object and fixed-judge metrics of ``args.model`` on the prompts of ``args.prompts``."""
    from .claims import ClaimsConfig, make_decomposer
    from .evaluation import evaluate_prompts
    from .hallucination import EvalConfig
    from .models import PRESETS, YES_NO_SUFFIX, load_model
    from .sources import read_prompt_file

    prompts = read_prompt_file(args.prompts)
    judge_name = args.judge or args.model
    judge = load_model(args.judge) if args.judge else None
    suffix = PRESETS[judge_name].question_suffix if judge_name in PRESETS else YES_NO_SUFFIX
    cfg = EvalConfig(seed=args.seed, question_suffix=suffix)
    return evaluate_prompts(model, processor, prompts, judge, judge_name, make_decomposer(ClaimsConfig(decomposer=args.decomposer)), cfg, progress=True)


# (key, header, width, format) of the summary table; a column is shown when some row has its key
_COLUMNS = [
    ("chair_i", "CHAIR_i", 9, ".3f"), ("chair_s", "CHAIR_s", 9, ".3f"), ("chair_s_halbench", "HalB_s", 8, ".3f"),
    ("coverage", "cover", 8, ".3f"), ("judge_rejection_rate", "judge_rej", 10, ".3f"), ("claims_per_response", "claims", 8, ".1f"),
    ("mean_words", "words", 8, ".1f"), ("labeler_accuracy", "labeler", 9, ".3f"), ("n_pairs", "pairs", 7, "d"), ("seconds", "sec", 7, ".0f"),
]  # fmt: skip


def _cell(value: Any, fmt: str) -> str:
    """One table cell: a number, ``mean±std`` for a ``seeds.mean_std`` dict, or n/a."""
    if isinstance(value, dict):
        std, fmt = value.get("std"), ".1f" if fmt == "d" else fmt  # a mean of counts is not a count
        return f"{format(value['mean'], fmt)}±{'n/a' if std is None else format(std, fmt)}"
    return "n/a" if value is None else format(value, fmt)


def _guided_rows(best: dict | None, labels: tuple[str, str, str]) -> list[tuple[str, dict]]:
    """(row name, metrics under plain keys) of a best-of-N entry: reward, random and log-likelihood picks."""
    from .seeds import PREFIXES

    if not best:
        return []
    n = best["n"]["mean"] if isinstance(best["n"], dict) else best["n"]
    names = (labels[0] % round(n), labels[1], labels[2])
    return [(name, {k.removeprefix(prefix): v for k, v in best.items() if k.startswith(prefix) and (prefix or not k.startswith(("random_", "loglik_")))})
            for name, prefix in zip(names, PREFIXES)]  # fmt: skip


def _table(rounds: list[dict], best: dict | None, numbers: list[int] | None = None, tuned: dict | None = None) -> str:
    """The before/after table printed by ``rlaifv demo`` and ``rlaifv run`` (rows numbered 0, 1, ... unless ``numbers`` says):
    one column per metric that the rows have; best-of-N rows on the base policy's samples (``best``) and on the tuned
    policy's (``tuned``); values that are ``seeds.mean_std`` dicts print as mean±std."""
    cols = [c for c in _COLUMNS if any(c[0] in r for r in rounds)]
    rows = [("baseline" if k == 0 else f"round {k}", r, cols) for k, r in zip(numbers or range(len(rounds)), rounds)]
    from .seeds import GUIDED

    for guided, labels in ((best, GUIDED["best_of_n"]), (tuned, GUIDED["tuned_best_of_n"])):
        shown = [c for c in cols if guided and c[0] in guided]
        rows += [(name, metrics, shown) for name, metrics in _guided_rows(guided, labels)]
    cells = [(name, {key: _cell(r.get(key), f) for key, _, _, f in shown}) for name, r, shown in rows]
    width = {key: max([w] + [len(c[key]) + 1 for _, c in cells if key in c]) for key, _, w, _ in cols}
    head = f"{'round':<10}" + "".join(f"{h:>{width[key]}}" for key, h, _, _ in cols)
    lines = [head, "-" * len(head)]
    for name, c in cells:
        lines.append(f"{name:<10}" + "".join(f"{c[key]:>{width[key]}}" for key, _, _, _ in cols if key in c))
    return "\n".join(lines)


def _run_config(args: argparse.Namespace) -> RLAIFVConfig:
    """The ``RLAIFVConfig`` of ``rlaifv demo``/``round``/``run``: the settings of :func:`run_values`, validated once."""
    from .pipeline import config_from_dict

    return config_from_dict(run_values(args))


def cmd_round(args: argparse.Namespace) -> int:
    """Run the next unfinished round of a run (the baseline first, if missing) and print its row."""
    from .pipeline import RLAIFVRun

    _set_threads(args.threads)
    run = RLAIFVRun(args.out, _run_config(args))
    baseline = run.baseline()
    k = run.next_round()
    if k is None:
        print(f"all {run.cfg.rounds} rounds of {args.out} are done; `rlaifv demo --out {args.out}` prints the table")
        return 0
    row = run.run_round(k)
    print(f"\nround {k} of {run.cfg.rounds} in {args.out}:")
    print(_table([baseline, row], None, numbers=[0, k]))
    return 0


def _run_and_show(args: argparse.Namespace, title: Callable[[Any, RLAIFVConfig], str], keys: Sequence[str]) -> int:
    """Run (or resume) the configured rounds in ``args.out`` (over ``--seeds`` seeds), print the table, write summary and plots."""
    from .pipeline import RLAIFVRun
    from .plots import before_after_bars, metrics_per_round, save_figure

    _set_threads(args.threads)
    cfg = _run_config(args)
    t0 = time.time()
    n_seeds = getattr(args, "seeds", 1)
    if n_seeds != 1:
        from .seeds import run_seeds

        agg, summaries, runs = run_seeds(args.out, cfg, n_seeds)
        run, summary = runs[0], summaries[0]
    else:
        run = RLAIFVRun(args.out, cfg)
        summary = run.run()
    if not run.rd.writer:  # under torchrun / accelerate launch: rank 0 prints and writes the plots
        return 0
    rounds = summary["rounds"]
    print(f"\n{title(run, cfg)}")
    if n_seeds != 1:
        print(f"mean±std over seeds {agg['seeds']} ({', '.join(agg['runs'])})")
        print(_table(agg["rounds"], agg["best_of_n"], tuned=agg.get("tuned_best_of_n")))
        cuts = ", ".join(f"{name} {100 * c['mean']:.1f}%±{100 * c['std']:.1f}" for name, c in agg["chair_i_cut"].items() if c and c["std"] is not None)
        print(f"CHAIR_i cut vs baseline: {cuts}")
    else:
        print(_table(rounds, summary["best_of_n"], tuned=summary.get("tuned_best_of_n")))
    if "judge" in rounds[0]:
        print(f"judge_rej: share of claims rejected by the fixed judge {rounds[0]['judge']}")
    if not run.rd.writable:  # a finished run on read-only storage: shown, nothing written
        print(f"\n{args.out} is read-only: the table above comes from its finished artifacts; nothing was written")
        return 0
    keys = [k for k in keys if all(r.get(k) is not None for r in rounds)]
    if keys:
        save_figure(metrics_per_round(rounds, keys=keys), Path(args.out) / "metrics_per_round.png")
        save_figure(before_after_bars(rounds[0], rounds[-1], keys=keys), Path(args.out) / "before_after.png")
    written = "summary.json" + (" and seeds_summary.json" if n_seeds != 1 else "")
    print(f"\nwrote {args.out}/{written}{' and plots' if keys else ''} ({time.time() - t0:.0f}s)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the default k-round RLAIF-V loop on the toy world and print the before/after table."""
    title = lambda run, cfg: f"RLAIF-V on the toy world: {cfg.rounds} rounds, held-out scenes = {cfg.eval_scenes}"  # noqa: E731
    return _run_and_show(args, title, ["chair_i", "chair_s", "coverage", "labeler_accuracy"])


def cmd_run(args: argparse.Namespace) -> int:
    """Run (or resume) k RLAIF-V rounds with any policy, labeler and prompts; print the table and write the plots."""
    title = lambda run, cfg: f"RLAIF-V on {run.source.name}: {cfg.rounds} rounds, {len(run.source.evaluation())} evaluation prompts"  # noqa: E731
    return _run_and_show(args, title, ["chair_i", "chair_s", "coverage", "labeler_accuracy", "judge_rejection_rate"])


def cmd_plan(args: argparse.Namespace) -> int:
    """Print the work of a run per round and stage, and the memory per process, for a layout (``rlaifv_lib.plan``)."""
    from .models import load_processor
    from .plan import PlanAssumptions, PlanLayout, format_plan, measure_run, plan_run

    _set_threads(args.threads)
    cfg = _run_config(args)
    layout = PlanLayout(processes=args.processes, labeler_gpus=args.labeler_gpus, image_size=tuple(args.image_size))
    assume = PlanAssumptions(claims_per_response=args.claims_per_response, prompt_text_tokens=args.prompt_text_tokens, question_tokens=args.question_tokens)
    labeler_processor = load_processor(cfg.labeler, cfg.load) if args.run and cfg.labeler else None
    measured = measure_run(args.run, load_processor(cfg.policy, cfg.load), cfg, labeler_processor) if args.run else None
    if args.run and not measured:
        raise ConfigError(f"{args.run} holds no finished round (round_k/pairs.jsonl) to measure")
    labeler = args.labeler_arch or cfg.labeler
    title = f"plan: {cfg.rounds} rounds x {cfg.prompts_per_round} prompts x {cfg.sampling.n} candidates; policy {cfg.policy}, labeler {labeler or 'the policy (self-feedback)'}"
    print(format_plan(plan_run(cfg, layout, assume, measured, labeler_arch=args.labeler_arch), title))
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    """Run (or resume) the ablation sweep: each design choice against its alternative, mean ± std over seeds."""
    from .ablations import AblationConfig, ablation_table, quick_ablation, run_ablations
    from .plots import ablation_bars, save_figure

    _set_threads(args.threads)
    sizes = {k: v for k, v in (("rounds", args.rounds), ("prompts_per_round", args.prompts), ("n", args.n), ("eval_scenes", args.eval_scenes)) if v is not None}
    if args.seeds is not None:
        if args.seeds < 1:
            raise ConfigError(f"--seeds must be >= 1 (the number of seeds, 0..K-1), got {args.seeds}")
        sizes["seeds"] = tuple(range(args.seeds))
    if args.variants:
        sizes["variants"] = tuple(args.variants)
    cfg = quick_ablation(**sizes) if args.quick else AblationConfig(**sizes)
    t0 = time.time()
    summary = run_ablations(cfg, args.out)
    wall = time.time() - t0
    print(f"\nablations on the toy world: {len(cfg.variants)} variants x {len(cfg.seeds)} seeds {list(cfg.seeds)}, {cfg.rounds} rounds x "
          f"{cfg.prompts_per_round} prompts x {cfg.n} candidates, {cfg.eval_scenes} held-out scenes (mean ± std over seeds)")
    print(ablation_table(summary))
    print("chosen truer: share of pairs whose chosen response truly has fewer false claims; wrong-way: share teaching the wrong way")
    save_figure(ablation_bars(summary), Path(args.out) / "ablations.png")
    print(f"\nwrote {args.out}/ablations.json and ablations.png; full sweep wall time {wall:.0f}s ({wall / 60:.1f} min)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``rlaifv`` command."""
    p = argparse.ArgumentParser(prog="rlaifv", description="RLAIF-V on a toy visual world (and real MLLMs).")
    debug = "show the full traceback of an error (default: one line saying what went wrong and what to do)"
    p.add_argument("--debug", action="store_true", help=debug)
    sub = p.add_subparsers(dest="command", required=True)

    pt = sub.add_parser("pretrain-toy", help="train the tiny toy LLaVA policy/labeler from scratch")
    pt.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug)
    pt.add_argument("--role", choices=["policy", "labeler", "both"], default="both")
    pt.add_argument("--out", default=None, help="folder (default: data/toy/)")
    pt.add_argument("--seed", type=int, default=0)
    pt.add_argument("--steps", type=int, default=None, help="caption+yes/no steps (shorten for a smoke test)")
    pt.add_argument("--vision-steps", type=int, default=None)
    pt.add_argument("--threads", type=int, default=2)
    pt.set_defaults(func=cmd_pretrain_toy)

    for name, func, text in (
        ("demo", cmd_demo, "the k-round RLAIF-V loop on the toy world, before/after table and plots"),
        ("round", cmd_round, "only the next unfinished round of a run (same settings as demo; demo finishes it)"),
    ):
        de = sub.add_parser(name, help=text)
        de.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug)
        de.add_argument("--out", default="runs/demo", help="run directory (resumed if it exists)")
        de.add_argument("--rounds", type=int, default=None, help="override the number of rounds")
        de.add_argument("--prompts", dest="prompts_per_round", type=int, default=None, help="override prompts per round")
        de.add_argument("--seed", type=int, default=0)
        de.add_argument("--threads", type=int, default=2)
        de.add_argument("--smoke", action="store_true", help="tiny settings that run in seconds (checks the install; numbers mean nothing)")
        if name == "demo":
            de.add_argument("--seeds", type=int, default=1, help="run K seeds (seed, seed+1, ...): the first in --out, the others in <out>-seed<s>; prints mean±std")
        de.set_defaults(func=func)

    from transformers import HfArgumentParser

    run = sub.add_parser("run", parents=[HfArgumentParser(RunArguments, add_help=False)], help="k RLAIF-V rounds with any policy, labeler and prompts")
    run.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug)
    run.set_defaults(func=cmd_run)

    ev = sub.add_parser("eval", help="CHAIR, coverage, yes/no and self-check accuracy on held-out scenes, or metrics on a prompt file")
    ev.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug)
    ev.add_argument("--model", default="toy-policy", help="toy-policy, toy-labeler, a preset or a model folder")
    ev.add_argument("--prompts", default=None, help="a .jsonl prompt file: object metrics (from 'objects') and the judge's rejection rate")
    ev.add_argument("--judge", default=None, help="with --prompts: the fixed judge (preset or folder); default: the model itself")
    ev.add_argument("--decomposer", choices=["rules"], default="rules", help="with --prompts: the claim decomposer")
    ev.add_argument("--n", type=int, default=200, help="number of held-out scenes")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--out", default=None, help="write the metrics as JSON here")
    ev.add_argument("--show", type=int, default=0, help="print this many sampled descriptions")
    ev.add_argument("--threads", type=int, default=2)
    ev.set_defaults(func=cmd_eval)
    pl = sub.add_parser("plan", help="the work of a run per round and stage and the memory per process (computed; no throughput assumed)")
    pl.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug)
    pl.add_argument("--config", default=None, help="YAML file mirroring RLAIFVConfig (see configs/)")
    pl.add_argument("--smoke", action="store_true", help="the smoke settings of demo/run")
    pl.add_argument("--policy", default=None, help="policy preset or folder")
    pl.add_argument("--labeler", default=None, help="separate labeler (preset or folder)")
    pl.add_argument("--labeler-arch", default=None, help="the labeler's architecture for the plan only (e.g. llava-next-34b, or a config.json)")
    pl.add_argument("--rounds", type=int, default=None)
    pl.add_argument("--prompts", dest="prompts_per_round", type=int, default=None, help="prompts per round")
    pl.add_argument("--n", type=int, default=None, help="candidates per prompt")
    pl.add_argument("--load-in-4bit", action="store_true")
    pl.add_argument("--processes", type=int, default=1, help="data-parallel processes (one policy replica each)")
    pl.add_argument("--labeler-gpus", type=int, default=1, help="devices one labeler replica is split over")
    pl.add_argument("--image-size", type=int, nargs=2, default=[480, 640], metavar=("H", "W"))
    pl.add_argument("--claims-per-response", type=float, default=8.0, help="assumed where no run is measured")
    pl.add_argument("--prompt-text-tokens", type=int, default=40, help="assumed where no run is measured")
    pl.add_argument("--question-tokens", type=int, default=25, help="assumed where no run is measured")
    pl.add_argument("--run", default=None, help="a run directory whose finished rounds give measured counts")
    pl.add_argument("--seed", type=int, default=None)
    pl.add_argument("--threads", type=int, default=2)
    pl.set_defaults(func=cmd_plan)

    ab = sub.add_parser("ablate", help="each RLAIF-V design choice against its alternative on the toy world, over seeds")
    ab.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug)
    ab.add_argument("--out", default="runs/ablate", help="sweep folder (finished runs are reused)")
    ab.add_argument("--quick", action="store_true", help="notebook-sized sweep (minutes; noisy numbers)")
    ab.add_argument("--seeds", type=int, default=None, help="number of seeds K (seeds 0..K-1; default 3)")
    ab.add_argument("--variants", nargs="+", default=None, help="only these variants (default: all)")
    ab.add_argument("--rounds", type=int, default=None, help="on-policy rounds k")
    ab.add_argument("--prompts", type=int, default=None, help="training prompts per round P")
    ab.add_argument("--n", type=int, default=None, help="candidates per prompt")
    ab.add_argument("--eval-scenes", type=int, default=None, help="held-out evaluation scenes")
    ab.add_argument("--threads", type=int, default=2)
    ab.set_defaults(func=cmd_ablate)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rlaifv`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except RLAIFVError as e:
        if args.debug:
            raise
        message = " ".join(str(e).split())  # one line: what, where, what to do
        print(f"rlaifv {args.command}: error: {message} (--debug shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
