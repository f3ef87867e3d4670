"""Recipe section of training (``train:``): loop, engine, optimiser, LoRA, EMA, checkpoints, validation.

Defaults are the paper's Wan2.1-1.3B setting (paper.md section 5.4): 5000 steps, 6 samples per GPU
= 2 per stage, full-parameter AdamW at 1e-5. Rules that need other sections (``stage_split`` against
``pyramid.stages``) are checked by ``train_problems`` before any weight loads.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator
from pydantic_core import PydanticCustomError

PROCESSES = ("pyramidal", "multires")     # the training process: pyramidal flow matching | ordinary, per stage

MAX_STEPS, MAX_BATCH = 10_000_000, 65_536  # caps: typos fail at validation, not after allocating
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2")


def _fail(message: str) -> PydanticCustomError:
    """A validation error whose text is exactly ``message``."""
    return PydanticCustomError("pyrawan", "{message}", {"message": message})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


Beta = Annotated[float, Field(ge=0, lt=1)]   # torch's AdamW refuses 1.0 (only after every model has loaded)


class Optimizer(_Section):
    """AdamW and its learning-rate schedule (linear warm-up, then cosine or constant)."""

    lr: float = Field(1e-5, gt=0, le=1.0, description="Peak learning rate (1e-5 full finetune; LoRA usually 1e-4).")
    betas: tuple[Beta, Beta] = Field((0.9, 0.999), description="AdamW betas, each in [0, 1).")
    eps: float = Field(1e-8, gt=0, le=1.0, description="AdamW epsilon.")
    weight_decay: float = Field(0.01, ge=0, le=10.0, description="AdamW decoupled weight decay.")
    warmup_steps: int = Field(250, ge=0, le=MAX_STEPS, description="Linear warm-up from 0 to lr over this many steps.")
    schedule: Literal["cosine", "constant"] = Field("cosine", description="After warm-up: cosine decay to "
                                                    "min_lr_ratio * lr at the last step, or constant.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Cosine floor as a fraction of lr.")


class Lora(_Section):
    """LoRA adapters (peft) instead of full finetuning."""

    enabled: StrictBool = Field(False, description="Train LoRA adapters only; the base weights stay frozen.")
    rank: int = Field(32, ge=1, le=4096, description="Adapter rank r.")
    alpha: float = Field(32.0, gt=0, le=1e6, description="Adapter scale numerator (scale = alpha / rank).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: tuple[str, ...] = Field(LORA_TARGETS, min_length=1, max_length=64, description=(
        "Module name suffixes that get adapters (diffusers names: attn1/attn2 to_q,to_k,to_v,to_out.0 and "
        "ffn.net.0.proj, ffn.net.2)."))

    @model_validator(mode="after")
    def _targets_exist(self) -> "Lora":
        """peft fails only after the model has loaded when a target names no layer."""
        if not self.enabled:
            return self
        from pyrawan.models.model_files import unknown_lora_targets

        unknown = unknown_lora_targets(self.target_modules)
        if unknown:
            raise _fail(f"train.lora.target_modules names no layer of a Wan2.1 transformer: {unknown}; use module "
                        f"name suffixes such as {', '.join(LORA_TARGETS)}")
        return self


class Ema(_Section):
    """Exponential moving average of the trained weights (exported instead of the raw weights)."""

    enabled: StrictBool = Field(False, description="Keep an fp32 EMA of the trainable weights; the output model holds it.")
    decay: float = Field(0.999, gt=0, lt=1, description="EMA decay per optimiser step (0.999 ~ last 1000 steps).")
    start_step: int = Field(0, ge=0, le=MAX_STEPS, description="Copy the weights (no averaging) until this step.")


class Checkpoint(_Section):
    """Resumable training state, written atomically under OUT.run/checkpoints/."""

    every: int = Field(500, ge=0, le=MAX_STEPS, description="Write a checkpoint every N optimiser steps (0 = never; "
                                                "the final model is still written).")
    keep: int = Field(2, ge=1, le=1000, description="Keep the last k complete checkpoints.")


class Validation(_Section):
    """Pyramidal flow-matching loss per stage on held-out samples with fixed noise and levels."""

    every: int = Field(250, ge=0, le=MAX_STEPS, description="Validate every N steps, at step 0 and at the end (0 = never).")
    holdout: int = Field(8, ge=0, le=1_000_000, description="The last N items of the data are held out of training.")
    levels: tuple[float, ...] = Field((0.1, 0.5, 0.9), min_length=1, max_length=64, description=(
        "Local levels rho in [0, 1] at which every held-out sample is noised (1 = noisy end of the stage)."))
    batch_size: int = Field(6, ge=1, le=MAX_BATCH, description="Samples per validation forward.")


class Train(_Section):
    """How to finetune: steps, batch, engine, optimiser, LoRA, EMA, checkpoints, validation."""

    steps: int = Field(5000, ge=1, le=MAX_STEPS, description="Optimiser steps.")
    batch_size: int = Field(6, ge=1, le=MAX_BATCH, description="Samples per GPU per micro-step, spread over the stages "
                                                 "(6 = 2 per stage for 3 stages, the paper's setting).")
    stage_split: tuple[int, ...] | None = Field(None, max_length=8, description=(
        "Samples per stage, coarsest first, summing to batch_size (e.g. [1, 2, 1], Pyramid Flow's mix); "
        "null = uniform."))
    grad_accum: int = Field(1, ge=1, le=MAX_BATCH, description="Micro-steps per optimiser step (global batch = "
                                                 "batch_size x grad_accum x GPUs).")
    engine: Literal["auto", "single", "ddp", "deepspeed"] = Field("auto", description=(
        "auto = ddp under torchrun (WORLD_SIZE > 1), else single; deepspeed = ZeRO (any launcher)."))
    zero_stage: Literal[1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage (engine: deepspeed).")
    gradient_checkpointing: StrictBool = Field(True, description="Recompute block activations in backward "
                                                           "(about 15x less activation memory at 1.3B).")
    max_grad_norm: float = Field(1.0, ge=0, le=1e6, description="Clip the global gradient norm (0 = no clipping).")
    cfg_dropout: float = Field(0.1, ge=0, le=1, description="Probability of replacing a caption by the "
                                                            "empty-prompt embedding (for guidance).")
    align_weight: float = Field(0.0, ge=0, le=1e6, description=(
        "Weight of the alignment loss: MSE between the student's and the frozen base model's velocity on "
        "the same noisy input (docs/finetune.md); 0 = off."))
    align_form: Literal["same-input", "full-resolution"] = Field("full-resolution", description=(
        "Form of the alignment loss (the paper's L_dist, form not given): full-resolution = the base at full "
        "resolution on the stage sample jumped up, its clean estimate brought down to the stage, against the "
        "student's (measured best on the toy); same-input = the base's velocity on the student's own stage input "
        "(docs/finetune.md)."))
    process: Literal[PROCESSES] = Field("pyramidal", description=(
        "pyramidal = pyramidal flow matching over the pyramid's stages; multires = ordinary flow matching on the "
        "clean latents of every stage's resolution (the DMD-OT teacher; the result is a plain one-stage model)."))
    level_shift: float = Field(1.0, gt=0, le=100.0, description=(
        "Where training levels fall inside each stage: rho drawn uniform, then warped like the sampler's shift, "
        "k rho / (1 + (k - 1) rho); 1 = uniform, k > 1 puts more samples at the noisy end (our option; SD3 and "
        "Wan train on shifted or logit-normal levels)."))
    from_scratch: StrictBool = Field(False, description="Re-initialise the transformer randomly (seeded) instead "
                                                  "of starting from the base weights (teacher pretraining).")
    on_nonfinite: Literal["stop", "skip"] = Field("stop", description=(
        "A non-finite loss or gradient: stop (keep the last good checkpoint) or skip that optimiser step."))
    optimizer: Optimizer = Optimizer()
    lora: Lora = Lora()
    ema: Ema = Ema()
    checkpoint: Checkpoint = Checkpoint()
    validation: Validation = Validation()

    @model_validator(mode="after")
    def _rules(self) -> "Train":
        """Combinations that cannot run; each message names the keys and the fix."""
        deepspeed3 = self.engine == "deepspeed" and self.zero_stage == 3
        if self.stage_split is not None and sum(self.stage_split) != self.batch_size:
            raise _fail(f"train.stage_split = {list(self.stage_split)} sums to {sum(self.stage_split)} but "
                             f"train.batch_size = {self.batch_size}; make them agree or set stage_split: null")
        if deepspeed3 and self.ema.enabled:
            raise _fail("train.ema.enabled = true is not supported with ZeRO-3 (the weights are sharded); "
                             "use train.zero_stage: 2 or train.ema.enabled: false")
        if deepspeed3 and self.on_nonfinite == "skip":
            raise _fail("train.on_nonfinite = skip is not supported with ZeRO-3 (DeepSpeed applies the step "
                             "before the gradient can be checked); use train.on_nonfinite: stop or zero_stage: 2")
        if any(not 0.0 <= rho <= 1.0 for rho in self.validation.levels):
            raise _fail(f"train.validation.levels = {list(self.validation.levels)}: every level must lie in [0, 1]")
        if self.align_form == "full-resolution" and self.align_weight > 0 and self.process == "multires":
            raise _fail("train.align_form = full-resolution aligns pyramidal stage samples, but train.process = "
                        "multires trains ordinary samples; use align_form: same-input (or process: pyramidal)")
        return self

    def split(self, num_stages: int) -> tuple[int, ...]:
        """Samples per stage per micro-step, coarsest first (``stage_split`` or uniform)."""
        if self.stage_split is not None:
            return tuple(self.stage_split)
        base, extra = divmod(self.batch_size, num_stages)
        return tuple(base + (1 if i < extra else 0) for i in range(num_stages))


def train_problems(train: Train, num_stages: int) -> list[tuple[str, str]]:
    """``(key, message)`` for rules that involve the pyramid; empty when the section can run."""
    problems = []
    if train.stage_split is not None and len(train.stage_split) != num_stages:
        problems.append(("train.stage_split", f"train.stage_split = {list(train.stage_split)} has "
                         f"{len(train.stage_split)} entries but pyramid.stages = {num_stages}; give one count per "
                         f"stage (coarsest first) or null for a uniform split"))
    if train.stage_split is None and train.batch_size < num_stages:
        problems.append(("train.batch_size", f"train.batch_size = {train.batch_size} is smaller than pyramid.stages "
                         f"= {num_stages}, so some stage would never be trained; use at least {num_stages}"))
    return problems
