"""The batched sampling core (pyrawan.models.generate): batch invariance, coupled noise, the CPU compile path."""
from __future__ import annotations

import math

import pytest
import torch

from pyrawan.errors import InputError
from pyrawan.models.artifact import LoadedModel
from pyrawan.models.generate import Plan, generate_batches, generate_videos, initial_noise
from pyrawan.pyramid.config import PyramidConfig
from pyrawan.pyramid.geometry import block_sizes
from pyrawan.pyramid.sampler import randn

VIDEO = {"frames": 17, "height": 64, "width": 64, "fps": 16}        # latents 5x8x8 / 3x4x4 / 2x2x2
PROMPTS = ["a red square moving left", "a blue circle moving up", "a green triangle"]
SEEDS = [3, 11, 12]


def plan(stages: int = 3, steps=(2, 2, 1), guidance: float = 3.0, levels=None, shift=3.0) -> Plan:
    return Plan(pyramid=PyramidConfig(num_stages=stages), steps=tuple(steps), shift=shift, guidance=guidance,
                negative_prompt="blurry", levels=levels, video=dict(VIDEO), max_sequence_length=16)


@pytest.fixture(scope="module")
def tiny_model(tiny_components) -> LoadedModel:
    return LoadedModel(components=tiny_components, spec=None, path=None)


@pytest.mark.parametrize("levels", [None, [[1.0], [1.0], [1.0]]], ids=["multistep-2-2-1", "fewstep-1-1-1"])
def test_a_sample_does_not_depend_on_its_batch(tiny_model, one_thread, levels):
    p = plan(steps=(2, 2, 1) if levels is None else (1, 1, 1), levels=levels)
    calls = []
    together, frames = generate_videos(tiny_model, p, PROMPTS, SEEDS, batch_size=3, advance=calls.append)
    alone, _ = generate_videos(tiny_model, p, PROMPTS, SEEDS, batch_size=1, decode=False)
    assert together.shape == (3, 16, 5, 8, 8) and together.dtype == torch.float32
    assert frames.shape == (3, 17, 3, 64, 64) and 0 <= frames.min() and frames.max() <= 1
    assert calls == [3] * p.nfe                                          # one progress tick of 3 per step
    assert torch.allclose(together, alone, atol=1e-5, rtol=0), (together - alone).abs().max()
    # one prompt with two seeds: two different samples
    swapped, _ = generate_videos(tiny_model, p, PROMPTS[:1] * 2, [SEEDS[0], SEEDS[0] + 1], batch_size=2, decode=False)
    assert not torch.allclose(swapped[0], swapped[1], atol=1e-3)


def test_generate_batches_yields_positions_and_checks_its_arguments(tiny_model, one_thread):
    p = plan(stages=1, steps=(1,), guidance=1.0)
    parts = list(generate_batches(tiny_model, p, PROMPTS, SEEDS, batch_size=2, decode=False))
    assert [list(r) for r, _, _ in parts] == [[0, 1], [2]]
    assert all(frames is None for _, _, frames in parts)
    with pytest.raises(InputError, match="seeds"):
        next(generate_batches(tiny_model, p, PROMPTS, SEEDS[:2]))
    with pytest.raises(InputError, match="batch-size"):
        next(generate_batches(tiny_model, p, PROMPTS, SEEDS, batch_size=0))


def test_list_of_generators_draws_each_sample_from_its_own_seed():
    like = torch.zeros(())
    drawn = randn((3, 2, 4), [torch.Generator().manual_seed(s) for s in SEEDS], like)
    for b, s in enumerate(SEEDS):
        assert torch.equal(drawn[b:b + 1], torch.randn((1, 2, 4), generator=torch.Generator().manual_seed(s)))


def test_plain_noise_is_drawn_at_the_first_stage_with_steps():
    noise, gens = initial_noise(plan(steps=(2, 2, 1)), SEEDS)
    assert noise.shape == (3, 16, 2, 2, 2) and len(gens) == 3
    assert torch.equal(noise[1:2], torch.randn((1, 16, 2, 2, 2), generator=torch.Generator().manual_seed(SEEDS[1])))
    skip, _ = initial_noise(plan(steps=(0, 3, 1)), SEEDS)
    assert skip.shape == (3, 16, 3, 4, 4)


def test_coupled_noise_is_sqrt_m_times_down_of_the_full_resolution_draw():
    p = plan(steps=(2, 2, 1))
    coupled, _ = initial_noise(p, SEEDS, coupled=True)
    resize = p.pyramid.resize
    for b, seed in enumerate(SEEDS):
        eps = torch.randn((1, 16, 5, 8, 8), generator=torch.Generator().manual_seed(seed))
        for _ in range(2):                                  # stage 0 -> 1 -> 2, sqrt(m) per coarse frame
            eps = resize.down(eps)
            eps = eps * block_sizes(eps.shape[-3], False).sqrt().view(1, 1, -1, 1, 1).float()
        assert torch.allclose(coupled[b:b + 1], eps, atol=1e-6)
    plain, _ = initial_noise(p, SEEDS)
    assert not torch.allclose(coupled, plain)
    # the first stage is full resolution, or the model has one stage: coupled == plain
    for q in (plan(steps=(0, 0, 4)), plan(stages=1, steps=(4,))):
        assert torch.equal(initial_noise(q, SEEDS, coupled=True)[0], initial_noise(q, SEEDS)[0])


def test_coupled_noise_is_white_with_unit_variance():
    seeds = list(range(400))
    noise, _ = initial_noise(plan(steps=(2, 2, 1)), seeds, coupled=True)       # [400, 16, 2, 2, 2]
    flat = noise.flatten(1).double()                                            # 128 coordinates per sample
    n = flat.shape[0]
    assert abs(flat.mean().item()) < 4 / math.sqrt(flat.numel())
    var = flat.var(0)                                                           # per coordinate, over samples
    assert (var - 1).abs().max().item() < 0.35 and abs(var.mean().item() - 1) < 0.04
    cov = torch.cov(flat.T)                                                     # [128, 128]
    off = cov - torch.diag(torch.diag(cov))
    assert off.abs().max().item() < 6 / math.sqrt(n)                          # uncorrelated coordinates


@pytest.mark.slow
def test_compiled_transformer_gives_the_eager_outputs(tiny_model, one_thread):
    from pyrawan.models.generate import compiled

    try:
        import torch._inductor.config  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the torch build
        pytest.skip(f"torch.compile is not available in this torch build ({err})")
    p = plan(stages=1, steps=(2,), guidance=3.0)
    eager, _ = generate_videos(tiny_model, p, PROMPTS[:2], SEEDS[:2], batch_size=2, decode=False)
    fast, _ = generate_videos(compiled(tiny_model), p, PROMPTS[:2], SEEDS[:2], batch_size=2, decode=False)
    assert torch.allclose(eager, fast, atol=1e-4, rtol=0), (eager - fast).abs().max()


def test_channels_last_decode_gives_the_same_video_and_restores_the_weights(tiny_components, one_thread):
    from pyrawan.models.vae import decode_latents

    vae = tiny_components.vae
    convs = [m for m in vae.modules() if isinstance(m, torch.nn.Conv3d)]
    before = [(c.weight.data_ptr(), c.weight.stride()) for c in convs]
    z = torch.randn(3, 16, 5, 8, 8, generator=torch.Generator().manual_seed(2))
    plain = decode_latents(vae, z, layout_channels_last=False)
    fast = decode_latents(vae, z, layout_channels_last=True)
    chunked = decode_latents(vae, z, chunk=2)
    assert plain.shape == (3, 17, 3, 64, 64)
    assert torch.allclose(plain, fast, atol=1e-5) and torch.allclose(plain, chunked, atol=1e-5)
    assert [(c.weight.data_ptr(), c.weight.stride()) for c in convs] == before
