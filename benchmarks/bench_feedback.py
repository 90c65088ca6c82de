"""Batched next-token yes/no scoring vs asking one question at a time with ``generate``.

Both ways answer the same claims of the same toy candidates with the same labeler, side by side
in one run (one warm-up pass each, then timed passes). Prints claims/second and the ratio, and
checks that both ways agree on the verdicts.

    python benchmarks/bench_feedback.py [--prompts 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from rlaifv_lib.claims import ToyDecomposer
from rlaifv_lib.engine import EngineSettings, run_pass
from rlaifv_lib.feedback import FeedbackConfig, yes_no_probs
from rlaifv_lib.models import chat_prompt, load_model
from rlaifv_lib.records import Prompt, prompt_of
from rlaifv_lib.sampling import SamplingConfig
from rlaifv_lib.toyworld import INSTRUCTIONS, evaluation_scenes, render_scene


def generate_one_by_one(model, processor, images, questions, index) -> list[bool]:
    """The naive way: one ``generate`` call per question, reading the answer from the text."""
    answers = []
    for q, i in zip(questions, index):
        enc = processor(images=[images[i]], text=[chat_prompt(processor, q)], return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**enc, do_sample=False, max_new_tokens=2)
        text = processor.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        answers.append(text.strip().lower().startswith("yes"))
    return answers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, processor = load_model("toy-policy")
    scenes = evaluation_scenes(args.prompts)
    prompts = [Prompt(s.id, render_scene(s), INSTRUCTIONS[0]) for s in scenes]
    data = run_pass(prompts, (model, processor), None, ToyDecomposer(), EngineSettings(sampling=SamplingConfig(n=2)), progress=False, pairs=False)
    cands, claims = data.candidates, data.claims
    by_id = {p.id: p for p in prompts}
    images = [by_id[prompt_of(c.candidate_id)].image for c in claims]
    index = list(range(len(claims)))
    questions = [c.question for c in claims]

    ways = {
        "batched logits (reuse image features)": lambda: [py > pn for py, pn in yes_no_probs(model, processor, images, questions, index, FeedbackConfig(batch_size=256))],
        "batched logits (per-question images)": lambda: [py > pn for py, pn in yes_no_probs(model, processor, images, questions, index, FeedbackConfig(batch_size=256, reuse_image_features=False))],
        "generate, one question at a time": lambda: generate_one_by_one(model, processor, images, questions, index),
    }  # fmt: skip
    rates, verdicts = {}, {}
    for name, fn in ways.items():
        verdicts[name] = fn()  # warm-up
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            fn()
        rates[name] = args.repeats * len(claims) / (time.perf_counter() - t0)
    naive = rates["generate, one question at a time"]
    print(f"{len(claims)} claims from {len(cands)} candidates, {args.repeats} timed passes each, {torch.get_num_threads()} threads")
    for name, r in rates.items():
        print(f"  {name:<40} {r:9.1f} claims/s   x{r / naive:6.1f} vs generate")
    base = verdicts["generate, one question at a time"]
    for name, v in verdicts.items():
        agree = sum(a == b for a, b in zip(v, base)) / len(base)
        print(f"  agreement with generate: {name:<40} {agree:.3f}")


if __name__ == "__main__":
    main()
