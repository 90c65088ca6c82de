"""Per-candidate seeds (``SeededSampler``) vs plain ``generate(do_sample=True)``: sampling throughput at one batch size.

The same rows (``--prompts`` prompts x ``--n`` candidates, every row with its whole prompt) are generated in
three ways, side by side in one run (one warm-up pass each, then ``--repeats`` timed passes, interleaved so that
load from other processes hits them alike):

- ``generate(do_sample=True)``: Hugging Face's sampling, one random stream for the whole batch (no per-candidate
  seed: a candidate's text depends on its batch);
- ``SeededSampler (on device)``: each row draws from its own generator on the model's device (today's library);
- ``per-row multinomial (before)``: the previous sampler, ``torch.multinomial`` on a CPU generator row by row.

Every way generates exactly ``--new-tokens`` tokens per row (``min_new_tokens``), so the work is the same and
tokens/s compare directly. It prints tokens/s, the ratio to plain ``generate`` and the time of the sampling step
alone (softmax + draw on a (rows, vocab) score tensor), which says where a gap comes from; on CPU it also checks
that the on-device sampler drew the same tokens as the per-row multinomial.

    python benchmarks/bench_sampling.py [--threads 1] [--prompts 8] [--n 8] [--new-tokens 32]
    python benchmarks/bench_sampling.py --real-shape [--prompts 2] [--n 8] [--new-tokens 32]   # random LLaVA-1.5-shaped model
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image
from transformers import LogitsProcessorList

from bench_feedback import add_real_shape_args  # the same real-shape model flags
from rlaifv_lib.images import load_image
from rlaifv_lib.models import chat_prompt, load_model, tokenizer_of
from rlaifv_lib.sampling import SeededSampler, candidate_seed
from rlaifv_lib.tiny import build_llava, redraw_weights
from rlaifv_lib.toyworld import INSTRUCTIONS, evaluation_scenes, render_scene


class PerRowMultinomial:
    """The sampler before it moved onto the device: ``torch.multinomial`` on a CPU generator, row by row (tests/test_sampling.py checks SeededSampler against it)."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float = 1.0):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_p, idx = probs.sort(dim=-1, descending=True)
            drop = sorted_p.cumsum(-1) - sorted_p > self.top_p
            probs = probs.scatter(-1, idx, sorted_p.masked_fill(drop, 0.0))
        out = torch.full_like(scores, float("-inf"))
        for row, gen in enumerate(self.generators):
            tok = torch.multinomial(probs[row].cpu(), 1, generator=gen)
            out[row, tok.to(scores.device)] = 0.0
        return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _models(args: argparse.Namespace, device: torch.device) -> tuple:
    """(model, processor, images, instructions, what): the toy policy or a random LLaVA-1.5-shaped model."""
    if not args.real_shape:
        model, processor = load_model("toy-policy")
        scenes = evaluation_scenes(args.prompts)
        return model.to(device), processor, [render_scene(s) for s in scenes], [INSTRUCTIONS[0]] * args.prompts, "toy policy"
    torch.manual_seed(0)
    h = args.text_hidden
    model, processor = build_llava(h, image_size=336, vision_hidden=args.vision_hidden, vision_layers=args.vision_layers, num_hidden_layers=args.text_layers,
                                   intermediate_size=h * 43 // 16, num_attention_heads=max(1, h // 64), num_key_value_heads=max(1, h // 64))  # fmt: skip
    model.resize_token_embeddings(args.vocab)  # LLaVA-1.5's vocabulary size: the sampler's work grows with it
    redraw_weights(model, 0.1)
    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random((360, 480, 3)) * 255).astype("uint8")) for _ in range(args.prompts)]
    text = model.config.text_config
    what = f"random LLaVA-1.5-shaped model (576 image tokens, decoder {text.hidden_size} x {text.num_hidden_layers}, vocab {text.vocab_size})"
    return model.to(device), processor, images, ["Describe the image in detail."] * args.prompts, what


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n", type=int, default=8, help="candidates per prompt (rows = prompts x n)")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--real-shape", action="store_true", help="a random LLaVA-1.5-shaped model (576 image tokens, 32064-token vocabulary)")
    ap.add_argument("--vocab", type=int, default=32064, help="real-shape: vocabulary size")
    add_real_shape_args(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, processor, images, instructions, what = _models(args, device)
    tok = tokenizer_of(processor)
    rows = [(p, k) for p in range(args.prompts) for k in range(args.n)]
    inputs = processor(images=[load_image(images[p]) for p, _ in rows], text=[chat_prompt(processor, instructions[p]) for p, _ in rows],
                       return_tensors="pt", padding=True, padding_side="left").to(device)  # fmt: skip
    seeds = [candidate_seed(0, f"p{p}", k) for p, k in rows]
    common = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)

    def run(way: str) -> torch.Tensor:
        with torch.no_grad():
            if way == "generate(do_sample=True)":
                out = model.generate(**inputs, do_sample=True, temperature=args.temperature, top_p=1.0, top_k=0, **common)
            else:
                cls = SeededSampler if way == "SeededSampler (on device)" else PerRowMultinomial
                out = model.generate(**inputs, do_sample=False, logits_processor=LogitsProcessorList([cls(seeds, args.temperature)]), **common)
        _sync(device)
        return out[:, inputs["input_ids"].shape[1] :]

    ways = ["generate(do_sample=True)", "SeededSampler (on device)", "per-row multinomial (before)"]
    tokens = {w: run(w) for w in ways}  # warm-up
    seconds = dict.fromkeys(ways, 0.0)
    for _ in range(args.repeats):
        for w in ways:
            t0 = time.perf_counter()
            run(w)
            seconds[w] += time.perf_counter() - t0

    # the sampling step alone, on score tensors of the model's shape
    vocab = model.get_output_embeddings().weight.shape[0]
    scores = torch.randn(len(rows), vocab, device=device) * 3
    steps = 20
    step_fns = {
        "generate(do_sample=True)": lambda: torch.multinomial(torch.softmax(scores / args.temperature, -1), 1),
        "SeededSampler (on device)": (lambda s: lambda: s(None, scores))(SeededSampler(seeds, args.temperature)),
        "per-row multinomial (before)": (lambda s: lambda: s(None, scores))(PerRowMultinomial(seeds, args.temperature)),
    }  # fmt: skip
    step_ms = dict.fromkeys(step_fns, 0.0)
    for fn in step_fns.values():
        fn()  # warm-up
    for _ in range(steps):  # interleaved, as the generate passes
        for w, fn in step_fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            step_ms[w] += (time.perf_counter() - t0) / steps * 1e3

    n_tokens = len(rows) * args.new_tokens
    print(f"{what} on {device}, {torch.get_num_threads()} threads")
    print(f"{len(rows)} rows ({args.prompts} prompts x {args.n} candidates) in one generate call, {args.new_tokens} new tokens each, "
          f"prompt {inputs['input_ids'].shape[1]} tokens, {args.repeats} timed passes each (interleaved)")  # fmt: skip
    rates = {w: args.repeats * n_tokens / s for w, s in seconds.items()}
    plain = rates["generate(do_sample=True)"]
    print(f"  {'way':<30} {'tokens/s':>10} {'vs generate(do_sample=True)':>28} {'sampling step alone (ms)':>25}")
    for w in ways:
        print(f"  {w:<30} {rates[w]:10.1f} {rates[w] / plain:27.3f}x {step_ms[w]:25.3f}")
    if device.type == "cpu":
        same = torch.equal(tokens["SeededSampler (on device)"], tokens["per-row multinomial (before)"])
        print(f"  SeededSampler drew the same tokens as the per-row multinomial: {same}")


if __name__ == "__main__":
    main()
