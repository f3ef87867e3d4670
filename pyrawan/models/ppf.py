"""Pyramidal Patchification (PPF): one Wan transformer that patchifies more coarsely at noisier stages.

After PPFlow (Li et al., ICLR 2026), mapped onto Wan (``anchors.md`` section 3). Stage ``i`` multiplies
Wan's ``(1, 2, 2)`` patch by a factor ``f_i = (f_t, f_h, f_w)``: ``(1, 1, 1)``, ``(2, 2, 2)``, ``(4, 4, 4)``
give patches ``(1, 2, 2)``, ``(2, 4, 4)``, ``(4, 8, 8)`` (time factor 1 with ``keep_time``). A forward of
stage ``i`` on a full-resolution latent ``[B, C, T, H, W]``:

1. ``unshuffle``: pad frame 0 with ``f_t - 1`` copies of itself (the resolution pyramid's first-frame
   rule: frame 0 is its own block), then fold every ``f``-block into channels:
   ``[B, C f, T', H / f_h, W / f_w]`` with ``T' = 1 + (T - 1) / f_t`` and ``f = f_t f_h f_w``.
2. the Wan transformer with stage ``i``'s patch embedding (``Conv3d(C f -> dim)``, Wan's kernel) and
   output head (``Linear(dim -> p C f)``), and stage ``i``'s level embedding added to the timestep
   embedding. RoPE sees the coarse grid ``(T', H / f_h, W / f_w)``: the integer positions the
   resolution pyramid's stage ``i`` has (PPFlow instead strides full-grid positions; we keep the
   positions Wan was trained with at that token count, so stage ``i`` starts as the resolution
   pyramid's stage ``i``).
3. ``shuffle`` back; frame 0 is the mean of its ``f_t`` copies.

Token counts equal the resolution pyramid's at every stage (30,576 / 4,004 / 546 on 21 x 56 x 104).

Initialisation from a pretrained Wan (PPFlow's): embedding weights *averaged* (the pretrained kernel
repeated over the ``f`` sub-positions and divided by ``f``), head rows *replicated*, level embeddings
zero. Stage ``i`` then equals ``nearest-up(Wan(avg-pool(x)))``; on a latent that is constant over the
``f``-blocks it reproduces the pretrained prediction at the coarse resolution exactly.

The stage comes from the noise level (no jumps, no re-noising): a sample at timestep ``1000 sigma``
runs stage ``i`` when ``b_i < sigma <= b_{i+1}`` (``ppf_boundaries`` = ``b_1 .. b_{S-1}``, global
sigma = natural sigma), so a stage's first step, at its noisy boundary, is its own.
"""
from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from diffusers import WanTransformer3DModel

from pyrawan.errors import InputError

Factor = tuple[int, int, int]
ROUTING_TOLERANCE = 1e-5     # in sigma: float32 timesteps (1000 sigma) round by ~1e-7


def stage_factors(num_stages: int, keep_time: bool = False) -> list[list[int]]:
    """Patch factors per stage (index = stage): ``(2^i, 2^i, 2^i)``, or ``(1, 2^i, 2^i)`` with ``keep_time``."""
    return [[1 if keep_time else 2**i, 2**i, 2**i] for i in range(num_stages)]


def check_ppf_shape(shape: Sequence[int], factor: Sequence[int], patch: Sequence[int]) -> None:
    """``InputError`` unless latent ``(T, H, W)`` folds by ``factor`` and then patchifies by ``patch``."""
    t, h, w = (int(v) for v in shape)
    ft, fh, fw = factor
    if (t - 1) % ft or h % (fh * patch[1]) or w % (fw * patch[2]):
        raise InputError(f"latent {t}x{h}x{w} cannot be patchified by {ft}x{fh * patch[1]}x{fw * patch[2]} (PPF "
                         f"stage factor {tuple(factor)}): T - 1 must divide by {ft}, H by {fh * patch[1]} and W by "
                         f"{fw * patch[2]}; pick a video size that forms the same pyramid (see `pyrawan recipe`).")


def unshuffle(x: torch.Tensor, factor: Sequence[int]) -> torch.Tensor:
    """``[B, C, T, H, W] -> [B, C f, 1 + (T - 1) / f_t, H / f_h, W / f_w]``; channel ``c f + sub`` (c outer).

    Frame 0 is padded with ``f_t - 1`` copies of itself first, so it forms a block of its own.
    """
    ft, fh, fw = factor
    if ft > 1:
        x = torch.cat([x[:, :, :1].expand(-1, -1, ft - 1, -1, -1), x], dim=2)
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t // ft, ft, h // fh, fh, w // fw, fw).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, c * ft * fh * fw, t // ft, h // fh, w // fw)


def shuffle(y: torch.Tensor, factor: Sequence[int]) -> torch.Tensor:
    """Inverse of ``unshuffle``: ``[B, C f, T', H', W'] -> [B, C, 1 + (T' - 1) f_t, H' f_h, W' f_w]``.

    Frame 0 is the mean of its ``f_t`` padded copies.
    """
    ft, fh, fw = factor
    b, cf, t, h, w = y.shape
    c = cf // (ft * fh * fw)
    y = y.reshape(b, c, ft, fh, fw, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, c, t * ft, h * fh, w * fw)
    if ft > 1:
        y = torch.cat([y[:, :, :ft].mean(dim=2, keepdim=True), y[:, :, ft:]], dim=2)
    return y


def stage_of(timestep: torch.Tensor, boundaries: Sequence[float]) -> torch.Tensor:
    """Stage per sample ``[B]`` (long) from timesteps ``[B]`` (``1000 sigma``): ``b_i < sigma <= b_{i+1}``."""
    sigma = timestep.detach().double().cpu() / 1000.0
    inner = torch.tensor(list(boundaries), dtype=torch.float64)
    return (inner.view(1, -1) < sigma.view(-1, 1) - ROUTING_TOLERANCE).sum(dim=1)


class PPFWanTransformer(WanTransformer3DModel):
    """A ``WanTransformer3DModel`` with one patch embedding, head and level embedding per stage.

    Config adds ``ppf_factors`` (per stage, index = stage) and ``ppf_boundaries`` (``b_1 .. b_{S-1}``,
    global sigma). Stage 0 uses the inherited ``patch_embedding``/``proj_out``; stages >= 1 use
    ``ppf_embeddings[i - 1]``/``ppf_heads[i - 1]``. Saved and loaded like any diffusers model.
    """

    def __init__(self, ppf_factors: Sequence[Sequence[int]] = ((1, 1, 1),), ppf_boundaries: Sequence[float] = (),
                 **base: Any):
        super().__init__(**base)
        factors = [[int(v) for v in f] for f in ppf_factors]
        if len(ppf_boundaries) != len(factors) - 1 or factors[0] != [1, 1, 1]:
            raise ValueError(f"PPF config: {len(factors)} stage factors need {len(factors) - 1} boundaries and stage 0 "
                             f"must be (1, 1, 1); got factors {factors}, boundaries {list(ppf_boundaries)}")
        self.register_to_config(ppf_factors=factors, ppf_boundaries=[float(b) for b in ppf_boundaries])
        dim = self.config.num_attention_heads * self.config.attention_head_dim
        patch = tuple(self.config.patch_size)
        c_in, c_out = self.config.in_channels, self.config.out_channels or self.config.in_channels
        self.ppf_embeddings = torch.nn.ModuleList(
            torch.nn.Conv3d(c_in * math.prod(f), dim, kernel_size=patch, stride=patch) for f in factors[1:])
        self.ppf_heads = torch.nn.ModuleList(
            torch.nn.Linear(dim, math.prod(patch) * c_out * math.prod(f)) for f in factors[1:])
        self.ppf_level_embedding = torch.nn.Parameter(torch.zeros(len(factors), dim))

    @property
    def num_stages(self) -> int:
        return len(self.config.ppf_factors)

    @torch.no_grad()
    def init_from_base(self) -> None:
        """PPFlow's initialisation from the (already loaded) stage-0 weights: average, replicate, zero."""
        w_in, b_in = self.patch_embedding.weight, self.patch_embedding.bias      # [dim, C, pt, ph, pw], [dim]
        w_out, b_out = self.proj_out.weight, self.proj_out.bias                  # [P C, dim], [P C]
        positions, c_out = math.prod(self.config.patch_size), w_out.shape[0] // math.prod(self.config.patch_size)
        for f, embed, head in zip(self.config.ppf_factors[1:], self.ppf_embeddings, self.ppf_heads):
            n = math.prod(f)
            embed.weight.copy_(w_in.repeat_interleave(n, dim=1) / n)
            embed.bias.copy_(b_in)
            head.weight.copy_(w_out.view(positions, c_out, -1).repeat_interleave(n, dim=1).reshape(-1, w_out.shape[1]))
            head.bias.copy_(b_out.view(positions, c_out).repeat_interleave(n, dim=1).reshape(-1))
        self.ppf_level_embedding.zero_()

    @contextlib.contextmanager
    def _stage_modules(self, stage: int) -> Iterator[None]:
        """Stage ``stage``'s embedding and head in place of stage 0's, and its level embedding added to temb."""
        saved = self.patch_embedding, self.proj_out
        level = self.ppf_level_embedding[stage]
        hook = self.condition_embedder.time_embedder.register_forward_hook(
            lambda _m, _a, out: out + level.to(out.dtype))
        if stage:
            self.patch_embedding, self.proj_out = self.ppf_embeddings[stage - 1], self.ppf_heads[stage - 1]
        try:
            yield
        finally:
            hook.remove()
            self.patch_embedding, self.proj_out = saved

    def _stage_forward(self, stage: int, x: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor,
                       image: torch.Tensor | None, attention_kwargs: dict | None) -> torch.Tensor:
        """One stage on samples ``x`` ``[n, C, T, H, W]`` that all belong to it: ``[n, C_out, T, H, W]``."""
        factor = self.config.ppf_factors[stage]
        check_ppf_shape(x.shape[2:], factor, self.config.patch_size)
        with self._stage_modules(stage):
            y = super().forward(unshuffle(x, factor), timestep, text, image, return_dict=False,
                                attention_kwargs=attention_kwargs)[0]
        return shuffle(y, factor)

    def _unused_zero(self, used: set[int]) -> torch.Tensor | float:
        """0 times the stage parameters this forward did not use, so DDP sees every parameter in the graph."""
        if not torch.is_grad_enabled():
            return 0.0
        unused = [p for s in range(1, self.num_stages) if s not in used
                  for p in (*self.ppf_embeddings[s - 1].parameters(), *self.ppf_heads[s - 1].parameters())]
        unused += [] if 0 in used else [*self.patch_embedding.parameters(), *self.proj_out.parameters()]
        return sum((0.0 * p.sum() for p in unused if p.requires_grad), torch.zeros(()))

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                encoder_hidden_states_image: torch.Tensor | None = None, return_dict: bool = True,
                attention_kwargs: dict[str, Any] | None = None):
        """Wan's forward, each sample at the stage its timestep falls in (``[B]`` or per-token ``[B, N]``)."""
        if timestep.ndim == 2:
            if bool((timestep != timestep[:, :1]).any()):
                raise InputError("a PPF model takes one noise level per sample (its stages have no per-frame "
                                 "levels); got different timesteps across the tokens of a sample.")
            timestep = timestep[:, 0]
        stages = stage_of(timestep.expand(hidden_states.shape[0]), self.config.ppf_boundaries)
        parts, order = [], []
        for stage in sorted(set(stages.tolist())):
            idx = (stages == stage).nonzero().flatten().to(hidden_states.device)
            image = None if encoder_hidden_states_image is None else encoder_hidden_states_image[idx]
            parts.append(self._stage_forward(stage, hidden_states[idx], timestep.expand(len(stages))[idx],
                                             encoder_hidden_states[idx], image, attention_kwargs))
            order.append(idx)
        out = torch.cat(parts)[torch.argsort(torch.cat(order))]
        zero = self._unused_zero(set(stages.tolist()))
        out = out + zero.to(out.device, out.dtype) if torch.is_tensor(zero) else out
        return (out,) if not return_dict else _output(out)


def _output(sample: torch.Tensor):
    from diffusers.models.modeling_outputs import Transformer2DModelOutput

    return Transformer2DModelOutput(sample=sample)


# diffusers builds a model from its config through the signature of __init__; show it the base keys too.
_BASE = inspect.signature(WanTransformer3DModel.__init__)
PPFWanTransformer.__init__.__signature__ = _BASE.replace(parameters=[
    *_BASE.parameters.values(),
    inspect.Parameter("ppf_factors", inspect.Parameter.KEYWORD_ONLY, default=((1, 1, 1),)),
    inspect.Parameter("ppf_boundaries", inspect.Parameter.KEYWORD_ONLY, default=()),
])


def is_ppf(model: Any) -> bool:
    """True for a PPF transformer (or a config dict of one)."""
    config = getattr(model, "config", model)
    return isinstance(model, PPFWanTransformer) or (hasattr(config, "get") and config.get("ppf_factors") is not None)


def from_base(base: WanTransformer3DModel, factors: Sequence[Sequence[int]], boundaries: Sequence[float]
              ) -> PPFWanTransformer:
    """A PPF transformer initialised from a pretrained Wan ``base`` (same device and dtype)."""
    if is_ppf(base):
        raise InputError("the base model is already a PPF model; convert the original Wan model instead.")
    from pyrawan.models.presets import cast_keep_fp32

    config = {k: v for k, v in dict(base.config).items() if not k.startswith("_")}
    model = PPFWanTransformer(ppf_factors=factors, ppf_boundaries=boundaries, **config)
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    if unexpected or any(not k.startswith("ppf_") for k in missing):
        raise InputError(f"the base transformer does not match its own config (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}); it is not a standard diffusers Wan transformer.")
    model.init_from_base()
    return cast_keep_fp32(model, base.dtype).to(base.device).eval()


def transformer_class(config: Any) -> type[WanTransformer3DModel]:
    """The class a transformer config (dict, or a folder holding config.json) builds: PPF or plain Wan."""
    if not hasattr(config, "get"):
        import json
        from pathlib import Path

        path = Path(config) / "config.json"
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return WanTransformer3DModel       # from_pretrained reports the unreadable folder itself
    return PPFWanTransformer if is_ppf(config) else WanTransformer3DModel


def transformer_from_config(config: Any) -> WanTransformer3DModel:
    """A new transformer (random weights, current default device) of the class its config names."""
    return transformer_class(config).from_config(config)
