"""Recipe section of step distillation (``distill:``): method, variant, student schedule, real and fake score.

The generator (student) is trained with the recipe's ``train:`` section (steps = iterations,
optimizer, LoRA, EMA, engine, checkpoints); the fake score has its own optimiser here. Defaults
where the paper is silent come from DMD2 / Self-Forcing / FastVideo (``../reference/anchors.md``
section 4) and are marked as such in docs/distill.md; the paper's own numbers: ``teach_weight``
0.01, schedule 2-2-1, LoRA for PT and PT*.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator
from pydantic_core import PydanticCustomError

from pyrawan.pyramid.schedule import schedule_text
from pyrawan.train.config import Optimizer

# Self-Forcing's DMD optimiser for Wan (anchors.md 4.5): AdamW lr 2e-6, betas (0, 0.999), wd 0.01, constant.
DMD_OPTIMIZER = Optimizer(lr=2e-6, betas=(0.0, 0.999), weight_decay=0.01, warmup_steps=0, schedule="constant")


def _fail(message: str) -> PydanticCustomError:
    return PydanticCustomError("pyrawan", "{message}", {"message": message})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FakeScore(_Section):
    """The fake-score network: initialised from the teacher, trained every iteration with flow matching."""

    optimizer: Optimizer = Field(DMD_OPTIMIZER, description="AdamW of the fake score (Self-Forcing: as the generator's).")
    max_grad_norm: float = Field(10.0, ge=0, description="Clip the fake score's gradient norm (Self-Forcing: 10).")


class Adversarial(_Section):
    """Adversarial distillation (``method: adv``): heads on a frozen diffusion backbone's features, hinge loss.

    The paper (7.4): frozen backbone + light spatial and temporal convolutional branches, hinge loss,
    lambda_adv = 1, lambda_rec = 2. Taps, channels, re-noising, R1 and the optimiser are our choices after
    LADD / FastGen (anchors.md section 5).
    """

    backbone: Literal["original", "pyramidal"] = Field("pyramidal", description=(
        "original (Adv-OD): distill.teacher, the plain model, ordinary re-noising; pyramidal (Adv-PD): the base "
        "pyramidal model, pyramidal re-noising."))
    taps: tuple[float, ...] = Field((0.45, 0.70, 0.97), min_length=1, max_length=8, description=(
        "Tapped blocks as fractions of the depth (LADD/FastGen: about 45/70/97 %); one head per tap."))
    channels: int = Field(64, ge=1, le=4096, description="Channels of each head's convolutional branches.")
    renoise: StrictBool = Field(True, description="Re-noise real and generated latents to the same level before the backbone.")
    real: Literal["data", "teacher"] = Field("data", description=(
        "Real samples: data = the latent cache's clean latents of the same captions; teacher = the teacher pairs."))
    lambda_adv: float = Field(1.0, ge=0, le=100.0, description="Weight of the generator's adversarial loss (paper: 1).")
    lambda_rec: float = Field(2.0, ge=0, le=100.0, description=(
        "Weight of L_rec (paper: 2): MSE to the teacher's sample from the same noise, at the exit step's stage."))
    r1_weight: float = Field(0.0, ge=0, le=100.0, description="Approximate R1 weight (logit change under a small perturbation).")
    r1_sigma: float = Field(0.01, gt=0, le=1.0, description="Perturbation scale of the approximate R1.")
    optimizer: Optimizer = Field(Optimizer(lr=4e-6, betas=(0.0, 0.999), weight_decay=0.01, warmup_steps=0,
                                           schedule="constant"), description="AdamW of the heads (FastGen: 2x the generator's lr).")
    max_grad_norm: float = Field(10.0, ge=0, description="Clip the heads' gradient norm.")


class Gan(_Section):
    """An optional GAN term added to DMD (``method: dmd``), as DMD2 (Yin et al. 2024, tianweiy/DMD2) adds one.

    Heads (``train.adversarial.Heads``: taps, channels) on the fake score's hidden states classify real
    latents (the latent cache's latents of the same captions at the exit step's stage) against the
    student's samples, both re-noised to the same level with the same noise. The fake score's loss gets
    ``critic_weight * classification loss`` (it trains the heads and the fake score's features, as DMD2's
    guidance loss does); the generator's objective gets ``weight * GAN loss`` through the frozen fake
    score and heads. Off by default (``weight: 0``): the paper's DMD rows use no GAN term.
    """

    weight: float = Field(0.0, ge=0, le=100.0, description=(
        "Weight of the generator's GAN loss; 0 = off (the paper). DMD2 uses 5e-3 (gen_cls_loss_weight, SDXL)."))
    critic_weight: float = Field(1e-2, ge=0, le=100.0, description=(
        "Weight of the fake score's classification loss, real vs generated (DMD2: guidance_cls_loss_weight 1e-2); "
        "used when weight > 0."))
    loss: Literal["softplus", "hinge"] = Field("softplus", description=(
        "softplus: DMD2's non-saturating logistic loss (critic softplus(-D(real)) + softplus(D(fake)), generator "
        "softplus(-D(fake))); hinge: as method adv (critic max(0, 1 - D(real)) + max(0, 1 + D(fake)), "
        "generator -D(fake))."))
    taps: tuple[float, ...] = Field((0.5,), min_length=1, max_length=8, description=(
        "Tapped blocks of the fake score as fractions of its depth, one head each (DMD2 classifies the UNet's "
        "middle-block features: 0.5; our reading for a DiT)."))
    channels: int = Field(64, ge=1, le=4096, description=(
        "Channels of each head's convolutional branches (as distill.adv)."))
    optimizer: Optimizer | None = Field(None, description=(
        "AdamW of the heads; null = distill.fake_score.optimizer (DMD2 trains the head with the fake score's "
        "optimiser). A section here replaces it as a whole."))


class DecoderDistill(_Section):
    """A tiny decoder distilled from the base model's VAE (``method: decoder``; docs/decoder.md).

    The student is a TAEHV-style conv-only causal decoder (``pyrawan.models.tiny_decoder``); its target
    is the VAE's decode of the same latents (the latent cache's, plus ``variants - 1`` perturbed copies),
    computed once per run into the run folder. Loss in pixels: L1 + ``gradient_weight`` x the L1 error
    of spatial and temporal finite differences (edges and motion; no pretrained network needed).
    """

    channels: tuple[int, int, int, int] = Field((256, 128, 64, 64), description=(
        "Widths of the decoder's three levels and of its last convolution (TAEHV taew2_1: 256, 128, 64, 64)."))
    time_upscale: tuple[bool, bool, bool] = Field((False, True, True), description=(
        "Which of the three levels doubles the frames (TAEHV: the last two; their product must be the VAE's "
        "temporal factor)."))
    clamp: float = Field(3.0, gt=0, le=1000.0, description=(
        "Bound of the decoder's soft clamp of the raw latents, clamp * tanh(x / clamp) (taew2_1: 3). Set it "
        "near the largest raw latent values of the base's VAE (the toy's reach 8-14: 12)."))
    gradient_weight: float = Field(0.5, ge=0, le=100.0, description=(
        "Weight of the L1 error of finite differences in x, y and time (0 = plain L1)."))
    foreground_weight: float = Field(0.0, ge=0, le=1000.0, description=(
        "Extra loss weight of pixels that differ from their video's temporal median (moving objects): "
        "1 + foreground_weight there; 0 = every pixel alike."))
    variants: int = Field(2, ge=1, le=16, description=(
        "Training latents per cache item: the clean one and variants - 1 copies with Gaussian noise added."))
    perturb: float = Field(0.2, ge=0, le=2.0, description="Std of the noise of the perturbed copies (model-space latents).")
    target_batch: int = Field(8, ge=1, le=1024, description="Latents per VAE decode when the targets are computed.")


class Distill(_Section):
    """How to distill: method, DMD variant, the student's few-step schedule, the real score and its guidance."""

    method: Literal["dmd", "adv", "decoder"] = Field("dmd", description=(
        "dmd (distribution matching distillation) | adv (adversarial distillation; see distill.adv) | "
        "decoder (a tiny video decoder from the base's VAE; see distill.decoder)."))
    variant: Literal["ot", "pt", "ptstar", "baseline"] = Field("ptstar", description=(
        "ot: teacher = the original model finetuned at every stage resolution, ordinary re-noising; "
        "pt: teacher = the pyramidal model, pyramidal re-noising, closed-form clean estimate; "
        "ptstar: as pt with the simplified estimate (the paper's final recipe); "
        "baseline: one-stage Wan-DMD (schedule 0-0-N)."))
    teacher: str | None = Field(None, description="The real-score model (artifact, preset, hub id); null = base.")
    schedule: str = Field("2-2-1", description="Student steps per stage, coarsest first (the paper: 2-2-1).")
    levels: tuple[tuple[float, ...], ...] | None = Field(None, description=(
        "Local levels rho of each student step, per stage (coarsest first), decreasing, starting at 1.0; "
        "null = evenly spaced from each stage's noisy end (2-2-1 -> [[1, 0.5], [1, 0.5], [1]])."))
    guidance: float = Field(4.0, ge=1.0, le=50.0, description=(
        "Classifier-free guidance of the real score, standard form uncond + w (cond - uncond) "
        "(Self-Forcing's 3.0 in its cond + w (cond - uncond) form equals 4.0 here)."))
    generator_every: int = Field(5, ge=1, le=100, description="Fake-score steps per generator step (DMD2/Self-Forcing: 5).")
    score_levels: tuple[float, float] = Field((0.02, 0.98), description=(
        "Range of the re-noising level: with score_span stage, the local level rho inside the exit step's stage "
        "(clamped away from the stage ends); with global, the global sigma over the whole process (Self-Forcing "
        "clamps t to [0.02, 0.98])."))
    score_span: Literal["stage", "global"] = Field("stage", description=(
        "Where the DMD gradient and the fake score re-noise the student's estimate: stage = inside the exit "
        "step's stage, rho in score_levels; global = over the whole process as DMD2 and Self-Forcing do: a stage "
        "drawn with its share of the global range score_levels (global sigma), the estimate moved to its grid "
        "(docs/distill.md)."))
    dmd_form: Literal["x0", "eps"] = Field("x0", description=(
        "Form of the DMD gradient: x0 = DMD2's clean-estimate difference; eps = the score (noise-estimate) "
        "difference built from the variant's noise estimate (PT: the pyramidal closed form; PT*: the ordinary "
        "one). Both are the same for OT, PT* and the baseline; they differ for PT (docs/distill.md)."))
    teach_weight: float = Field(0.01, ge=0, le=100.0, description=(
        "Weight of L_teach (the paper: 0.01): MSE between the student's exit-step estimate and the teacher's "
        "multi-step sample from the same (coupled) noise, brought down to that stage; 0 = off."))
    teach_pairs: int = Field(16, ge=1, le=100000, description="Teacher samples computed once (fixed noise) for L_teach.")
    teach_schedule: str | None = Field(None, description="The teacher's sampler for those samples; null = its default.")
    fake_score: FakeScore = FakeScore()
    adv: Adversarial = Adversarial()
    gan: Gan = Gan()
    decoder: DecoderDistill = DecoderDistill()

    @field_validator("schedule", "teach_schedule", mode="before")
    @classmethod
    def _schedule_text(cls, value):
        """Accept ``2`` and ``[2, 2, 1]`` as well as ``"2-2-1"``."""
        return schedule_text(value)

    @model_validator(mode="after")
    def _rules(self) -> "Distill":
        low, high = self.score_levels
        if not 0.0 <= low < high <= 1.0:
            raise _fail(f"distill.score_levels = {list(self.score_levels)} must satisfy 0 <= low < high <= 1")
        if self.dmd_form == "eps" and high >= 1.0:
            raise _fail(f"distill.dmd_form = eps divides by 1 - sigma, but distill.score_levels = "
                        f"{list(self.score_levels)} reaches 1; keep the high end below 1 (e.g. 0.98)")
        if self.score_span == "global" and self.method != "dmd":
            raise _fail(f"distill.score_span = global applies to method dmd; method {self.method} re-noises inside "
                        "the exit step's stage: set distill.score_span: stage")
        if self.levels is not None and any(not 0.0 <= r <= 1.0 for stage in self.levels for r in stage):
            raise _fail("every distill.levels value rho must lie in [0, 1] (1 = noisy end of the stage)")
        return self


def student_levels(distill: Distill, num_stages: int) -> list[list[float]]:
    """The student's local levels per stage, coarsest first (``distill.levels`` or the evenly spaced default)."""
    from pyrawan.pyramid.sampler import default_fewstep_levels
    from pyrawan.pyramid.schedule import parse_schedule

    steps = parse_schedule(distill.schedule, num_stages, key="distill.schedule")
    if distill.levels is None:
        return default_fewstep_levels(steps)
    return [list(r) for r in distill.levels]


def distill_train_problems(train) -> list[tuple[str, str]]:
    """``(key, message)`` for ``train:`` settings a distill run cannot use."""
    problems = []
    if train.engine == "deepspeed" and train.zero_stage == 3:
        problems.append(("train.zero_stage", "train.zero_stage = 3 is not supported by distill (the frozen and "
                         "LoRA-disabled teacher calls need whole weights); use train.zero_stage: 2"))
    if train.grad_accum != 1:
        problems.append(("train.grad_accum", f"train.grad_accum = {train.grad_accum}: distill runs one micro-step per "
                         "iteration; raise train.batch_size or the number of processes instead (set grad_accum: 1)"))
    return problems


def distill_problems(distill: Distill, num_stages: int) -> list[tuple[str, str]]:
    """``(key, message)`` for rules that involve the pyramid (schedule and levels per stage)."""
    from pyrawan.errors import InputError
    from pyrawan.pyramid.schedule import parse_schedule

    if distill.method == "decoder":
        return []                 # no student schedule: the decoder's section checks itself
    try:
        steps = parse_schedule(distill.schedule, num_stages, key="distill.schedule")
    except InputError as err:
        return [("distill.schedule", str(err))]
    problems = []
    if distill.levels is not None:
        counts = [len(r) for r in distill.levels]
        if counts != list(steps):
            problems.append(("distill.levels", f"distill.levels has {counts} levels per stage but distill.schedule = "
                             f"{distill.schedule!r} asks for {list(steps)}; give one list per stage (coarsest first) "
                             "with one level per step, or null for the default"))
        elif any(list(r) != sorted(r, reverse=True) for r in distill.levels):
            problems.append(("distill.levels", "distill.levels must decrease within each stage (1 = noisy end)"))
        else:
            first = next(r for r in distill.levels if r)
            if first[0] != 1.0:
                problems.append(("distill.levels", f"the first student step runs at rho = {first[0]}; it must be 1.0 "
                                 "(the student starts from pure noise)"))
    if distill.method == "adv" and distill.adv.backbone == "original" and distill.teacher is None:
        problems.append(("distill.teacher", "distill.adv.backbone = original needs the original model as "
                         "distill.teacher (e.g. the multi-resolution teacher of DMD-OT)"))
    if distill.method == "adv" and distill.teach_weight > 0:
        problems.append(("distill.teach_weight", "method adv has its own teacher term, distill.adv.lambda_rec; set "
                         "distill.teach_weight: 0"))
    if distill.method == "adv" and distill.adv.backbone == "pyramidal" and distill.teacher is not None:
        problems.append(("distill.teacher", "distill.adv.backbone = pyramidal uses the base pyramidal model as the "
                         "discriminator backbone; set distill.teacher: null (or backbone: original to use the teacher)"))
    if distill.method == "adv" and distill.gan.weight > 0:
        problems.append(("distill.gan.weight", f"distill.gan.weight = {distill.gan.weight:g} adds a GAN term to DMD, "
                         "but distill.method = adv is already adversarial (its heads and weights are distill.adv.*); "
                         "set distill.gan.weight: 0, or distill.method: dmd to add the GAN term to DMD"))
    if distill.method == "dmd" and gan_on(distill) and distill.gan.critic_weight == 0:
        problems.append(("distill.gan.critic_weight", f"distill.gan.weight = {distill.gan.weight:g} but "
                         "distill.gan.critic_weight = 0: the heads would never be trained and the generator would "
                         "chase random logits; set distill.gan.critic_weight > 0 (DMD2: 1e-2) or "
                         "distill.gan.weight: 0"))
    if distill.method == "dmd" and distill.variant == "ot" and distill.teacher is None:
        problems.append(("distill.teacher", "distill.variant = ot needs the original model finetuned at every stage "
                         "resolution as distill.teacher (`pyrawan finetune wan1.3b-ot-teacher`); it is null"))
    if distill.variant == "baseline" and sum(1 for n in steps if n) != 1:
        problems.append(("distill.schedule", f"distill.variant = baseline is one-stage Wan-DMD, but distill.schedule = "
                         f"{distill.schedule!r} uses several stages; use e.g. '0-0-2' (or schedule '2' with pyramid.stages: 1)"))
    return problems


def gan_on(distill: Distill) -> bool:
    """True when DMD runs with the GAN term (``distill.gan.weight > 0``, method dmd)."""
    return distill.method == "dmd" and distill.gan.weight > 0


def separate_teacher(recipe) -> bool:
    """True when the run holds its own frozen teacher; False when the teacher is the LoRA student's base with its
    adapters disabled (DMD with a LoRA student and no other teacher)."""
    d, lora = recipe.distill, recipe.train.lora.enabled
    return (d.teacher is not None and d.teacher != recipe.base) or not lora or d.method == "adv"
