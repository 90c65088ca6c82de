"""Work planner: the exact amount of work of a k-round RLAIF-V run, per round and stage, and memory per process.

Counts come from the run's configuration (``pipeline.RLAIFVConfig``) and the models' architectures (configs built
locally, on the meta device: nothing is downloaded); memory from ``memory.py``. No throughput is assumed: the plan
says how much work there is, not how long it takes.

What is exact and what is not, per column:

- responses, image tokens, pairs and DPO sequences: exact (pairs: the bound ``prompts x max_pairs_per_prompt``);
- tokens generated: the bound ``responses x max_new_tokens``; measured when a finished run's artifacts are given;
- claim questions, response/question/prompt text tokens: they depend on what the models write, so the plan takes
  them from the run's artifacts (``measure_run``) or from :class:`PlanAssumptions`, and says which (``assumed``);
- LM prefill tokens of scoring: every question's whole prompt (``whole``) vs each image's shared prefix once plus
  the questions after it (``shared``: ``FeedbackConfig.shared_prefix``, ``rlaifv_lib/prefix.py``).

The pipeline keeps the labeler and the LLM decomposer loaded once it has used them (``RLAIFVRun._labeler``,
``_decomposer``), so from the first scoring stage on they stay resident through sampling and DPO; the memory
column counts them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError, check_finite
from .memory import estimate_memory, image_tokens, weights_memory
from .models import PRESETS, meta_model
from .pipeline import RLAIFVConfig

__all__ = ["ARCHITECTURES", "PlanLayout", "PlanAssumptions", "architecture", "count_image_tokens", "plan_run", "measure_run", "format_plan"]

GIB = 1024**3

# architectures (config.json fields) of models the presets cannot load here, written from their published shapes
ARCHITECTURES: dict[str, dict] = {
    # LLaVA-NeXT-34B (llava-hf/llava-v1.6-34b-hf): CLIP ViT-L/14 at 336 px, AnyRes tiles, Yi-34B decoder; the paper's labeler
    "llava-next-34b": dict(
        model_type="llava_next", image_token_index=64000, vision_feature_layer=-2, vision_feature_select_strategy="default",
        image_grid_pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
        vision_config=dict(model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768),
        text_config=dict(model_type="llama", hidden_size=7168, intermediate_size=20480, num_hidden_layers=60, num_attention_heads=56, num_key_value_heads=8, vocab_size=64064),
    ),
    # Llama-3-8B-Instruct: the paper's claim decomposer
    "llama-3-8b-instruct": dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, vocab_size=128256),
}  # fmt: skip


@dataclass
class PlanLayout:
    """How the run is spread over devices.

    Args:
        processes (int, defaults to 1): data-parallel processes, one policy replica each; prompts are split evenly.
        labeler_gpus (int, defaults to 1): devices one labeler replica is split over (a device map inside a process).
        image_size (tuple of int, defaults to (480, 640)): (height, width) of the prompt images (COCO's usual 480 x 640).
    """

    processes: int = 1
    labeler_gpus: int = 1
    image_size: tuple[int, int] = (480, 640)

    def __post_init__(self) -> None:
        check_finite(self)
        if self.processes < 1 or self.labeler_gpus < 1:
            raise ConfigError(f"processes and labeler_gpus must be >= 1, got {self.processes} and {self.labeler_gpus}")
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ConfigError(f"image_size must be (height, width) in pixels, got {self.image_size}")


@dataclass
class PlanAssumptions:
    """What the models will write, used only where no finished run is given (each is shown as ``assumed``).

    Args:
        claims_per_response (float, defaults to 8.0): atomic claims the decomposer finds in one response.
        response_tokens (float | None, defaults to None): mean tokens of a response; None = ``max_new_tokens`` (the bound).
        prompt_text_tokens (int, defaults to 40): text tokens of a sampling/DPO prompt besides the image (chat template + instruction).
        prefix_text_tokens (int, defaults to 10): text tokens of a labeler prompt before the question (after the image).
        question_tokens (int, defaults to 25): tokens of one claim question after the shared prefix (question, yes/no suffix, template).
    """

    claims_per_response: float = 8.0
    response_tokens: float | None = None
    prompt_text_tokens: int = 40
    prefix_text_tokens: int = 10
    question_tokens: int = 25

    def __post_init__(self) -> None:
        check_finite(self)
        for name in ("claims_per_response", "prompt_text_tokens", "prefix_text_tokens", "question_tokens"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.response_tokens is not None and self.response_tokens < 0:
            raise ConfigError(f"response_tokens must be >= 0 or None, got {self.response_tokens}")


def architecture(name: str) -> Any:
    """A transformers config from a preset name, an :data:`ARCHITECTURES` name, a model folder or a config.json path."""
    from transformers import AutoConfig

    if name in ARCHITECTURES:
        d = json.loads(json.dumps(ARCHITECTURES[name]))
        return AutoConfig.for_model(d.pop("model_type"), **d)
    if name in PRESETS and PRESETS[name].arch:
        d = json.loads(json.dumps(PRESETS[name].arch))
        return AutoConfig.for_model(d.pop("model_type"), **d)
    path = Path(PRESETS[name].model_id) if name in PRESETS else Path(name)
    if path.is_dir() and (path / "config.json").exists():
        return AutoConfig.from_pretrained(path)
    if path.is_file():
        d = json.loads(path.read_text(encoding="utf-8"))
        return AutoConfig.for_model(d.pop("model_type"), **d)
    raise ConfigError(f"no architecture for {name!r}: give a preset with an architecture, one of {sorted(ARCHITECTURES)}, a model folder or a config.json")


def count_image_tokens(config: Any, height: int, width: int, max_pixels: int | None = None) -> int:
    """Tokens one image takes in the language model (``memory.image_tokens``, plus LLaVA-NeXT's AnyRes tiles)."""
    if config.model_type != "llava_next":
        return image_tokens(config, height, width, max_pixels=max_pixels)
    from transformers.image_processing_utils import select_best_resolution

    side, patch = config.vision_config.image_size, config.vision_config.patch_size
    best_h, best_w = select_best_resolution([height, width], config.image_grid_pinpoints)
    cur_h, cur_w = side // patch * (best_h // side), side // patch * (best_w // side)
    if width / height > cur_w / cur_h:  # as LlavaNextProcessor._get_unpadded_features
        cur_h -= (cur_h - int(round(height * (cur_w / width), 7))) // 2 * 2
    else:
        cur_w -= (cur_w - int(round(width * (cur_h / height), 7))) // 2 * 2
    return (side // patch) ** 2 + cur_h * cur_w + cur_h  # base view + unpadded tiles + one newline per row


def _params(config: Any) -> int:
    return sum(p.numel() for p in meta_model(config).parameters())


def _weights_gib(config: Any, load_in_4bit: bool) -> float:
    """Inference weights (GiB): 4-bit NF4 or bf16."""
    return weights_memory(_params(config), 0, load_in_4bit=load_in_4bit)["base_weights_gib"]


def _kv_bytes_per_token(config: Any) -> int:
    """bf16 key/value cache bytes per token (all decoder layers)."""
    text = getattr(config, "text_config", config)
    head = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return 2 * text.num_hidden_layers * (text.num_key_value_heads or text.num_attention_heads) * head * 2


def measure_run(run_dir: str | Path, processor: Any, cfg: RLAIFVConfig, labeler_processor: Any | None = None) -> dict[int, dict[str, float]]:
    """Counts of a finished run's rounds from its artifacts, tokenized with the policy's ``processor`` (questions with
    ``labeler_processor``, default the policy's: self-feedback): prompts, responses, response/prompt/prefix/question tokens, claims, pairs."""
    from .models import chat_prompt, tokenizer_of
    from .records import prompt_of, read_jsonl_marked

    tok, labeler_processor = tokenizer_of(processor), labeler_processor or processor
    ltok = tokenizer_of(labeler_processor)
    n_ids = lambda text: len(tok(text)["input_ids"])  # noqa: E731  (as prefix.plan_prefix tokenizes: specials included)
    out: dict[int, dict[str, float]] = {}
    for k in range(1, cfg.rounds + 1):
        rd = Path(run_dir) / f"round_{k}"
        if not (rd / "pairs.jsonl").exists():
            continue
        rows = {name: read_jsonl_marked(rd / f"{name}.jsonl")[0] for name in ("prompts", "candidates", "claims", "pairs")}
        by_prompt: dict[str, list[list[int]]] = {}
        for c in rows["claims"]:
            by_prompt.setdefault(prompt_of(c["candidate_id"]), []).append(ltok(chat_prompt(labeler_processor, c["question"] + cfg.feedback.question_suffix))["input_ids"])
        prefix_text = question = prefix_text_per_q = 0
        for ids in by_prompt.values():  # the split of prefix.plan_prefix: longest common prefix, every question keeps >= 1 token
            common = next((i for i in range(min(map(len, ids))) if any(r[i] != ids[0][i] for r in ids)), min(map(len, ids)))
            cut = min(common, min(map(len, ids)) - 1)
            prefix_text += cut - 1  # the one image placeholder becomes the image tokens
            prefix_text_per_q += (cut - 1) * len(ids)
            question += sum(len(r) - cut for r in ids)
        m: dict[str, float] = {
            "prompts": len(rows["prompts"]), "responses": len(rows["candidates"]), "claims": len(rows["claims"]), "pairs": len(rows["pairs"]),
            "response_tokens": sum(len(tok(c["text"], add_special_tokens=False)["input_ids"]) for c in rows["candidates"]),
            "prompt_text_tokens": sum(n_ids(chat_prompt(processor, p["instruction"])) - 1 for p in rows["prompts"]) / max(1, len(rows["prompts"])),
            "pair_response_tokens": sum(len(tok(p[key], add_special_tokens=False)["input_ids"]) for p in rows["pairs"] for key in ("chosen", "rejected")) / max(1, len(rows["pairs"])),
            "scored_images": len(by_prompt), "prefix_text_tokens": prefix_text, "prefix_text_per_question": prefix_text_per_q, "question_tokens": question,
        }  # fmt: skip
        log = rd / "dpo" / "dpo_log.json"
        if log.exists():
            m["dpo_steps"] = max((e["step"] for e in json.loads(log.read_text(encoding="utf-8"))["log_history"] if "step" in e), default=0)
        out[k] = m
    return out


def plan_run(cfg: RLAIFVConfig, layout: PlanLayout | None = None, assume: PlanAssumptions | None = None, measured: dict[int, dict] | None = None,
             labeler_arch: str | None = None, policy_arch: str | None = None) -> dict:  # fmt: skip
    """Per round and stage the work (responses, tokens, claim questions, DPO sequences, image and prefill tokens) of the
    busiest process and its peak memory (GiB); ``measured`` (from :func:`measure_run`) replaces assumptions and bounds."""
    layout, assume, measured = layout or PlanLayout(), assume or PlanAssumptions(), measured or {}
    s, d, load, fb, N = cfg.sampling, cfg.dpo, cfg.load, cfg.feedback, layout.processes
    policy = architecture(policy_arch or cfg.policy)
    labeler = architecture(labeler_arch or cfg.labeler) if (labeler_arch or cfg.labeler) else None
    decomposer = architecture(cfg.decomposer_model) if cfg.claims.decomposer == "llm" and cfg.decomposer_model else None
    h, w = layout.image_size
    img_p = count_image_tokens(policy, h, w, load.max_pixels)
    img_l = count_image_tokens(labeler or policy, h, w, load.max_pixels)
    shared_prefill = s.shared_prefill and policy.model_type in ("llava", "idefics3", "smolvlm")
    w_policy, w_labeler = _weights_gib(policy, load.load_in_4bit), (_weights_gib(labeler, load.load_in_4bit) / layout.labeler_gpus if labeler else 0.0)
    w_decomp = _weights_gib(decomposer, load.load_in_4bit) if decomposer else 0.0
    kv_p, kv_l = _kv_bytes_per_token(policy), _kv_bytes_per_token(labeler or policy)
    dpo_mem = estimate_memory(policy, (h, w), batch_size=d.batch_size, text_tokens=assume.prompt_text_tokens + s.max_new_tokens, load_in_4bit=d.load_in_4bit,
                              lora_r=d.lora_r, target_modules=d.target_modules, gradient_checkpointing=d.gradient_checkpointing, max_pixels=load.max_pixels)["total_gib"]  # fmt: skip
    rows, resident = [], 0.0
    for k in range(1, cfg.rounds + 1):
        got, tag = measured.get(k, {}), ("measured" if k in measured else "assumed")
        P = int(got.get("prompts", cfg.prompts_per_round))
        R = int(got.get("responses", P * s.n))
        C = int(got["claims"]) if got else math.ceil(R * assume.claims_per_response)
        resp = got["response_tokens"] if got else (None if assume.response_tokens is None else R * assume.response_tokens)
        mean_resp = resp / max(R, 1) if resp is not None else s.max_new_tokens  # the bound where nothing says otherwise
        prompt_len = img_p + (got["prompt_text_tokens"] if got else assume.prompt_text_tokens)
        # sample: a shared prefill runs each prompt once but its last token, then every row continues from it
        rows.append(dict(round=k, stage="sample", responses=R / N, tokens_generated=None if resp is None else resp / N, tokens_bound=R * s.max_new_tokens / N, image_tokens=(P if shared_prefill else R) * img_p / N,
                         prefill_whole=R * prompt_len / N, prefill_shared=(P * (prompt_len - 1) + R if shared_prefill else R * prompt_len) / N,
                         memory_gib=w_policy + resident + min(s.batch_size, math.ceil(R / N)) * (prompt_len + s.max_new_tokens) * kv_p / GIB, source=tag))  # fmt: skip
        if decomposer:  # pass (a) per response, pass (b) per fact: each at most claims.max_new_tokens
            rows.append(dict(round=k, stage="decompose", responses=R / N, tokens_bound=(R + C) * cfg.claims.max_new_tokens / N, claims=C / N,
                             memory_gib=w_policy + w_decomp + (w_labeler if k > 1 else 0.0), source=tag))  # fmt: skip
        else:
            rows.append(dict(round=k, stage="decompose", responses=R / N, claims=C / N, memory_gib=None, source=tag))
        groups = int(got["scored_images"]) if got else P
        q_sum = got["question_tokens"] if got else C * assume.question_tokens
        pre_sum = got["prefix_text_tokens"] if got else groups * assume.prefix_text_tokens
        pre_per_q = got["prefix_text_per_question"] if got else C * assume.prefix_text_tokens
        chunk_tokens = (img_l + assume.prefix_text_tokens + fb.prefix_batch_size * assume.question_tokens) if fb.shared_prefix else min(fb.batch_size, max(C, 1)) * (img_l + assume.prefix_text_tokens + assume.question_tokens)
        resident = w_decomp + w_labeler  # held from the first scoring stage on
        rows.append(dict(round=k, stage="score", claims=C / N, image_tokens=(groups if fb.reuse_image_features or fb.shared_prefix else C) * img_l / N,
                         prefill_whole=(C * img_l + pre_per_q + q_sum) / N, prefill_shared=(groups * img_l + pre_sum + q_sum) / N,
                         memory_gib=w_policy + resident + chunk_tokens * kv_l / GIB, source=tag))  # fmt: skip
        pairs = int(got.get("pairs", P * cfg.pairs.max_pairs_per_prompt))
        seen = pairs * d.epochs if d.max_steps <= 0 else min(d.max_steps * d.batch_size * d.grad_accum * N, pairs * d.epochs)
        seq_tokens = prompt_len + (got["pair_response_tokens"] / 2 if got else mean_resp)  # mean tokens of one chosen or rejected sequence
        # TRL with LoRA and no ref_model: the reference (adapters off) runs a forward pass on every sequence it trains on
        rows.append(dict(round=k, stage="dpo", pairs=pairs / N, dpo_sequences=2 * seen / N, image_tokens=2 * 2 * seen * img_p / N,
                         prefill_whole=2 * 2 * seen * seq_tokens / N, memory_gib=resident + dpo_mem, source=tag, dpo_pairs_seen=seen))  # fmt: skip
    return {"rows": rows, "image_tokens": {"policy": img_p, "labeler": img_l}, "params": {"policy": _params(policy), "labeler": _params(labeler) if labeler else None,
            "decomposer": _params(decomposer) if decomposer else None}, "layout": layout, "assumptions": assume, "shared_prefill": shared_prefill}  # fmt: skip


def _num(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.1f}"
    return f"{int(v):,}"


_COLUMNS = [("responses", "responses"), ("tokens_generated", "tokens gen."), ("tokens_bound", "bound"), ("claims", "claim Qs"), ("dpo_sequences", "DPO seqs"),
            ("image_tokens", "image tok."), ("prefill_whole", "LM tokens"), ("prefill_shared", "LM tok. shared"), ("memory_gib", "GiB/process")]  # fmt: skip


def format_plan(plan: dict, title: str = "") -> str:
    """The plan as a text table: one row per round and stage (per process), then what it rests on."""
    head = f"{'round':>5} {'stage':<10}" + "".join(f"{h:>17}" for _, h in _COLUMNS) + f"{'':>2}counts"
    lines = ([title] if title else []) + [head, "-" * len(head)]
    for r in plan["rows"]:
        cells = "".join(f"{(_num(r.get(key)) if key != 'memory_gib' or r.get(key) is None else f'{r[key]:.1f}'):>17}" for key, _ in _COLUMNS)
        lines.append(f"{r['round']:>5} {r['stage']:<10}{cells}  {r['source']}")
    p, lay, a = plan["params"], plan["layout"], plan["assumptions"]
    lines.append("LM tokens: prompt tokens the language model runs (sample: every row's prompt; score: every question's whole prompt;"
                 " dpo: chosen + rejected sequences, trained and reference passes); shared: each prompt/image prefix once")  # fmt: skip
    lines.append(f"per process of {lay.processes}; labeler over {lay.labeler_gpus} device(s); images {lay.image_size[0]}x{lay.image_size[1]} -> "
                 f"{plan['image_tokens']['policy']} policy / {plan['image_tokens']['labeler']} labeler image tokens")  # fmt: skip
    lines.append("params: " + ", ".join(f"{k} {v / 1e9:.2f}B" for k, v in p.items() if v))
    if any(r["source"] == "assumed" for r in plan["rows"]):
        lines.append(f"assumed: {a.claims_per_response:g} claims/response, prompt text {a.prompt_text_tokens} tok, labeler prefix text {a.prefix_text_tokens} tok, "
                     f"question {a.question_tokens} tok, responses {'at the max_new_tokens bound' if a.response_tokens is None else f'{a.response_tokens:g} tok'}")  # fmt: skip
    return "\n".join(lines)
