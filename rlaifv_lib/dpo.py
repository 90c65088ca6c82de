"""QLoRA DPO on the preference pairs, around TRL's ``DPOTrainer`` (RLAIF-V, Sec. 3.3 "Iterative
Alignment" with the DPO objective of Rafailov et al. 2023).

The policy's base weights are loaded in 4-bit NF4 (bitsandbytes, double quantisation), LoRA
adapters (PEFT) are added to every linear layer of the *language model* decoder — not the vision
tower, not the projector — and trained with the sigmoid DPO loss
``-log sigma(beta * [(log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))])``,
beta = 0.1 as in the official code. The reference policy is the same base with the adapters
switched off, which TRL does when it is given ``peft_config`` and no ``ref_model``.

Each RLAIF-V round starts from a *plain* model: after training, :func:`merge_adapters` folds the
adapters into a full-precision copy of the base (merging into the 4-bit weights would re-quantise
them and move the model), and the next round loads that merged model, quantised again.

Launched as N processes (``torchrun`` / ``accelerate launch``, ``configs/accelerate/``), the same trainer runs data
parallel (DDP; NCCL on GPUs, gloo on CPU; or the DeepSpeed/FSDP plugin of the accelerate config): each process
takes ``batch_size`` pairs per step, so one optimiser step sees ``batch_size x grad_accum x N`` pairs
(``dpo_log.json`` records ``world_size`` and ``global_batch_size``); one process writes the adapters and the log.
The reference log-probs are computed in each step's forward with the adapters switched off (no second copy of the
model): TRL 1.16's ``precompute_ref_log_probs`` refuses vision datasets, so they cannot be computed once up front.
"""

from __future__ import annotations

import contextlib
import copy
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from datasets import Dataset
from transformers import AutoConfig, AutoModelForImageTextToText, PreTrainedModel

from .errors import ConfigError, DatasetSchemaError, ModelLoadError, NoPairsError, NonFiniteWeightsError, QuantizationUnavailableError, check_finite
from .memory import weights_memory
from . import models
from .models import DPO_BETA, LoadOptions, ModelPreset, check_model_folder, count_parameters, get_preset, language_model_linear_layers, load_kwargs, load_processor, quiet_loading, resolve_model
from .pairs import to_trl_dataset
from .records import PreferencePair, atomic_directory, write_json

__all__ = [
    "DPOSettings",
    "toy_dpo_settings",
    "DPOResult",
    "FALLBACK_MESSAGE",
    "build_dpo_trainer",
    "train_dpo",
    "merge_adapters",
]

TRL_COLUMNS = ("images", "prompt", "chosen", "rejected")
FALLBACK_MESSAGE = (
    "bitsandbytes cannot run 4-bit NF4 here, so DPO falls back to full-precision LoRA (same adapters, "
    "same loss, more memory). Install a bitsandbytes build for this device to train in 4-bit, or set "
    "DPOSettings(load_in_4bit=False) to silence this message."
)


@dataclass
class DPOSettings:
    """Settings of one QLoRA DPO run (defaults: the official β, schedule and LoRA dropout with a toy-sized step;
    ``toy_dpo_settings()`` is the recipe calibrated for the toy world, a preset's ``dpo_settings()`` for its model).

    Args:
        beta (float, defaults to 0.1): DPO temperature; strength of the pull towards the reference (official 0.1).
        sft_weight (float, defaults to 0.0): weight of an added NLL (SFT) loss on the chosen responses; the
            official code has this term with weight 0. A positive weight keeps a small model from drifting into
            degenerate text while DPO pushes rejected responses down.
        learning_rate (float, defaults to 3e-4): AdamW learning rate of the LoRA weights (official LoRA run: 1e-5
            on a 7B model; a 0.8M-parameter toy needs a far larger step).
        epochs (float, defaults to 2.0): passes over the pairs (official: 4 per round).
        max_steps (int, defaults to -1): if > 0, stop after this many optimiser steps (overrides ``epochs``).
        batch_size (int, defaults to 8): pairs per device step (each pair is two sequences).
        grad_accum (int, defaults to 1): gradient accumulation steps.
        lora_r (int, defaults to 16): LoRA rank (official LoRA run: 64).
        lora_alpha (int, defaults to 16): LoRA scaling numerator, scale = alpha / r (official: 16).
        lora_dropout (float, defaults to 0.05): dropout on the LoRA input (official 0.05); TRL turns every
            dropout off while ``disable_dropout`` is True.
        target_modules (list[str] | str | None, defaults to None): module names (or a regex) that get adapters;
            None means every linear layer of the language-model decoder (see ``language_model_linear_layers``).
        load_in_4bit (bool, defaults to True): quantise the base to 4-bit NF4; falls back to full precision with
            a message when bitsandbytes cannot run.
        require_4bit (bool, defaults to False): raise ``QuantizationUnavailableError`` instead of falling back.
        double_quant (bool, defaults to True): quantise the quantisation constants too (QLoRA).
        seed (int, defaults to 0): seed of the adapters' initialisation and of the data order.
        max_length (int | None, defaults to 512): truncate prompt+response sequences to this many tokens.
        logging_steps (int, defaults to 5): optimiser steps between two entries of the log history.
        lr_scheduler_type (str, defaults to "cosine"): learning-rate schedule (official: cosine).
        warmup_ratio (float, defaults to 0.05): share of the steps used for warm-up (official 0.05).
        gradient_checkpointing (bool, defaults to False): recompute activations (saves memory on real models).
        fp32_adapters (bool | None, defaults to None): keep LoRA weights in float32 on a 4-bit base; None means
            yes on CPU, no on GPU (TRL casts them to bf16, where AdamW steps below ~1e-3 round away).
        disable_dropout (bool, defaults to True): TRL's default; makes policy and reference deterministic.
        progress (bool, defaults to True): show the trainer's tqdm bar.
    """

    beta: float = DPO_BETA
    sft_weight: float = 0.0
    learning_rate: float = 3e-4
    epochs: float = 2.0
    max_steps: int = -1
    batch_size: int = 8
    grad_accum: int = 1
    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] | str | None = None
    load_in_4bit: bool = True
    require_4bit: bool = False
    double_quant: bool = True
    seed: int = 0
    max_length: int | None = 512
    logging_steps: int = 5
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.05
    gradient_checkpointing: bool = False
    fp32_adapters: bool | None = None
    disable_dropout: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        check_finite(self)
        if self.beta <= 0:
            raise ConfigError(f"beta must be > 0 (official 0.1), got {self.beta}")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.sft_weight < 0:
            raise ConfigError(f"sft_weight must be >= 0, got {self.sft_weight}")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ConfigError("set epochs > 0 or max_steps > 0, otherwise nothing is trained")
        for name in ("batch_size", "grad_accum", "lora_r", "lora_alpha", "logging_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_length is not None and self.max_length < 8:
            raise ConfigError(f"max_length must be None or >= 8, got {self.max_length}")
        if self.require_4bit and not self.load_in_4bit:
            raise ConfigError("require_4bit=True needs load_in_4bit=True")

    @classmethod
    def from_preset(cls, preset: str | ModelPreset, **overrides: Any) -> "DPOSettings":
        """The settings a preset recommends (β, learning rate, epochs, SFT weight, LoRA shape), updated with ``overrides``."""
        preset = get_preset(preset) if isinstance(preset, str) else preset
        return cls(**{**preset.dpo_overrides(), **overrides})


def toy_dpo_settings(**overrides: Any) -> DPOSettings:
    """The DPO settings calibrated for the toy world and used by ``rlaifv demo``: the "toy-policy" preset's
    (lr 1e-3, 2 epochs, SFT weight 1.0, LoRA r = alpha = 16).

    A larger step than the official LoRA run (1e-5 on a 7B model) and an SFT term on the chosen
    responses (official weight 0), which kept the 1M-parameter policy from drifting into repeated,
    degenerate sentences (README, Results). ``overrides`` replace any field.
    """
    return DPOSettings.from_preset("toy-policy", **overrides)


@dataclass
class DPOResult:
    """What a DPO run produced: adapters on disk, the trainer's log history and the size report."""

    output_dir: Path
    adapter_dir: Path
    log_history: list[dict]
    quantized: bool
    trainable_params: int
    total_params: int
    memory: dict[str, float]
    train_runtime_s: float
    settings: dict = field(default_factory=dict)
    world_size: int = 1  # processes that trained together (DDP/DeepSpeed/FSDP under a launch); one wrote the files
    global_batch_size: int = 0  # pairs per optimiser step over all processes: batch_size x grad_accum x world_size
    model: Any = field(default=None, repr=False)  # the trained PeftModel (in memory only)

    def summary(self) -> dict:
        """A JSON-ready dict of everything but the model."""
        d = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "model"}
        d["output_dir"], d["adapter_dir"] = str(self.output_dir), str(self.adapter_dir)
        return d


def _as_dataset(pairs: Dataset | Sequence[PreferencePair]) -> Dataset:
    """The pairs as a Dataset holding exactly TRL's four columns; NoPairsError when there are none."""
    if len(pairs) == 0:
        raise NoPairsError(
            "no preference pairs to train on: every prompt's candidates tied (same score) or had no claims. "
            "Sample more candidates per prompt (SamplingConfig.n), use more prompts, or raise the temperature "
            "so that candidates differ."
        )
    ds = pairs if isinstance(pairs, Dataset) else to_trl_dataset(list(pairs))
    missing = [c for c in TRL_COLUMNS if c not in ds.column_names]
    if missing:
        raise DatasetSchemaError(
            f"the pair dataset lacks column(s) {missing}; TRL's vision preference format needs {list(TRL_COLUMNS)}. "
            "Build it with rlaifv_lib.pairs.to_trl_dataset."
        )
    return ds.select_columns(list(TRL_COLUMNS))


def _device_setup() -> tuple[bool, torch.dtype]:
    """(use_gpu, compute dtype): bf16 on a GPU that has it, float32 on CPU."""
    if torch.cuda.is_available():
        return True, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return False, torch.float32


def _resolve(path: str | os.PathLike) -> str | os.PathLike:
    return resolve_model(path)


def _load_base(source: str | os.PathLike | PreTrainedModel, quantize: bool, settings: DPOSettings) -> PreTrainedModel:
    """The base model to adapt: 4-bit NF4 from disk, or a full-precision (copied) model."""
    _, dtype = _device_setup()
    if isinstance(source, torch.nn.Module) and not quantize:
        return copy.deepcopy(source)  # get_peft_model edits modules in place: keep the caller's model clean
    if isinstance(source, torch.nn.Module):  # quantisation happens while loading, so round-trip through disk
        with tempfile.TemporaryDirectory(prefix="rlaifv-base-") as tmp:
            with quiet_loading():
                source.save_pretrained(tmp)
            base = _load_base(tmp, quantize, settings)
        base.config._name_or_path = source.config._name_or_path  # not the deleted temporary folder
        return base
    path = _resolve(source)
    check_model_folder(path, tokenizer=False)
    try:
        config = AutoConfig.from_pretrained(path) if quantize else None
        kwargs = load_kwargs(LoadOptions(load_in_4bit=quantize, double_quant=settings.double_quant, dtype=dtype), config, training=True)
        with quiet_loading():
            return AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    except OSError as e:
        raise ModelLoadError(
            f"cannot load the DPO base model {source!r}: {e}. Give a folder with config.json and *.safetensors "
            "(e.g. the merged model of the previous round) or a toy name."
        ) from None


def _lora_config(model: PreTrainedModel, settings: DPOSettings) -> Any:
    """A PEFT LoraConfig for the decoder's linear layers (or ``settings.target_modules``)."""
    from peft import LoraConfig

    targets = settings.target_modules or language_model_linear_layers(model)
    if not targets:
        raise ConfigError(
            f"found no linear layer in the language model of {type(model).__name__}; set "
            "DPOSettings(target_modules=[...]) to the names of the layers that should get adapters."
        )
    return LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )


def _dpo_config(settings: DPOSettings, output_dir: Path) -> Any:
    """TRL DPOConfig: sigmoid loss, no hub, no reporting, no automatic checkpoints."""
    from trl import DPOConfig

    use_gpu, dtype = _device_setup()
    return DPOConfig(
        output_dir=str(output_dir),
        beta=settings.beta,
        loss_type=["sigmoid", "sft"] if settings.sft_weight > 0 else ["sigmoid"],
        loss_weights=[1.0, settings.sft_weight] if settings.sft_weight > 0 else None,
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        lr_scheduler_type=settings.lr_scheduler_type,
        warmup_steps=settings.warmup_ratio,  # a float < 1 is a ratio in transformers 5
        max_length=settings.max_length,
        logging_steps=settings.logging_steps,
        activation_checkpointing=settings.gradient_checkpointing,  # transformers 5 name of gradient_checkpointing
        disable_dropout=settings.disable_dropout,
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=use_gpu and dtype == torch.bfloat16,
        fp16=False,
        use_cpu=not use_gpu,
        report_to="none",
        push_to_hub=False,
        save_strategy="no",
        disable_tqdm=not settings.progress,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # under DDP: every LoRA weight gets a gradient each step
    )


def _stage_progress() -> Any:
    """transformers' training bar, named after its stage and without a line of metrics per logging step
    (those go to ``DPOResult.log_history`` and ``dpo_log.json``)."""
    from tqdm.auto import tqdm
    from transformers.trainer_callback import ProgressCallback

    class _DPOProgress(ProgressCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                self.training_bar = tqdm(total=state.max_steps, dynamic_ncols=True, desc="DPO training", unit="step")
            self.current_step = 0

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            return None

    return _DPOProgress()


@contextlib.contextmanager
def _quiet_upstream_deprecation() -> Iterator[None]:
    """Hide one upstream FutureWarning: TRL 1.16 and PEFT read ``is_gradient_checkpointing``, which transformers 5 renamed."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def build_dpo_trainer(model: str | os.PathLike | PreTrainedModel, processor: Any, pairs: Dataset | Sequence[PreferencePair], settings: DPOSettings | None = None, output_dir: str | os.PathLike = "dpo_out") -> Any:
    """A ready TRL ``DPOTrainer``: 4-bit (or fallback) base + LoRA via ``peft_config``, reference = adapters off."""
    from trl import DPOTrainer

    settings = settings or DPOSettings()
    dataset = _as_dataset(pairs)
    quantize = settings.load_in_4bit
    if quantize and not models.bnb_available():
        if settings.require_4bit:
            raise QuantizationUnavailableError(
                "4-bit NF4 training was required (require_4bit=True) but bitsandbytes cannot run on this device. "
                "Install a bitsandbytes build that supports it, or set require_4bit=False to allow full-precision LoRA."
            )
        warnings.warn(FALLBACK_MESSAGE, RuntimeWarning, stacklevel=2)
        print(f"[rlaifv dpo] {FALLBACK_MESSAGE}")
        quantize = False
    if processor is None:
        if isinstance(model, torch.nn.Module):
            raise ConfigError("pass the processor when the model is an object (it cannot be loaded from a path).")
        processor = load_processor(model)
    base = _load_base(model, quantize, settings)
    with _quiet_upstream_deprecation():
        trainer = DPOTrainer(
            model=base,
            ref_model=None,
            args=_dpo_config(settings, Path(output_dir)),
            train_dataset=dataset,
            processing_class=processor,
            peft_config=_lora_config(base, settings),
        )
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)  # its bar prints every log; without a bar, PrinterCallback prints them
    trainer.remove_callback(PrinterCallback)
    if settings.progress:
        trainer.add_callback(_stage_progress())
    use_gpu, _ = _device_setup()
    if quantize and (settings.fp32_adapters if settings.fp32_adapters is not None else not use_gpu):
        for p in trainer.model.parameters():  # undo TRL's bf16 cast (the optimiser is built later, in train())
            if p.requires_grad:
                p.data = p.data.float()
    return trainer


def train_dpo(model: str | os.PathLike | PreTrainedModel, processor: Any, pairs: Dataset | Sequence[PreferencePair], settings: DPOSettings | None = None, output_dir: str | os.PathLike = "dpo_out") -> DPOResult:
    """Train LoRA adapters with DPO on ``pairs``; save them and ``dpo_log.json`` under ``output_dir``.

    Args:
        model: a path, toy name or model object for the policy at the start of this round (a plain model:
            merge the previous round's adapters first with :func:`merge_adapters`).
        processor: its processor (loaded from ``model`` when None and ``model`` is a path).
        pairs: a TRL-format ``datasets.Dataset`` or a list of ``PreferencePair`` with image and instruction.
        settings: a ``DPOSettings``; defaults when None.
        output_dir: folder for ``adapter/`` and ``dpo_log.json``.
    """
    settings = settings or DPOSettings()
    output_dir = Path(output_dir)
    trainer = build_dpo_trainer(model, processor, pairs, settings, output_dir)
    start = time.perf_counter()
    with _quiet_upstream_deprecation():
        trainer.train()
    runtime = time.perf_counter() - start
    peft_model = trainer.model.eval()
    quantized = bool(getattr(peft_model, "is_loaded_in_4bit", False) or getattr(peft_model.get_base_model(), "is_loaded_in_4bit", False))
    adapter_dir = output_dir / "adapter"
    _require_finite(peft_model, f"DPO training made LoRA adapters with non-finite weights, so nothing was saved to {output_dir}", only_trainable=True)
    if _sharded(trainer):  # ZeRO-3 / FSDP: every process holds a shard; the trainer gathers them, its rank 0 writes
        trainer.save_model(str(adapter_dir))
    elif trainer.is_world_process_zero():  # one process (or DDP / ZeRO-2 under a launch, whole copies): one writes
        peft_model.save_pretrained(str(adapter_dir), save_embedding_layers=False)
        trainer.processing_class.save_pretrained(str(adapter_dir))
    trainable, total = count_parameters(peft_model)
    memory = weights_memory(total, trainable, load_in_4bit=quantized, weight_bytes=4.0)
    memory["measured_weights_gib"] = peft_model.get_memory_footprint() / 1024**3
    result = DPOResult(
        output_dir=output_dir,
        adapter_dir=adapter_dir,
        log_history=list(trainer.state.log_history),
        quantized=quantized,
        trainable_params=trainable,
        total_params=total,
        memory=memory,
        train_runtime_s=runtime,
        settings=asdict(settings),
        world_size=trainer.args.world_size,
        global_batch_size=settings.batch_size * settings.grad_accum * trainer.args.world_size,
        model=peft_model,
    )
    if trainer.is_world_process_zero():
        write_json(output_dir / "dpo_log.json", result.summary())
    trainer.accelerator.wait_for_everyone()  # the other processes return once the files exist
    return result


def _sharded(trainer: Any) -> bool:
    """Whether the trained weights are split over the processes (FSDP, or DeepSpeed ZeRO stage 3)."""
    if getattr(trainer, "is_fsdp_enabled", False):
        return True
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None) if getattr(trainer, "is_deepspeed_enabled", False) else None
    return plugin is not None and plugin.zero_stage == 3


def _require_finite(model: torch.nn.Module, what: str, only_trainable: bool = False) -> None:
    """``NonFiniteWeightsError`` (message ``what`` + the tensors + the fix) when a weight is NaN or infinite."""
    bad = [n for n, p in model.named_parameters() if (p.requires_grad or not only_trainable) and p.is_floating_point() and not bool(torch.isfinite(p).all())]
    if bad:
        raise NonFiniteWeightsError(
            f"{what} ({len(bad)} tensors hold NaN or infinity, e.g. {bad[0]}); earlier files are kept. Training "
            "diverged: lower the learning rate or beta (DPOSettings), and check the pairs."
        )


def _load_processor(adapter_dir: str | os.PathLike, base_path: str | os.PathLike) -> Any:
    """The processor saved next to the adapters, else the base model's (through ``models.load_processor``)."""
    try:
        return load_processor(adapter_dir)
    except (OSError, ValueError):
        return load_processor(base_path)


def merge_adapters(base_path: str | os.PathLike, adapter_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Fold LoRA adapters into a full-precision copy of the base and save a plain model + processor.

    The base is loaded in float32 (never 4-bit: merging into quantised weights re-quantises them and changes
    the model), so the next round can start from ``out_dir`` with a fresh ``peft_config``.
    """
    from peft import PeftModel

    out_dir = Path(out_dir)
    if not (Path(adapter_dir) / "adapter_model.safetensors").is_file():  # PEFT would fall back to a pickled .bin
        raise ModelLoadError(
            f"{adapter_dir} holds no adapter_model.safetensors; adapters load from safetensors only (a pickled "
            "adapter_model.bin can run arbitrary code). Re-train them, or convert them on a machine you trust."
        )
    check_model_folder(_resolve(base_path), tokenizer=False)
    try:
        with quiet_loading():
            base = AutoModelForImageTextToText.from_pretrained(_resolve(base_path), dtype=torch.float32, use_safetensors=True)
        processor = _load_processor(adapter_dir, base_path)
        with _quiet_upstream_deprecation():
            merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    except (OSError, ValueError) as e:
        raise ModelLoadError(
            f"cannot merge adapters {adapter_dir!s} into base {base_path!s}: {e}. Check that the adapters were "
            "trained on this base (same architecture and sizes)."
        ) from None
    _require_finite(merged, f"merging {adapter_dir} into {base_path} gives non-finite weights, so nothing was saved to {out_dir}")
    with atomic_directory(out_dir) as tmp:  # a half-written merge is never taken for a finished one
        with quiet_loading():
            merged.save_pretrained(str(tmp))
        processor.save_pretrained(str(tmp))
    return out_dir
