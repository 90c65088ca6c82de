"""Batched next-token yes/no scoring vs asking one question at a time with ``generate``.

Toy mode (default): the ways answer the same claims of the same toy candidates with the same labeler,
side by side in one run (one warm-up pass each, then timed passes). Prints claims/second and the
ratio, and checks that the ways agree on the verdicts.

Real-shape mode (``--real-shape``): a randomly initialised LLaVA-1.5-shaped labeler (CLIP at 336 px
with 14 px patches -> 576 image tokens in front of the text; a small Llama decoder) answers
``--questions`` yes/no questions about each of ``--images`` images in three ways: one question at a
time with ``generate`` (the official pipeline's way, P(yes)/P(no) read from the first step's logits),
today's batched forward pass (image features reused, whole prompt per question) and the shared-prefix
path (each image's prompt prefix run once, then only the question tokens). The timed passes of the
three ways are interleaved so that load from other processes hits them alike. Prints questions/s,
language-model prefill tokens per question and the agreement of P(yes)/P(no) and of the verdicts.

    python benchmarks/bench_feedback.py [--prompts 20] [--repeats 3]
    python benchmarks/bench_feedback.py --real-shape [--images 4] [--questions 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

from rlaifv_lib.claims import ToyDecomposer
from rlaifv_lib.engine import EngineSettings, run_pass
from rlaifv_lib.feedback import FeedbackConfig, yes_no_probs, yes_no_token_ids
from rlaifv_lib.models import YES_NO_SUFFIX, chat_prompt, load_model
from rlaifv_lib.prefix import prefill_tokens
from rlaifv_lib.records import Prompt, prompt_of
from rlaifv_lib.sampling import SamplingConfig
from rlaifv_lib.tiny import build_llava, redraw_weights
from rlaifv_lib.toyworld import INSTRUCTIONS, evaluation_scenes, render_scene

# questions in the official form (claim question + " Please answer yes or no."), about ~20 tokens each
REAL_QUESTIONS = [
    "Is there a red cat on the table?", "Is the dog brown?", "Is a man riding a bicycle?", "Is the car blue?",
    "Is the sky clear?", "Are there two people in the image?", "Is the cat small?", "Is the table red?",
    "Is there a blue car next to the man?", "Is the dog on the table?", "Is the bicycle next to a car?",
    "Is there a small brown dog?", "Is the man next to the table?", "Are the people riding bicycles?",
    "Is there a cat in the picture?", "Is the image showing a clear sky?",
]  # fmt: skip


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


def generate_probs(model, processor, images, questions, index) -> list[tuple[float, float]]:
    """The official way: one ``generate`` call (1 new token) per question; P(yes)/P(no) from its logits."""
    yes, no = yes_no_token_ids(processor.tokenizer)
    out = []
    for q, i in zip(questions, index):
        enc = processor(images=[images[i]], text=[chat_prompt(processor, q)], return_tensors="pt")
        with torch.no_grad():
            gen = model.generate(**enc, do_sample=False, max_new_tokens=1, output_logits=True, return_dict_in_generate=True)
        p = torch.softmax(gen.logits[0][0].float(), -1)
        out.append((float(p[yes].sum()), float(p[no].sum())))
    return out


def real_shape(args: argparse.Namespace) -> None:
    """The three ways on a random LLaVA-1.5-shaped model, timed interleaved, with prefill tokens and agreement."""
    torch.manual_seed(0)
    h = args.text_hidden  # heads of 64 dimensions and a Llama-like MLP ratio, as LLaVA-1.5's decoder has
    model, processor = build_llava(h, image_size=336, vision_hidden=args.vision_hidden, vision_layers=args.vision_layers, num_hidden_layers=args.text_layers,
                                   intermediate_size=h * 43 // 16, num_attention_heads=max(1, h // 64), num_key_value_heads=max(1, h // 64))  # fmt: skip
    redraw_weights(model, 0.1)  # a wider init than Llama's 0.02, so that answers depend on image and question
    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random((360 + 20 * k, 480, 3)) * 255).astype("uint8")) for k in range(args.images)]
    base = [REAL_QUESTIONS[j % len(REAL_QUESTIONS)] for j in range(args.questions)]
    questions = [q + YES_NO_SUFFIX for _ in images for q in base]
    index = [k for k in range(args.images) for _ in base]
    whole, shared = prefill_tokens(processor, images, questions, index)
    ways = {
        "generate, one question at a time": (lambda: generate_probs(model, processor, images, questions, index), whole),
        "batched, whole prompt (today)": (lambda: yes_no_probs(model, processor, images, questions, index, FeedbackConfig(shared_prefix=False)), whole),
        "shared prefix": (lambda: yes_no_probs(model, processor, images, questions, index, FeedbackConfig()), shared),
    }  # fmt: skip
    probs = {name: fn() for name, (fn, _) in ways.items()}  # warm-up
    seconds = dict.fromkeys(ways, 0.0)
    for _ in range(args.repeats):
        for name, (fn, _) in ways.items():
            t0 = time.perf_counter()
            fn()
            seconds[name] += time.perf_counter() - t0
    n_image_tokens = processor(images=[images[0]], text=[chat_prompt(processor, "x")])["input_ids"][0].count(processor.tokenizer.convert_tokens_to_ids("<image>"))
    text = model.config.text_config
    print(f"real-shape LLaVA-1.5 labeler: {n_image_tokens} image tokens, Llama decoder {text.hidden_size} wide x {text.num_hidden_layers} layers, "
          f"CLIP {model.config.vision_config.hidden_size} wide x {model.config.vision_config.num_hidden_layers} layers (random weights)")  # fmt: skip
    print(f"{args.images} images x {args.questions} questions, {args.repeats} timed passes each (interleaved), {torch.get_num_threads()} threads")
    rates = {name: args.repeats * len(questions) / s for name, s in seconds.items()}
    ref = probs["generate, one question at a time"]
    print(f"  {'way':<34} {'questions/s':>11} {'LM prefill tokens/question':>27} {'vs batched':>10} {'vs generate':>11} {'max |dP| vs generate':>21} {'verdicts agree':>14}")
    for name, (_, tokens) in ways.items():
        r, p = rates[name], probs[name]
        delta = max(abs(a - b) for x, y in zip(p, ref) for a, b in zip(x, y))
        agree = sum((a[0] > a[1]) == (b[0] > b[1]) for a, b in zip(p, ref)) / len(ref)
        print(f"  {name:<34} {r:11.1f} {tokens:27.1f} {r / rates['batched, whole prompt (today)']:9.1f}x {r / rates['generate, one question at a time']:10.1f}x {delta:21.1e} {agree:14.3f}")


def add_real_shape_args(ap: argparse.ArgumentParser) -> None:
    """The real-shape model's size flags (decoder and vision tower width and depth)."""
    ap.add_argument("--text-hidden", type=int, default=256, help="real-shape: decoder width")
    ap.add_argument("--text-layers", type=int, default=4, help="real-shape: decoder layers")
    ap.add_argument("--vision-hidden", type=int, default=64, help="real-shape: vision tower width")
    ap.add_argument("--vision-layers", type=int, default=2, help="real-shape: vision tower layers")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--real-shape", action="store_true", help="the three ways on a random LLaVA-1.5-shaped model (576 image tokens)")
    ap.add_argument("--images", type=int, default=4, help="real-shape: images")
    ap.add_argument("--questions", type=int, default=16, help="real-shape: questions per image")
    add_real_shape_args(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.real_shape:
        real_shape(args)
        return
    model, processor = load_model("toy-policy")
    scenes = evaluation_scenes(args.prompts)
    prompts = [Prompt(s.id, render_scene(s), INSTRUCTIONS[0]) for s in scenes]
    data = run_pass(prompts, (model, processor), None, ToyDecomposer(), EngineSettings(sampling=SamplingConfig(n=2)), progress=False, pairs=False)
    cands, claims = data.candidates, data.claims
    by_id = {p.id: k for k, p in enumerate(prompts)}
    images = [p.image for p in prompts]
    index = [by_id[prompt_of(c.candidate_id)] for c in claims]  # one image per prompt: its questions share a prefix
    questions = [c.question for c in claims]

    ways = {
        "batched logits (shared prefix)": lambda: [py > pn for py, pn in yes_no_probs(model, processor, images, questions, index, FeedbackConfig(batch_size=256))],
        "batched logits (reuse image features)": lambda: [py > pn for py, pn in yes_no_probs(model, processor, images, questions, index, FeedbackConfig(batch_size=256, shared_prefix=False))],
        "batched logits (per-question images)": lambda: [py > pn for py, pn in yes_no_probs(model, processor, images, questions, index, FeedbackConfig(batch_size=256, shared_prefix=False, reuse_image_features=False))],
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
