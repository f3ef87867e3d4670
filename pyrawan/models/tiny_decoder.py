"""A tiny causal video decoder (TAEHV-style): conv-only, distilled to match a Wan VAE's decoder.

The module follows the decoder of TAEHV (madebyollin/taehv, ``taew2_1`` for Wan 2.1): 2-D 3×3
convolutions applied per frame, ``MemBlock``s that see the same block's input of the previous frame
(zeros before the first), nearest-neighbour ``Upsample`` in space and ``TGrow`` in time (a 1×1
convolution to ``stride`` × the channels, split into ``stride`` frames). No attention and no norm,
so it costs a small fraction of the VAE's 3-D decoder and streams frame by frame. Its parameter
names are TAEHV's ``decoder.<index>.…`` keys (an ``nn.Sequential`` in the same order), so the
published ``taew2_1`` weights load (``load_weights``); the widths are ``TinyDecoderConfig.channels``.

Input: *raw* (un-normalised) VAE latents, as TAEHV takes them; ``decode`` takes pyrawan's
model-space latents and de-normalises them with the ``latents_mean`` / ``latents_std`` of the VAE the
decoder was distilled from (held in its config). Frames: TAEHV emits ``4 T`` frames for ``T`` latent
frames and drops the first 3, which is Wan's ``4 (T - 1) + 1``; latent frame ``t >= 1`` first shows in
output frame ``4 t - 3`` and nothing of it reaches earlier frames.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import nn

from pyrawan.errors import InputError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "decoder.safetensors"
DECODER_DIR = "decoder"                 # the component's subfolder in a model artifact
BLOCKS_PER_LEVEL = 3
CPU_CHUNK_BYTES = 12 * 2**20            # largest activation per group of videos decoded together on the CPU

# Wan 2.1's VAE statistics (diffusers' AutoencoderKLWan defaults; the raw latents TAEHV reads).
WAN21_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
              0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
             3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.916)


class TinyDecoderConfig(BaseModel):
    """Widths, up-sampling factors and latent statistics of a tiny decoder (default: TAEHV's ``taew2_1``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    latent_channels: int = Field(16, ge=1, le=1024)
    channels: tuple[int, int, int, int] = Field((256, 128, 64, 64), description=(
        "Widths of the three levels and of the last convolution (taew2_1: 256, 128, 64, 64)."))
    time_upscale: tuple[bool, bool, bool] = (False, True, True)
    space_upscale: tuple[bool, bool, bool] = (True, True, True)
    clamp: float = Field(3.0, gt=0, le=1000.0, description=(
        "Bound of the soft clamp of the raw input latents, clamp * tanh(x / clamp) (taew2_1: 3). Raw values "
        "past it are squashed; a VAE whose raw latents reach further needs a larger bound (docs/decoder.md)."))
    latents_mean: tuple[float, ...] = WAN21_MEAN
    latents_std: tuple[float, ...] = WAN21_STD

    @model_validator(mode="after")
    def _rules(self) -> "TinyDecoderConfig":
        if any(c < 1 or c > 4096 for c in self.channels):
            raise ValueError(f"channels {list(self.channels)} must each lie in [1, 4096]")
        if len(self.latents_mean) != self.latent_channels or len(self.latents_std) != self.latent_channels:
            raise ValueError(f"latents_mean and latents_std need {self.latent_channels} values each (one per latent "
                             f"channel), not {len(self.latents_mean)} and {len(self.latents_std)}")
        if any(s <= 0 for s in self.latents_std):
            raise ValueError("every latents_std value must be > 0")
        return self

    @property
    def time_factor(self) -> int:
        return 2 ** sum(self.time_upscale)

    @property
    def space_factor(self) -> int:
        return 2 ** sum(self.space_upscale)


# ---- the blocks (TAEHV's names) ------------------------------------------------------------------

def conv(n_in: int, n_out: int, bias: bool = True) -> nn.Conv2d:
    """3×3 convolution, same size."""
    return nn.Conv2d(n_in, n_out, 3, padding=1, bias=bias)


class Clamp(nn.Module):
    """Soft clamp of the input latents to about ``±bound``: ``bound tanh(x / bound)`` (TAEHV: bound 3)."""

    def __init__(self, bound: float = 3.0):
        super().__init__()
        self.bound = bound

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / self.bound) * self.bound


class MemBlock(nn.Module):
    """Residual block over ``[x, past]``: ``relu(convs(cat(x, past)) + skip(x))``; ``past`` is this block's
    input at the previous frame (zeros at the first)."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.conv = nn.Sequential(conv(2 * n_in, n_out), nn.ReLU(inplace=True), conv(n_out, n_out), nn.ReLU(inplace=True),
                                  conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(torch.cat([x, past], 1)) + self.skip(x))


class TGrow(nn.Module):
    """Temporal up-sampling: ``[N*T, C, H, W]`` -> ``[N*T*stride, C, H, W]`` (a 1×1 conv to ``stride*C``, split)."""

    def __init__(self, n_f: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n_f, n_f * stride, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        return self.conv(x).reshape(-1, channels, *x.shape[2:])


def previous_frames(x: torch.Tensor, batch: int) -> torch.Tensor:
    """Each frame's predecessor (zeros for the first): ``[N*T, C, H, W]`` -> same shape."""
    video = x.reshape(batch, -1, *x.shape[1:])
    return torch.cat([torch.zeros_like(video[:, :1]), video[:, :-1]], 1).reshape(x.shape)


def run_blocks(blocks: nn.Sequential, x: torch.Tensor, trim: int = 0) -> torch.Tensor:
    """Apply ``blocks`` to a video ``[N, T, C, H, W]``, all frames at once, memory blocks fed their past;
    the first ``trim`` output frames are dropped.

    Two reorderings give the same result for less work: a ``TGrow`` right after an ``Upsample`` runs
    first (a 1×1 convolution commutes with nearest-neighbour up-sampling), and the frames to drop go
    as soon as no memory block follows (later layers act on each frame alone).
    """
    batch, layers = x.shape[0], list(blocks)
    h = x.reshape(-1, *x.shape[2:])
    last_memory = max((i for i, b in enumerate(layers) if isinstance(b, MemBlock)), default=-1)
    i = 0
    while i < len(layers):
        block = layers[i]
        if isinstance(block, nn.Upsample) and i + 1 < len(layers) and isinstance(layers[i + 1], TGrow):
            h, i = block(layers[i + 1](h)), i + 1
        else:
            h = block(h, previous_frames(h, batch)) if isinstance(block, MemBlock) else block(h)
        if trim and i > last_memory and h.shape[0] // batch > trim and isinstance(layers[i], TGrow):
            h = h.reshape(batch, -1, *h.shape[1:])[:, trim:].reshape(-1, *h.shape[1:])
            trim = 0
        i += 1
    h = h.reshape(batch, -1, *h.shape[1:])
    return h[:, trim:]


# ---- the decoder ---------------------------------------------------------------------------------

def decoder_layers(c: TinyDecoderConfig) -> list[nn.Module]:
    """TAEHV's decoder sequence: clamp, conv, then per level 3 MemBlocks, Upsample, TGrow, conv; ReLU, conv."""
    n = c.channels
    layers: list[nn.Module] = [Clamp(c.clamp), conv(c.latent_channels, n[0]), nn.ReLU(inplace=True)]
    for level in range(3):
        layers += [MemBlock(n[level], n[level]) for _ in range(BLOCKS_PER_LEVEL)]
        layers += [nn.Upsample(scale_factor=2 if c.space_upscale[level] else 1),
                   TGrow(n[level], 2 if c.time_upscale[level] else 1), conv(n[level], n[level + 1], bias=False)]
    return layers + [nn.ReLU(inplace=True), conv(n[3], 3)]


class TinyDecoder(nn.Module):
    """Raw latents ``[B, T, C, h, w]`` -> frames ``[B, 4(T-1)+1, 3, 8h, 8w]`` (for the default factors)."""

    def __init__(self, config: TinyDecoderConfig | None = None):
        super().__init__()
        self.config = config or TinyDecoderConfig()
        self.decoder = nn.Sequential(*decoder_layers(self.config))

    @property
    def frames_to_trim(self) -> int:
        return self.config.time_factor - 1

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw latents ``[B, T, C, h, w]`` -> unclamped frames ``[B, F, 3, H, W]`` (about [0, 1]; training reads these)."""
        return run_blocks(self.decoder, latents, self.frames_to_trim)

    def raw_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Model-space latents ``[B, C, T, h, w]`` -> raw latents ``[B, T, C, h, w]`` (``z * std + mean``)."""
        shape = (1, -1, 1, 1, 1)
        mean = torch.tensor(self.config.latents_mean, dtype=latents.dtype, device=latents.device).view(shape)
        std = torch.tensor(self.config.latents_std, dtype=latents.dtype, device=latents.device).view(shape)
        return (latents * std + mean).transpose(1, 2)

    def largest_activation_bytes(self, latents: torch.Tensor) -> int:
        """Bytes of the largest tensor one video of ``latents`` ``[B, C, T, h, w]`` makes: the last level's
        up-sampled input, ``time_factor T`` frames of ``max(C2, C3)`` channels at full resolution (float32)."""
        c = self.config
        _, _, t, h, w = latents.shape
        return 4 * t * c.time_factor * max(c.channels[2:]) * h * w * c.space_factor ** 2

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Model-space latents ``[B, C, T, h, w]`` -> video ``[B, F, 3, H, W]`` float32 in [0, 1]
        (``decode_latents``' contract).

        On the CPU the videos go through in groups whose largest activation stays under ``CPU_CHUNK_BYTES``
        (each video is decoded alone, so the frames are the same): a fresh tensor larger than that is
        mapped from the system page by page on every call, which made a batch of 16 toy videos 1.7x slower
        per video than groups of 1 or 2 (docs/decoder.md)."""
        param = next(self.parameters())
        group = len(latents)
        if param.device.type == "cpu":
            group = max(1, CPU_CHUNK_BYTES // max(1, self.largest_activation_bytes(latents)))
        frames = [self(self.raw_latents(part.to(param.device, param.dtype))).float().clamp(0, 1)
                  for part in latents.split(group)]
        return torch.cat(frames).contiguous()


# ---- files ---------------------------------------------------------------------------------------

def parse_config(data: object, source: str) -> TinyDecoderConfig:
    """A tiny decoder's config from JSON data; an ``InputError`` naming ``source`` and the bad key."""
    try:
        return TinyDecoderConfig.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise InputError(f"{source}: the tiny decoder config is not valid at {where}: {first['msg']}. Write the "
                         "config of the decoder the weights belong to (pyrawan saves it next to decoder.safetensors)."
                         ) from None


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a ``.pth`` state dict loaded with ``weights_only`` (no code runs)."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise InputError(f"tiny decoder weights {path} do not exist; give a .safetensors or .pth file (e.g. TAEHV's "
                         "taew2_1.safetensors) or a decoder folder written by `pyrawan distill` (decoder/).")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:     # noqa: BLE001 - any unpickling problem is the file's
        raise InputError(f"tiny decoder weights {path} do not load as a plain state dict with weights_only=True "
                         f"({type(err).__name__}: {str(err)[:160]}); convert them to safetensors.") from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise InputError(f"tiny decoder weights {path} hold no state dict of tensors; give TAEHV's .pth or a "
                         ".safetensors file.")
    return state


def decoder_state(state: dict[str, torch.Tensor], model: TinyDecoder, source: str) -> dict[str, torch.Tensor]:
    """The ``decoder.*`` tensors of a (TAEHV) state dict, checked against ``model``'s names and shapes.

    A TAEHV checkpoint also holds ``encoder.*`` (ignored). A ``TGrow`` weight with more output
    channels than this decoder's (a time-upsampling level turned off) keeps the last frame's channels,
    as TAEHV does.
    """
    own = model.state_dict()
    kept = {k: v for k, v in state.items() if k.startswith("decoder.")}
    missing, extra = sorted(set(own) - set(kept)), sorted(set(kept) - set(own))
    if missing or extra:
        raise InputError(f"{source}: the weights do not fit the tiny decoder's layout (TAEHV's decoder.* names): "
                         f"{len(missing)} missing (e.g. {missing[:3]}), {len(extra)} unexpected (e.g. {extra[:3]}). "
                         "Give TAEHV Wan 2.1 weights (taew2_1) or a decoder written by pyrawan, with its config.")
    for key, value in kept.items():
        if isinstance(model.get_submodule(key.rsplit(".", 2)[0]), TGrow) and value.shape[0] > own[key].shape[0]:
            kept[key] = value[-own[key].shape[0]:]
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in kept.items() if v.shape != own[k].shape]
    if wrong:
        raise InputError(f"{source}: tensor shapes differ from the tiny decoder config's ({'; '.join(wrong[:3])}); "
                         "the config's channels must match the weights (taew2_1: 256, 128, 64, 64).")
    return kept


def load_weights(path: Path, config: TinyDecoderConfig | None = None) -> TinyDecoder:
    """A tiny decoder from a weights file (safetensors, or a ``.pth`` state dict) and ``config`` (default: taew2_1)."""
    model = TinyDecoder(config)
    model.load_state_dict(decoder_state(read_state(Path(path)), model, str(path)), strict=True)
    return model.eval().requires_grad_(False)


def load_folder(folder: Path) -> TinyDecoder:
    """A tiny decoder from a folder with ``config.json`` and ``decoder.safetensors`` (as ``save_folder`` writes)."""
    folder = Path(folder)
    try:
        data = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{folder / CONFIG_FILE} cannot be read as JSON ({err}); a tiny decoder folder holds "
                         f"{CONFIG_FILE} and {WEIGHTS_FILE}.") from None
    return load_weights(folder / WEIGHTS_FILE, parse_config(data, str(folder / CONFIG_FILE)))


def save_folder(model: TinyDecoder, folder: Path) -> list[Path]:
    """Write ``folder/decoder.safetensors`` and ``folder/config.json``; returns both paths."""
    from safetensors.torch import save_file

    from pyrawan.fsutil import atomic_path, atomic_write_text

    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file({k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    config = atomic_write_text(folder / CONFIG_FILE, json.dumps(model.config.model_dump(mode="json"), indent=1) + "\n")
    return [folder / WEIGHTS_FILE, config]


def vae_statistics(vae) -> dict[str, tuple[float, ...]]:
    """``latents_mean`` / ``latents_std`` of a Wan VAE, for the config of a decoder distilled from it."""
    return {"latents_mean": tuple(float(v) for v in vae.config.latents_mean),
            "latents_std": tuple(float(v) for v in vae.config.latents_std)}
