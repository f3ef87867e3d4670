"""Prompt encoding and the flow-matching velocity of a Wan transformer, with per-frame noise levels.

Conventions: ``x_sigma = (1 - sigma) * x0 + sigma * noise``; the transformer predicts the velocity
``v = noise - x0`` and is called with timestep ``1000 * sigma`` (as ``WanPipeline`` does).
"""
from __future__ import annotations

from typing import Any

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

from pyrawan.errors import InputError
from pyrawan.models.presets import WanComponents


def pipeline_for(components: WanComponents) -> WanPipeline:
    """A ``WanPipeline`` around the components (default Euler scheduler; for diffusers helpers)."""
    pipe = WanPipeline(
        tokenizer=components.tokenizer, text_encoder=components.text_encoder, vae=components.vae,
        scheduler=FlowMatchEulerDiscreteScheduler(), transformer=components.transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def encode_prompts(
    components: WanComponents,
    prompts: list[str],
    negative: list[str] | None,
    max_sequence_length: int = 512,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Text embeddings exactly as ``WanPipeline.encode_prompt``: cond [B, L, D], uncond [B, L, D] | None.

    L = ``max_sequence_length`` (each prompt trimmed to its true length, then zero-padded);
    D = the text encoder width. ``negative=None`` means no CFG (uncond is None). Both on the text
    encoder's device and dtype.
    """
    if negative is not None and len(negative) != len(prompts):
        raise InputError(f"Got {len(prompts)} prompts but {len(negative)} negative prompts; give one "
                         "negative prompt per prompt (or none to disable classifier-free guidance).")
    param = next(components.text_encoder.parameters())
    cond, uncond = pipeline_for(components).encode_prompt(
        prompt=list(prompts), negative_prompt=None if negative is None else list(negative),
        do_classifier_free_guidance=negative is not None, num_videos_per_prompt=1,
        max_sequence_length=max_sequence_length, device=param.device, dtype=param.dtype,
    )
    return cond, uncond


def frame_timesteps(sigma_nat: torch.Tensor, batch: int, latent_hw: tuple[int, int],
                    patch: tuple[int, int, int]) -> torch.Tensor:
    """Transformer timesteps for per-frame noise levels ``sigma_nat`` [T].

    All equal -> [B] (scalar per sample, exactly ``WanPipeline``); otherwise per-token
    [B, (T/p_t)*(H/p_h)*(W/p_w)] in frame-major (T', H', W') order, one level per temporal patch
    (its first frame). Values are ``1000 * sigma`` in float32.
    """
    t = 1000.0 * sigma_nat.float().reshape(-1)
    if bool((t == t[0]).all()):
        return t[:1].expand(batch).contiguous()
    p_t, p_h, p_w = patch
    h, w = latent_hw[0] // p_h, latent_hw[1] // p_w
    per_frame = t[::p_t]                                               # [T']
    tokens = per_frame.view(-1, 1, 1).expand(-1, h, w).reshape(1, -1)  # [1, T'*H'*W']
    return tokens.expand(batch, -1).contiguous()


class Velocity:
    """Flow-matching velocity ``v(x, sigma)`` of a Wan transformer, with optional batched CFG.

    ``cond``/``uncond`` are [B, L, D] text embeddings (B = 1 broadcasts over the batch). With
    ``guidance > 1`` and ``uncond`` given, cond and uncond run as one forward of batch 2B and
    the result is ``uncond + guidance * (cond - uncond)``.
    """

    def __init__(
        self,
        transformer: torch.nn.Module,
        cond: torch.Tensor,
        uncond: torch.Tensor | None = None,
        guidance: float = 1.0,
        attention_kwargs: dict[str, Any] | None = None,
    ):
        self.transformer = transformer
        self.cond = cond
        self.uncond = uncond
        self.guidance = float(guidance)
        self.attention_kwargs = attention_kwargs

    @property
    def uses_cfg(self) -> bool:
        """True when a forward runs both the conditional and unconditional branch."""
        return self.uncond is not None and self.guidance > 1.0

    def _context(self, batch: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Text context [B or 2B, L, D]: cond, then uncond when CFG is on."""
        parts = [self.cond] + ([self.uncond] if self.uses_cfg else [])
        parts = [p.expand(batch, -1, -1) if p.shape[0] == 1 else p for p in parts]
        for p in parts:
            if p.shape[0] != batch:
                raise InputError(f"Text embeddings have batch {p.shape[0]} but the latents have batch "
                                 f"{batch}; give one prompt per sample (or a single prompt).")
        return torch.cat(parts).to(device=device, dtype=dtype)

    def __call__(self, x: torch.Tensor, sigma_nat: torch.Tensor) -> torch.Tensor:
        """Velocity [B, C, T, H, W] (float32) for latents ``x`` [B, C, T, H, W] at levels [T] (or scalar)."""
        b, _, frames, h, w = x.shape
        sigma = sigma_nat.reshape(-1).to(x.device)
        sigma = sigma.expand(frames) if sigma.numel() == 1 else sigma
        if sigma.numel() != frames:
            raise InputError(f"sigma_nat has {sigma.numel()} levels but the latent has {frames} frames.")
        param = next(self.transformer.parameters())
        dtype = getattr(self.transformer, "dtype", param.dtype)          # skips fp32-kept modules
        reps = 2 if self.uses_cfg else 1
        patch = tuple(self.transformer.config.patch_size)
        timestep = frame_timesteps(sigma, b * reps, (h, w), patch).to(param.device)
        out = self.transformer(
            hidden_states=x.to(param.device, dtype).repeat(reps, 1, 1, 1, 1),
            timestep=timestep,
            encoder_hidden_states=self._context(b, dtype, param.device),
            attention_kwargs=self.attention_kwargs,
            return_dict=False,
        )[0].float()
        if not self.uses_cfg:
            return out
        cond, uncond = out.chunk(2)
        return uncond + self.guidance * (cond - uncond)
