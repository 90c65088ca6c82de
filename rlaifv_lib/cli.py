"""The ``rlaifv`` command: ``demo``, ``pretrain-toy``, ``round``, ``eval``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError, RLAIFVError

if TYPE_CHECKING:
    from .pipeline import RLAIFVConfig

__all__ = ["main"]


def _set_threads(n: int) -> None:
    """``torch.set_num_threads(n)``; ``ConfigError`` for n < 1 (torch would fail with no word about --threads)."""
    import torch

    if n < 1:
        raise ConfigError(f"--threads must be >= 1 (CPU threads for torch), got {n}")
    torch.set_num_threads(n)


def _print_metrics(m: dict) -> None:
    keys = ["chair_i", "chair_s", "coverage", "mean_words", "yes_no_accuracy", "self_check_accuracy", "labeler_accuracy", "unclaimed_rate"]
    for k in keys:
        if k in m:
            print(f"  {k:<22} {m[k]:.3f}")


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
    """Evaluate a model on the fixed held-out toy scenes."""
    from .hallucination import EvalConfig, evaluate_policy
    from .models import load_model
    from .records import write_json
    from .toyworld.scenes import evaluation_scenes

    _set_threads(args.threads)
    model, processor = load_model(args.model)
    t0 = time.time()
    m = evaluate_policy(model, processor, evaluation_scenes(args.n), EvalConfig(seed=args.seed), progress=True)
    texts = m.pop("texts")
    print(f"{args.model} on {args.n} held-out scenes ({time.time() - t0:.1f}s):")
    _print_metrics(m)
    if args.show:
        for t in texts[: args.show]:
            print("   ", t)
    if args.out:
        write_json(args.out, m)
        print(f"wrote {args.out}")
    return 0


def _table(rounds: list[dict], best: dict | None, numbers: list[int] | None = None) -> str:
    """The before/after table printed by ``rlaifv demo`` (rows numbered 0, 1, ... unless ``numbers`` says)."""
    head = f"{'round':<10}{'CHAIR_i':>9}{'CHAIR_s':>9}{'cover':>8}{'words':>8}{'labeler':>9}{'pairs':>7}{'sec':>7}"
    lines = [head, "-" * len(head)]
    for k, r in zip(numbers or range(len(rounds)), rounds):
        name = "baseline" if k == 0 else f"round {k}"
        lines.append(
            f"{name:<10}{r['chair_i']:>9.3f}{r['chair_s']:>9.3f}{r['coverage']:>8.3f}{r['mean_words']:>8.1f}"
            f"{r['labeler_accuracy']:>9.3f}{r['n_pairs']:>7d}{r['seconds']:>7.0f}"
        )
    if best:
        for sel, prefix in (("best-of-%d" % best["n"], ""), ("random", "random_"), ("loglik", "loglik_")):
            lines.append(
                f"{sel:<10}{best[prefix + 'chair_i']:>9.3f}{best[prefix + 'chair_s']:>9.3f}"
                f"{best[prefix + 'coverage']:>8.3f}{best[prefix + 'mean_words']:>8.1f}"
            )
    return "\n".join(lines)


def _run_config(args: argparse.Namespace) -> RLAIFVConfig:
    """The ``RLAIFVConfig`` of ``rlaifv demo`` and ``rlaifv round`` (defaults, with the flags applied)."""
    from .dpo import toy_dpo_settings
    from .pipeline import RLAIFVConfig
    from .sampling import SamplingConfig

    cfg = RLAIFVConfig(seed=args.seed)
    if args.smoke:  # seconds, not minutes: checks that everything runs; its numbers mean nothing
        cfg = RLAIFVConfig(
            rounds=2, prompts_per_round=8, sampling=SamplingConfig(n=4, max_new_tokens=48, batch_size=32),
            dpo=toy_dpo_settings(max_steps=2, batch_size=4),
            eval_scenes=10, best_of_n=2, best_of_n_prompts=4, seed=args.seed,
        )  # fmt: skip
    overrides = {"rounds": args.rounds, "prompts_per_round": args.prompts}
    return dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})  # validated again


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


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the default k-round RLAIF-V loop on the toy world and print the before/after table."""
    from .pipeline import RLAIFVRun
    from .plots import before_after_bars, metrics_per_round, save_figure

    _set_threads(args.threads)
    cfg = _run_config(args)
    t0 = time.time()
    run = RLAIFVRun(args.out, cfg)
    summary = run.run()
    rounds = summary["rounds"]
    print(f"\nRLAIF-V on the toy world: {len(rounds) - 1} rounds, held-out scenes = {cfg.eval_scenes}")
    print(_table(rounds, summary["best_of_n"]))
    if not run.rd.writable:  # a finished run on read-only storage: shown, nothing written
        print(f"\n{args.out} is read-only: the table above comes from its finished artifacts; nothing was written")
        return 0
    keys = ["chair_i", "chair_s", "coverage", "labeler_accuracy"]
    save_figure(metrics_per_round(rounds, keys=keys), Path(args.out) / "metrics_per_round.png")
    save_figure(before_after_bars(rounds[0], rounds[-1], keys=keys), Path(args.out) / "before_after.png")
    print(f"\nwrote {args.out}/summary.json and plots ({time.time() - t0:.0f}s)")
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
        de.add_argument("--prompts", type=int, default=None, help="override prompts per round")
        de.add_argument("--seed", type=int, default=0)
        de.add_argument("--threads", type=int, default=2)
        de.add_argument("--smoke", action="store_true", help="tiny settings that run in seconds (checks the install; numbers mean nothing)")
        de.set_defaults(func=func)

    ev = sub.add_parser("eval", help="CHAIR, coverage, yes/no and self-check accuracy on held-out scenes")
    ev.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug)
    ev.add_argument("--model", default="toy-policy", help="toy-policy, toy-labeler, or a model folder")
    ev.add_argument("--n", type=int, default=200, help="number of held-out scenes")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--out", default=None, help="write the metrics as JSON here")
    ev.add_argument("--show", type=int, default=0, help="print this many sampled descriptions")
    ev.add_argument("--threads", type=int, default=2)
    ev.set_defaults(func=cmd_eval)
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
