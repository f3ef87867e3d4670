"""`denoise`: the one transformer call (guidance, per-sample per-frame levels, hidden states of blocks)."""
import pytest
import torch

from pyrawan.errors import InputError
from pyrawan.models.denoiser import Velocity, denoise
from pyrawan.models.presets import build_preset

pytestmark = pytest.mark.usefixtures("one_thread")


def test_guidance_levels_and_block_states():
    model = build_preset("tiny").transformer
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 3, 4, 4, generator=gen)
    cond, uncond = torch.randn(2, 8, 32, generator=gen), torch.randn(1, 8, 32, generator=gen)
    levels = torch.tensor([[0.2, 0.4, 0.4], [0.7, 0.9, 0.9]])
    with torch.no_grad():
        guided = denoise(model, x, levels, cond, uncond, guidance=3.0)
        c = denoise(model, x, levels, cond)
        u = denoise(model, x, levels, uncond.expand(2, -1, -1))
        rows = torch.cat([denoise(model, x[i:i + 1], levels[i], cond[i:i + 1]) for i in range(2)])
        v, hidden = denoise(model, x, levels, cond, uncond, guidance=3.0, blocks=(0, 1))
    torch.testing.assert_close(guided, u + 3.0 * (c - u), atol=1e-5, rtol=1e-5)   # standard CFG form
    torch.testing.assert_close(c, rows, atol=1e-5, rtol=1e-5)                     # [B, T] = one call per row
    torch.testing.assert_close(v, guided)
    tokens = 3 * 2 * 2                                                            # patches (1, 2, 2)
    assert [h.shape for h in hidden] == [(2, tokens, model.config.num_attention_heads *
                                          model.config.attention_head_dim)] * 2
    assert not torch.allclose(hidden[0], hidden[1])
    with torch.no_grad():
        assert torch.equal(Velocity(model, cond, uncond, 3.0)(x, levels), guided)


def test_a_latent_longer_than_the_position_table_is_refused_with_the_fix(tiny_components, tiny_text):
    """The tiny transformer's RoPE covers 64 positions per axis: a wider latent is an InputError, not a crash."""
    wide = torch.zeros(1, 16, 1, 2, 130)                       # token grid 1 x 1 x 65
    with pytest.raises(InputError, match=r"token grid of 1x1x65.*rope_max_seq_len = 64.*--frames/--height/--width"):
        denoise(tiny_components.transformer, wide, torch.tensor(0.5), tiny_text[0][:1])
