"""Pyramidal Wan2.1 text-to-video for plain diffusers: multi-step and few-step pyramidal sampling.

This file is self-contained: it imports torch, numpy and diffusers only. ``pyrawan export --format
diffusers`` copies it into the exported folder as ``pyramidal_wan.py``; the folder's
``model_index.json`` names it, so diffusers finds it::

    from diffusers import DiffusionPipeline
    pipe = DiffusionPipeline.from_pretrained(FOLDER, trust_remote_code=True)
    latents = pipe("a red square moving right", seed=0, output_type="latent").frames

``pyramid`` (in ``model_index.json``) is the model's ``pyramid.json``: stages, boundaries (global
sigma), resizer, video size, VAE factors and the sampling defaults (schedule, shift, guidance,
few-step levels). Stage 0 is full resolution; schedules are written coarsest first ("20-20-10").
Prompt ``i`` draws its noise from ``torch.Generator("cpu").manual_seed(seed + i)``, as ``pyrawan
sample --seed`` does, so both give the same latents. The scheduler component is not used: the
pyramid's sampler defines its own steps (stage by stage, with a jump between stages).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from diffusers import DiffusionPipeline, WanPipeline
from diffusers.pipelines.wan.pipeline_output import WanPipelineOutput
from diffusers.video_processor import VideoProcessor


# ---- resizers: natural-amplitude down / up along each axis (frame 0 is its own block in time) ----------

def _daubechies(p: int) -> np.ndarray:
    q = [math.comb(p - 1 + k, k) for k in range(p)]
    z_roots = []
    for y in np.roots(q[::-1]):
        pair = np.roots([1.0, -(2 - 4 * y), 1.0])
        z_roots.append(pair[np.argmin(np.abs(pair))])
    h = np.real(np.poly(np.concatenate([-np.ones(p), z_roots])))
    return h * (math.sqrt(2) / h.sum())


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II ``[n, n]`` (rows = basis vectors)."""
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    mat = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    mat[0] /= np.sqrt(2.0)
    return mat


def low_band(resizer: str, n: int) -> np.ndarray:
    """Low-band analysis matrix of one axis ``[n / 2, n]`` with orthonormal rows."""
    if resizer == "haar":
        return np.kron(np.eye(n // 2), np.full((1, 2), 1 / math.sqrt(2)))
    if resizer == "dct":
        return _dct_matrix(n // 2).T @ _dct_matrix(n)[: n // 2]
    if resizer == "db4":
        taps, rows = _daubechies(4), np.zeros((n // 2, n))
        for k, tap in enumerate(taps):
            rows[np.arange(n // 2), (2 * np.arange(n // 2) + k) % n] += tap
        return rows
    raise ValueError(f"unknown resizer {resizer!r} (haar, dct or db4)")


@lru_cache(maxsize=128)
def _space(resizer: str, n: int, up: bool) -> torch.Tensor:
    low = torch.from_numpy(low_band(resizer, n))
    return low.T * math.sqrt(2) if up else low / math.sqrt(2)


@lru_cache(maxsize=128)
def _time(t: int, up: bool) -> torch.Tensor:
    coarse = torch.arange(t) if t == 1 else (torch.arange(t) + 1) // 2
    onehot = torch.nn.functional.one_hot(coarse, 1 + (t - 1) // 2).double()
    return onehot if up else (onehot / onehot.sum(0)).T


def _along(x: torch.Tensor, dim: int, mat: torch.Tensor) -> torch.Tensor:
    mat = mat.to(device=x.device, dtype=x.dtype)
    if dim == -1:
        return x @ mat.T
    if dim == -2:
        return mat @ x
    return (mat @ x.flatten(-2)).unflatten(-1, x.shape[-2:])


class Resize:
    """``down``/``up``/``project`` of one pyramid (``ppf``: the identity, every stage is full resolution)."""

    def __init__(self, resizer: str, keep_time: bool, ppf: bool):
        self.resizer, self.keep_time, self.ppf = resizer, keep_time or ppf, ppf

    def block_sizes(self, frames: int) -> torch.Tensor:
        if self.ppf:
            return torch.ones(frames, dtype=torch.float64)
        m = torch.full((frames,), 4.0 if self.keep_time else 8.0, dtype=torch.float64)
        m[0] = 4.0
        return m

    def down(self, x: torch.Tensor) -> torch.Tensor:
        if self.ppf:
            return x
        t, h, w = x.shape[-3:]
        x = _along(_along(x, -1, _space(self.resizer, w, False)), -2, _space(self.resizer, h, False))
        return x if self.keep_time else _along(x, -3, _time(t, False))

    def up(self, y: torch.Tensor) -> torch.Tensor:
        if self.ppf:
            return y
        t, h, w = y.shape[-3:]
        y = _along(_along(y, -1, _space(self.resizer, 2 * w, True)), -2, _space(self.resizer, 2 * h, True))
        return y if self.keep_time else _along(y, -3, _time(2 * (t - 1) + 1, True))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))

    def high_pass(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x) if self.ppf else x - self.project(x)

    def to_fine(self, per_coarse: torch.Tensor, fine_frames: int) -> torch.Tensor:
        idx = torch.arange(fine_frames)
        return per_coarse[idx if self.keep_time else (idx + 1) // 2]


# ---- noise levels: global sigma per stage -> natural level per frame -----------------------------------

def _per_frame(level: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return level.to(device=like.device, dtype=like.dtype).view(1, 1, -1, 1, 1)


def _interpolate(rho: float, sigma_c: torch.Tensor, sigma_n: torch.Tensor) -> torch.Tensor:
    rho = torch.as_tensor(rho, dtype=sigma_c.dtype)
    return (1 - rho) * sigma_c + rho * sigma_n


class Pyramid:
    """The pyramid of ``pyramid.json``: stage shapes, natural levels at each stage's ends, jump, estimates."""

    def __init__(self, spec: dict):
        self.spec, self.stages = spec, int(spec["num_stages"])
        self.boundaries = [float(b) for b in spec["boundaries"]]
        self.ppf = spec.get("kind", "resolution") == "ppf"
        self.resize = Resize(spec.get("resizer", "haar"), bool(spec.get("keep_time", False)), self.ppf)

    def shapes(self, frames: int, height: int, width: int) -> list[tuple[int, int, int]]:
        ft, fs = spec_factors(self.spec)
        shape = (1 + (frames - 1) // ft, height // fs, width // fs)
        out = [shape]
        for _ in range(self.stages - 1):
            t, h, w = out[-1]
            out.append(shape if self.ppf else (t if self.resize.keep_time else 1 + (t - 1) // 2, h // 2, w // 2))
        return out

    def levels(self, stage: int, frames: int, top: bool) -> tuple[torch.Tensor, torch.Tensor]:
        full = (0.0, *self.boundaries, 1.0)
        ends = (full[stage], 1.0 if top else full[stage + 1])
        if self.ppf:
            return tuple(torch.full((frames,), v, dtype=torch.float64) for v in ends)
        c = self.resize.block_sizes(frames) ** (stage / 2)          # amplitude gain of each frame's block
        natural = [torch.as_tensor(s, dtype=torch.float64) for s in ends]
        return tuple(s / ((1 - s) * c + s) for s in natural)

    def jump(self, x: torch.Tensor, sigma_nat: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One sample ``[1, C, T', H, W]`` from a stage's clean end to the next finer stage's noisy start."""
        t_coarse = x.shape[-3]
        s = torch.as_tensor(sigma_nat, dtype=torch.float64).expand(t_coarse)
        root_m = self.resize.block_sizes(t_coarse).sqrt()
        alpha = 1 / (1 + (root_m - 1) * s)
        up = self.resize.up(x)
        t_fine = up.shape[-3]
        alpha_f, s_fine = self.resize.to_fine(alpha, t_fine), self.resize.to_fine(alpha * s * root_m, t_fine)
        xi = torch.randn(up.shape, generator=generator, dtype=up.dtype, device="cpu").to(up.device)
        return _per_frame(alpha_f, up) * up + _per_frame(s_fine, up) * self.resize.high_pass(xi)

    @staticmethod
    def stage_sample(x0, eps, rho, sigma_c, sigma_n, project=None) -> torch.Tensor:
        """A stage sample at local level ``rho`` from a clean latent (the few-step sampler's re-noising)."""
        sc, sn = _per_frame(sigma_c, x0), _per_frame(sigma_n, x0)
        y_c = (1 - sc) * x0 + sc * eps
        y_n = eps if project is None else (1 - sn) * project(x0) + sn * eps
        return (1 - rho) * y_c + rho * y_n

    @staticmethod
    def clean_estimate(x, v, rho, sigma_c, sigma_n, project=None) -> torch.Tensor:
        """The clean latent from a stage sample and its velocity: low band ``x - sigma v``, high band rescaled."""
        sigma = _interpolate(rho, sigma_c, sigma_n)
        s, s_c, s_n = (_per_frame(level, x) for level in (sigma, sigma_c, sigma_n))
        x0_low = x - s * v
        x0_high = (x - s * v) * (s_n - s_c) / ((1 - s_c) * s_n)
        return x0_high if project is None else project(x0_low) + x0_high - project(x0_high)


def spec_factors(spec: dict) -> tuple[int, int]:
    factors = spec.get("vae_factors") or (4, 8)
    return int(factors[0]), int(factors[1])


def _randn(shape, generators: list[torch.Generator], like: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.randn((1, *shape[1:]), generator=g, dtype=torch.float32).to(like.device, like.dtype)
                      for g in generators])


def _rho_grid(steps: int, shift: float) -> list[float]:
    rho = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return (shift * rho / (1 + (shift - 1) * rho)).tolist()


def parse_schedule(text, stages: int) -> list[int]:
    steps = [int(v) for v in (text.split("-") if isinstance(text, str) else text)]
    if len(steps) != stages or not any(steps) or 0 in steps[next(i for i, n in enumerate(steps) if n):]:
        raise ValueError(f"schedule {text!r}: give {stages} step counts, coarsest first; zeros only on the coarsest "
                         f"stages (e.g. {'-'.join(['0'] * (stages - 1) + ['50'])})")
    return steps


class PyramidalWanPipeline(WanPipeline):
    """Wan2.1 text-to-video with a pyramidal sampler (PyramidalWan, PPF, few-step distilled models)."""

    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _optional_components = []

    def __init__(self, tokenizer, text_encoder, vae, scheduler, transformer, pyramid: dict | None = None):
        DiffusionPipeline.__init__(self)
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer,
                              scheduler=scheduler)
        self.register_to_config(pyramid=pyramid)
        self.vae_scale_factor_temporal = self.vae.config.scale_factor_temporal if getattr(self, "vae", None) else 4
        self.vae_scale_factor_spatial = self.vae.config.scale_factor_spatial if getattr(self, "vae", None) else 8
        self.video_processor = VideoProcessor(vae_scale_factor=self.vae_scale_factor_spatial)

    def _velocity(self, x, sigma_nat, cond, uncond, guidance):
        """Flow-matching velocity (float32) of latents ``x`` ``[B, C, T, H, W]`` at natural levels ``[T]``."""
        tr = self.transformer
        param = next(tr.parameters())
        dtype = getattr(tr, "dtype", param.dtype)
        b, _, _, h, w = x.shape
        t = 1000.0 * sigma_nat.to(param.device).float().reshape(-1)
        if bool((t == t[0]).all()):
            timestep = t[:1].expand(b).contiguous()
        else:
            p_t, p_h, p_w = tr.config.patch_size
            timestep = t[::p_t].view(-1, 1, 1).expand(-1, h // p_h, w // p_w).reshape(1, -1).expand(b, -1).contiguous()
        cfg = uncond is not None and guidance > 1.0
        reps = 2 if cfg else 1
        context = torch.cat([cond] + ([uncond] if cfg else []))
        out = tr(hidden_states=x.to(param.device, dtype).repeat(reps, 1, 1, 1, 1),
                 timestep=timestep.repeat(reps, *([1] * (timestep.ndim - 1))),
                 encoder_hidden_states=context.to(param.device, dtype), return_dict=False)[0].float()
        if cfg:
            c, u = out.chunk(2)
            out = u + guidance * (c - u)
        return out

    def _multistep(self, velocity, x, pyr: Pyramid, steps, shift, generators, step):
        shifts = [float(shift)] * pyr.stages if isinstance(shift, (int, float)) else [float(s) for s in shift]
        levels = [_rho_grid(n, k) if n else [] for n, k in zip(steps, shifts)]
        active = [(pyr.stages - 1 - k, n) for k, n in enumerate(steps) if n]
        for k, (stage, _) in enumerate(active):
            grid = levels[pyr.stages - 1 - stage]
            sigma_c, sigma_n = pyr.levels(stage, x.shape[-3], top=(k == 0))
            for j in range(len(grid) - 1):
                now, nxt = _interpolate(grid[j], sigma_c, sigma_n), _interpolate(grid[j + 1], sigma_c, sigma_n)
                x = x + _per_frame(nxt - now, x) * velocity(x, now)
                step()
            if stage > 0:
                x = torch.cat([pyr.jump(x[i:i + 1], sigma_c, g) for i, g in enumerate(generators)])
        return x

    def _fewstep(self, velocity, x, pyr: Pyramid, levels, generators, step):
        active = [(pyr.stages - 1 - k, n) for k, n in enumerate(len(r) for r in levels) if n]
        if levels[pyr.stages - 1 - active[0][0]][0] != 1.0:
            raise ValueError(f"few-step levels {levels} must start at 1.0 (pure noise) on the first stage with steps")
        x0_hat = x
        for k, (stage, _) in enumerate(active):
            rhos = levels[pyr.stages - 1 - stage]
            sigma_c, sigma_n = pyr.levels(stage, x.shape[-3], top=(k == 0))
            project = None if k == 0 else pyr.resize.project
            if k > 0:
                x = pyr.stage_sample(x, _randn(x.shape, generators, x), rhos[0], sigma_c, sigma_n, project)
            for j, rho in enumerate(rhos):
                v = velocity(x, _interpolate(float(rho), sigma_c, sigma_n))
                x0_hat = pyr.clean_estimate(x, v, float(rho), sigma_c, sigma_n, project)
                step()
                if j + 1 < len(rhos):
                    x = pyr.stage_sample(x0_hat, _randn(x.shape, generators, x), rhos[j + 1], sigma_c, sigma_n, project)
            x = pyr.resize.up(x0_hat) if stage > 0 else x0_hat
        return x0_hat

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], negative_prompt: str | list[str] | None = None,
                 num_frames: int | None = None, height: int | None = None, width: int | None = None,
                 schedule: str | None = None, guidance_scale: float | None = None, shift=None,
                 fewstep: bool | None = None, fewstep_levels: list[list[float]] | None = None,
                 seed: int | None = None, generator: torch.Generator | list[torch.Generator] | None = None,
                 max_sequence_length: int | None = None, output_type: str = "np", return_dict: bool = True):
        """Generate videos. Every argument left ``None`` takes the model's default from ``pyramid``.

        ``seed``: prompt ``i`` uses ``torch.Generator("cpu").manual_seed(seed + i)`` (pyrawan's rule);
        or pass ``generator``, one CPU generator per prompt. ``schedule``: steps per stage, coarsest
        first. ``fewstep``: the distilled sampler (default: when the model has few-step levels).
        ``output_type="latent"``: the normalised latents ``[B, 16, T, H, W]`` (float32, CPU).
        """
        spec = self.config.pyramid
        defaults, video = spec["sampling"], spec["video"]
        pyr = Pyramid(spec)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if generator is None:
            seed = int(torch.randint(0, 2**31 - 1, ()).item()) if seed is None else int(seed)
            generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(len(prompts))]
        else:
            generators = list(generator) if isinstance(generator, (list, tuple)) else [generator]
            if len(generators) != len(prompts):
                raise ValueError(f"{len(prompts)} prompts need {len(prompts)} generators (one per prompt), or pass seed")
        frames, height, width = (num_frames or video["frames"], height or video["height"], width or video["width"])
        steps = parse_schedule(schedule or defaults["schedule"], pyr.stages)
        guidance = float(defaults["guidance"] if guidance_scale is None else guidance_scale)
        levels = fewstep_levels if fewstep_levels is not None else defaults.get("fewstep_levels")
        fewstep = levels is not None if fewstep is None else fewstep
        if fewstep:
            given = [list(r) for r in levels] if levels else None
            levels = given if given and [len(r) for r in given] == steps else [[1.0 - j / n for j in range(n)]
                                                                                for n in steps]
        shift = defaults.get("shift", 1.0) if shift is None else shift
        length = int(max_sequence_length or defaults.get("max_sequence_length", 512))
        if guidance > 1:
            neg = defaults.get("negative_prompt", "") if negative_prompt is None else negative_prompt
            negative = [neg] * len(prompts) if isinstance(neg, str) else list(neg)
        else:
            negative = None
        param = next(self.text_encoder.parameters())
        cond, uncond = self.encode_prompt(prompt=prompts, negative_prompt=negative,
                                          do_classifier_free_guidance=negative is not None, num_videos_per_prompt=1,
                                          max_sequence_length=length, device=param.device, dtype=param.dtype)
        shapes = pyr.shapes(frames, height, width)
        first = next(pyr.stages - 1 - k for k, n in enumerate(steps) if n)
        noise = torch.cat([torch.randn((1, 16, *shapes[first]), generator=g, dtype=torch.float32) for g in generators])
        device = next(self.transformer.parameters()).device
        velocity = lambda x, sigma: self._velocity(x, sigma, cond, uncond, guidance)  # noqa: E731
        with self.progress_bar(total=sum(steps)) as bar, torch.inference_mode():
            if fewstep:
                x = self._fewstep(velocity, noise.to(device), pyr, levels, generators, bar.update)
            else:
                x = self._multistep(velocity, noise.to(device), pyr, steps, shift, generators, bar.update)
        latents = x.float().cpu()
        if output_type == "latent":
            video = latents
        else:
            vae = self.vae
            z = latents.to(next(vae.parameters()).device, vae.dtype)
            mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(z.device, z.dtype)
            std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(z.device, z.dtype)
            video = self.video_processor.postprocess_video(vae.decode(z * std + mean, return_dict=False)[0],
                                                           output_type=output_type)
        self.maybe_free_model_hooks()
        return WanPipelineOutput(frames=video) if return_dict else (video,)
