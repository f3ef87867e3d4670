"""Built-in model presets: a tiny random Wan2.1 stack for tests and real architectures for benchmarks.

``build_preset("tiny")`` returns a complete offline stack (tokenizer, UMT5 text encoder, Wan VAE,
Wan transformer) whose weights depend only on the seed. ``build_transformer`` builds a transformer
of a named architecture with random weights or on the meta device (for FLOP counting).
"""
from __future__ import annotations

import string
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from transformers import T5Tokenizer, UMT5Config, UMT5EncoderModel

from pyrawan.errors import InputError

COMPONENT_NAMES = ("tokenizer", "text_encoder", "vae", "transformer")

_WAN_COMMON = dict(
    patch_size=(1, 2, 2), in_channels=16, out_channels=16, freq_dim=256, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
)

# Transformer architectures. "tiny": per-axis RoPE table of 64 positions, so post-patch latents up
# to 64 x 64 x 64 fit (the tiny recipe uses 5x8x8, 3x4x4, 2x2x2 latents; 9x32x32 latents also fit).
TRANSFORMER_ARCHS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=16,
        out_channels=16, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=64,
    ),
    # "toy": the toy-world teacher (pyrawan/models/toy.py; weights in pyrawan/toy/weights/). 1x1 patches:
    # 8x8 tokens per latent frame, so an object spans 1.3-2.4 tokens (docs/toy-world.md).
    "toy": dict(
        patch_size=(1, 1, 1), num_attention_heads=4, attention_head_dim=32, in_channels=16,
        out_channels=16, text_dim=32, freq_dim=64, ffn_dim=256, num_layers=4, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=64,
    ),
    "wan1.3b": dict(_WAN_COMMON, num_attention_heads=12, attention_head_dim=128, text_dim=4096,
                    ffn_dim=8960, num_layers=30),
    "wan14b": dict(_WAN_COMMON, num_attention_heads=40, attention_head_dim=128, text_dim=4096,
                   ffn_dim=13824, num_layers=40),
}

# Tiny VAE: spatial factor 2**(len(dim_mult)-1) = 8, temporal 2**2 = 4, as in the real Wan VAE.
TINY_VAE: dict[str, Any] = dict(
    base_dim=4, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
    temperal_downsample=[False, True, True], scale_factor_temporal=4, scale_factor_spatial=8,
)

TINY_TEXT_ENCODER: dict[str, Any] = dict(
    vocab_size=256, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
    relative_attention_num_buckets=8, relative_attention_max_distance=16,
    feed_forward_proj="gated-gelu", dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
    decoder_start_token_id=0,
)

_TINY_WORDS = (
    "a an the of in on at to and with is are cat dog bird fish man woman person car tree sky sea "
    "water park city street red blue green white black runs walks jumps flies swims video slowly "
    "fast camera blurry low quality"
).split()

PRESETS = ("tiny", "toy")


@dataclass
class WanComponents:
    """The four parts of a Wan2.1 text-to-video model plus where each came from.

    ``source`` maps a component name (``tokenizer``, ``text_encoder``, ``vae``, ``transformer``)
    to a small JSON-able dict: ``{"preset", "seed"}``, ``{"path", "subfolder"}``,
    ``{"repo_id", "revision", "path", "subfolder"}`` or ``{"file", ...}``.
    """

    tokenizer: Any
    text_encoder: torch.nn.Module
    vae: AutoencoderKLWan
    transformer: WanTransformer3DModel
    source: dict[str, dict[str, Any]] = field(default_factory=dict)

    def modules(self) -> dict[str, torch.nn.Module]:
        """The three ``nn.Module`` components by name."""
        return {"text_encoder": self.text_encoder, "vae": self.vae, "transformer": self.transformer}


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed the CPU RNG inside the block and restore the caller's RNG state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def cast_keep_fp32(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast floating parameters/buffers to ``dtype`` except the model's ``_keep_in_fp32_modules``.

    Same rule as diffusers' ``from_pretrained(torch_dtype=...)``: a tensor stays fp32 when one of
    its dotted name parts is listed in ``_keep_in_fp32_modules``. Casts tensor by tensor, in place.
    """
    keep = set(getattr(module, "_keep_in_fp32_modules", None) or [])
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if not tensor.is_floating_point():
            continue
        target = torch.float32 if keep.intersection(name.split(".")) else dtype
        if tensor.dtype != target:
            tensor.data = tensor.data.to(target)
    return module


def arch_config(arch: str) -> dict[str, Any]:
    """Config dict of a transformer architecture preset, or ``InputError`` naming the choices."""
    if arch not in TRANSFORMER_ARCHS:
        raise InputError(
            f"Unknown transformer architecture {arch!r}. Choose one of "
            f"{', '.join(sorted(TRANSFORMER_ARCHS))} (e.g. '--model wan1.3b-random' uses 'wan1.3b')."
        )
    return dict(TRANSFORMER_ARCHS[arch])


def build_transformer(
    arch: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    empty: bool = False,
    seed: int = 0,
) -> WanTransformer3DModel:
    """A ``WanTransformer3DModel`` of architecture ``arch`` with random weights.

    ``empty=True`` builds every tensor on the meta device (no memory; for shape and FLOP counting).
    Otherwise the model is initialised directly on ``device`` in fp32 and then cast tensor by
    tensor to ``dtype``, keeping diffusers' fp32 modules (peak memory = the fp32 model).
    """
    cfg = arch_config(arch)
    if empty:
        with torch.device("meta"):
            model = WanTransformer3DModel(**cfg)
        return cast_keep_fp32(model, dtype).eval()
    with seeded(seed), torch.device(device):
        model = WanTransformer3DModel(**cfg)
    return cast_keep_fp32(model, dtype).eval()


def tiny_tokenizer() -> T5Tokenizer:
    """Offline Unigram ``T5Tokenizer`` covering every printable ASCII character.

    Pieces: specials (pad 0, eos 1, unk 2), the word-start marker, some whole words, and each
    printable ASCII character, so any ASCII prompt tokenises; other characters map to ``<unk>``.
    """
    chars = [c for c in string.printable if not c.isspace()]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -3.0) for w in _TINY_WORDS]
    vocab += [(c, -5.0) for c in chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def _tiny_module(component: str, seed: int) -> torch.nn.Module:
    """One tiny module, seeded per component so each is independent of build order."""
    offset = {"text_encoder": 1, "vae": 2, "transformer": 3}[component]
    with seeded(seed * 1000 + offset):
        if component == "text_encoder":
            return UMT5EncoderModel(UMT5Config(**TINY_TEXT_ENCODER)).eval()
        if component == "vae":
            return AutoencoderKLWan(**TINY_VAE).eval()
        return WanTransformer3DModel(**TRANSFORMER_ARCHS["tiny"]).eval()


def build_preset(
    name: str,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    vae_dtype: torch.dtype | None = torch.float32,
) -> WanComponents:
    """Build a preset stack. Same ``name`` and ``seed`` give bit-identical weights.

    ``dtype`` applies to the text encoder and transformer, ``vae_dtype`` (default fp32, as
    diffusers recommends for the Wan VAE; ``None`` = ``dtype``) to the VAE.
    """
    if name not in PRESETS:
        raise InputError(f"Unknown model preset {name!r}. The presets are: {', '.join(PRESETS)}.")
    if name == "toy":
        from pyrawan.models import toy

        tokenizer = toy.toy_tokenizer()
        mods = {c: toy.toy_module(c, seed, seeded) for c in ("text_encoder", "vae", "transformer")}
    else:
        tokenizer = tiny_tokenizer()
        mods = {c: _tiny_module(c, seed) for c in ("text_encoder", "vae", "transformer")}
    if len(tokenizer) > mods["text_encoder"].config.vocab_size:
        raise RuntimeError(f"the {name} tokenizer is larger than its text encoder's vocabulary")
    for comp, mod in mods.items():
        target = (vae_dtype or dtype) if comp == "vae" else dtype
        cast_keep_fp32(mod, target).to(device)
    source = {c: {"preset": name, "seed": seed} for c in COMPONENT_NAMES}
    return WanComponents(tokenizer=tokenizer, source=source, **mods)
