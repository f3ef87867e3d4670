"""Prompt encoding and the flow-matching velocity of a Wan transformer, with per-frame noise levels.

Conventions: ``x_sigma = (1 - sigma) * x0 + sigma * noise``; the transformer predicts the velocity
``v = noise - x0`` and is called with timestep ``1000 * sigma`` (as ``WanPipeline`` does).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, ModelMixin, WanPipeline

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


def batch_timesteps(sigma_nat: torch.Tensor, batch: int, latent_hw: tuple[int, int],
                    patch: tuple[int, int, int]) -> torch.Tensor:
    """Timesteps for levels ``[T]`` (shared by the batch) or ``[B, T]`` (one row per sample).

    Each row goes through ``frame_timesteps``: ``[B]`` when every row has one level for all frames,
    else ``[B, tokens]`` (rows with one level are expanded to every token).
    """
    if sigma_nat.ndim < 2:
        return frame_timesteps(sigma_nat, batch, latent_hw, patch)
    rows = [frame_timesteps(level, 1, latent_hw, patch) for level in sigma_nat]
    if all(r.ndim == 1 for r in rows):
        return torch.cat(rows)
    tokens = next(r.shape[1] for r in rows if r.ndim == 2)
    return torch.cat([r.view(1, 1).expand(1, tokens) if r.ndim == 1 else r for r in rows])


def unwrap(model: Any) -> torch.nn.Module:
    """The transformer inside a DDP or DeepSpeed wrapper (the module itself otherwise)."""
    while not isinstance(model, ModelMixin) and isinstance(getattr(model, "module", None), torch.nn.Module):
        model = model.module
    return model


def _expand(text: torch.Tensor, batch: int) -> torch.Tensor:
    if text.shape[0] == 1 and batch > 1:
        return text.expand(batch, -1, -1)
    if text.shape[0] != batch:
        raise InputError(f"Text embeddings have batch {text.shape[0]} but the latents have batch {batch}; give one "
                         "prompt per sample (or a single prompt).")
    return text


def check_positions(config, latent_thw: Sequence[int]) -> None:
    """``InputError`` when a latent's token grid is longer on some axis than the transformer's RoPE table."""
    limit = getattr(config, "rope_max_seq_len", None)
    grid = [int(n) // int(p) for n, p in zip(latent_thw, config.patch_size)]
    if limit is not None and max(grid) > limit:
        t, h, w = (int(n) for n in latent_thw)
        raise InputError(f"the latent {t}x{h}x{w} makes a token grid of {grid[0]}x{grid[1]}x{grid[2]}, longer than this "
                         f"transformer's position table on one axis (rope_max_seq_len = {limit}); sample at a smaller "
                         "size (--frames/--height/--width), usually the size the model was made for.")


def denoise(
    model: Any,
    x: torch.Tensor,
    sigma_nat: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor | None = None,
    guidance: float = 1.0,
    blocks: Sequence[int] = (),
    dtype: torch.dtype | None = None,
    attention_kwargs: dict[str, Any] | None = None,
) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """One call of the transformer: the flow-matching velocity ``[B, C, T, H, W]`` (float32).

    ``model``: a Wan transformer, or a DDP/DeepSpeed wrapper of one (gradients flow when enabled).
    ``x`` ``[B, C, T, H, W]``; ``sigma_nat`` the natural level per frame, ``[T]`` or per sample ``[B, T]``
    (or a scalar); ``cond``/``uncond`` text embeddings ``[B or 1, L, D]``. With ``guidance > 1`` and
    ``uncond`` given, both branches run as one forward of batch 2B and the result is the standard
    ``uncond + guidance * (cond - uncond)``. ``blocks``: indices of transformer blocks whose output
    hidden states ``[B, tokens, D]`` (conditional branch) are returned too, as ``(v, hidden)``.
    ``dtype``: the input dtype (default: the transformer's).
    """
    inner = unwrap(model)
    b, _, frames, h, w = x.shape
    param = next(inner.parameters())
    dtype = dtype or getattr(inner, "dtype", param.dtype)                  # skips fp32-kept modules
    sigma = torch.as_tensor(sigma_nat).to(param.device)
    sigma = sigma.reshape(1).expand(frames) if sigma.numel() == 1 else sigma
    if sigma.shape[-1] != frames:
        raise InputError(f"sigma_nat has {sigma.shape[-1]} levels per sample but the latent has {frames} frames.")
    check_positions(inner.config, x.shape[-3:])
    cfg = uncond is not None and guidance > 1.0
    reps = 2 if cfg else 1
    timestep = batch_timesteps(sigma, b, (h, w), tuple(inner.config.patch_size)).to(param.device)
    context = [_expand(cond, b)] + ([_expand(uncond, b)] if cfg else [])
    hidden: dict[int, torch.Tensor] = {}
    hooks = [inner.blocks[i].register_forward_hook(lambda _m, _a, out, i=i: hidden.__setitem__(i, out[:b]))
             for i in blocks]
    try:
        out = model(hidden_states=x.to(param.device, dtype).repeat(reps, 1, 1, 1, 1),
                    timestep=timestep.repeat(reps, *([1] * (timestep.ndim - 1))),
                    encoder_hidden_states=torch.cat(context).to(param.device, dtype),
                    attention_kwargs=attention_kwargs, return_dict=False)[0].float()
    finally:
        for hook in hooks:
            hook.remove()
    if cfg:
        c, u = out.chunk(2)
        out = u + guidance * (c - u)
    return (out, [hidden[i] for i in blocks]) if blocks else out


class Velocity:
    """Flow-matching velocity ``v(x, sigma)`` of a Wan transformer, with optional batched CFG.

    ``cond``/``uncond`` are [B, L, D] text embeddings (B = 1 broadcasts over the batch). With
    ``guidance > 1`` and ``uncond`` given, cond and uncond run as one forward of batch 2B and
    the result is ``uncond + guidance * (cond - uncond)`` (``denoise``).
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

    def __call__(self, x: torch.Tensor, sigma_nat: torch.Tensor) -> torch.Tensor:
        """Velocity [B, C, T, H, W] (float32) for latents ``x`` [B, C, T, H, W] at levels [T], [B, T] or scalar."""
        return denoise(self.transformer, x, sigma_nat, self.cond, self.uncond, self.guidance,
                       attention_kwargs=self.attention_kwargs)
