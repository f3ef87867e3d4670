"""Pyramidal Patchification (PPF) Wan transformer for plain diffusers (torch and diffusers only).

``pyrawan export --format diffusers`` copies this file into an exported PPF model as
``transformer/ppf_wan_transformer.py``; ``model_index.json`` names it, so diffusers builds the
transformer from it (``trust_remote_code=True``). Stage ``i`` folds every ``f_i``-block of the
full-resolution latent into channels (frame 0 padded to a block of its own), runs the Wan blocks
with that stage's patch embedding, head and level embedding, and unfolds the result. The stage of a
sample comes from its timestep: ``b_i < sigma <= b_{i+1}`` with ``ppf_boundaries`` in global sigma.
"""
from __future__ import annotations

import contextlib
import inspect
import math

import torch
from diffusers import WanTransformer3DModel
from diffusers.models.modeling_outputs import Transformer2DModelOutput

ROUTING_TOLERANCE = 1e-5     # in sigma: float32 timesteps (1000 sigma) round by ~1e-7


def unshuffle(x: torch.Tensor, factor) -> torch.Tensor:
    """``[B, C, T, H, W] -> [B, C f, 1 + (T - 1) / f_t, H / f_h, W / f_w]`` (frame 0 padded to a block)."""
    ft, fh, fw = factor
    if ft > 1:
        x = torch.cat([x[:, :, :1].expand(-1, -1, ft - 1, -1, -1), x], dim=2)
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t // ft, ft, h // fh, fh, w // fw, fw).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, c * ft * fh * fw, t // ft, h // fh, w // fw)


def shuffle(y: torch.Tensor, factor) -> torch.Tensor:
    """Inverse of ``unshuffle``; frame 0 is the mean of its padded copies."""
    ft, fh, fw = factor
    b, cf, t, h, w = y.shape
    c = cf // (ft * fh * fw)
    y = y.reshape(b, c, ft, fh, fw, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, c, t * ft, h * fh, w * fw)
    if ft > 1:
        y = torch.cat([y[:, :, :ft].mean(dim=2, keepdim=True), y[:, :, ft:]], dim=2)
    return y


def stage_of(timestep: torch.Tensor, boundaries) -> torch.Tensor:
    """Stage per sample ``[B]`` from timesteps ``[B]`` (``1000 sigma``)."""
    sigma = timestep.detach().double().cpu() / 1000.0
    inner = torch.tensor(list(boundaries), dtype=torch.float64)
    return (inner.view(1, -1) < sigma.view(-1, 1) - ROUTING_TOLERANCE).sum(dim=1)


class PPFWanTransformer(WanTransformer3DModel):
    """A ``WanTransformer3DModel`` with one patch embedding, head and level embedding per stage."""

    def __init__(self, ppf_factors=((1, 1, 1),), ppf_boundaries=(), **base):
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

    @contextlib.contextmanager
    def _stage_modules(self, stage: int):
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

    def forward(self, hidden_states, timestep, encoder_hidden_states, encoder_hidden_states_image=None,
                return_dict: bool = True, attention_kwargs=None):
        """Wan's forward, each sample at the stage its timestep (``[B]``, or equal per-token ``[B, N]``) falls in."""
        if timestep.ndim == 2:
            if bool((timestep != timestep[:, :1]).any()):
                raise ValueError("a PPF model takes one noise level per sample; got different timesteps across tokens")
            timestep = timestep[:, 0]
        stages = stage_of(timestep.expand(hidden_states.shape[0]), self.config.ppf_boundaries)
        parts, order = [], []
        for stage in sorted(set(stages.tolist())):
            idx = (stages == stage).nonzero().flatten().to(hidden_states.device)
            image = None if encoder_hidden_states_image is None else encoder_hidden_states_image[idx]
            factor = self.config.ppf_factors[stage]
            with self._stage_modules(stage):
                y = super().forward(unshuffle(hidden_states[idx], factor), timestep.expand(len(stages))[idx],
                                    encoder_hidden_states[idx], image, return_dict=False,
                                    attention_kwargs=attention_kwargs)[0]
            parts.append(shuffle(y, factor))
            order.append(idx)
        out = torch.cat(parts)[torch.argsort(torch.cat(order))]
        return (out,) if not return_dict else Transformer2DModelOutput(sample=out)


# diffusers builds a model from its config through the signature of __init__; show it the base keys too.
_BASE = inspect.signature(WanTransformer3DModel.__init__)
PPFWanTransformer.__init__.__signature__ = _BASE.replace(parameters=[
    *_BASE.parameters.values(),
    inspect.Parameter("ppf_factors", inspect.Parameter.KEYWORD_ONLY, default=((1, 1, 1),)),
    inspect.Parameter("ppf_boundaries", inspect.Parameter.KEYWORD_ONLY, default=()),
])
