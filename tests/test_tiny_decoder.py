"""The tiny decoder: frame contract, causality, TAEHV's weight layout, training, exact resume, sample and previews."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pyrawan.errors import InputError
from pyrawan.models.tiny_decoder import (TGrow, TinyDecoder, TinyDecoderConfig, load_folder, load_weights,
                                         save_folder, vae_statistics)
from pyrawan.train.decoder import decoder_loss

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = (8, 8, 8, 8)


def small_decoder(seed: int = 0, **stats) -> TinyDecoder:
    torch.manual_seed(seed)
    return TinyDecoder(TinyDecoderConfig(channels=SMALL, **stats)).eval()


def test_frames_and_range_follow_the_vae_decode_contract(tiny_components):
    from pyrawan.models.vae import decode_latents

    latents = torch.randn(2, 16, 3, 4, 4)
    vae = decode_latents(tiny_components, latents)
    tiny = small_decoder(**vae_statistics(tiny_components.vae)).decode(latents)
    assert tiny.shape == vae.shape == (2, 9, 3, 32, 32)             # 4 (T - 1) + 1 frames, 8x space
    assert tiny.dtype == torch.float32 and 0 <= float(tiny.min()) and float(tiny.max()) <= 1


def test_de_normalisation_uses_the_config_statistics():
    decoder = small_decoder(latents_mean=(1.0,) * 16, latents_std=(2.0,) * 16)
    z = torch.randn(1, 16, 2, 2, 2)
    assert torch.allclose(decoder.raw_latents(z), (z * 2 + 1).transpose(1, 2))


def test_a_latent_frame_reaches_no_earlier_output_frame():
    decoder = small_decoder()
    z = torch.randn(1, 16, 4, 4, 4)
    changed = z.clone()
    changed[:, :, 2] += 3.0                                          # latent frame 2 first shows in frame 4*2-3 = 5
    with torch.no_grad():
        a, b = decoder(decoder.raw_latents(z)), decoder(decoder.raw_latents(changed))
    diff = (a - b).abs().flatten(2).amax(2)[0]
    assert diff[:5].max() == 0 and diff[5] > 0 and diff[-1] > 0


def test_reordered_layers_equal_taehvs_plain_order():
    from pyrawan.models.tiny_decoder import MemBlock, previous_frames

    decoder = small_decoder()
    x = decoder.raw_latents(torch.randn(2, 16, 3, 4, 4))
    h = x.reshape(-1, *x.shape[2:])
    with torch.no_grad():
        for block in decoder.decoder:                                # TAEHV's order: upsample, then TGrow
            h = block(h, previous_frames(h, 2)) if isinstance(block, MemBlock) else block(h)
        plain = h.reshape(2, -1, *h.shape[1:])[:, 3:]
        assert torch.allclose(decoder(x), plain, atol=1e-6)


def published_state(extra_tgrow: bool = False) -> dict[str, torch.Tensor]:
    """Random tensors under every ``decoder.*`` name of the default (taew2_1) layout, plus encoder keys."""
    gen = torch.Generator().manual_seed(0)
    own = TinyDecoder().state_dict()
    state = {k: torch.randn(v.shape, generator=gen) * 0.01 for k, v in own.items()}
    state["encoder.0.weight"] = torch.randn(64, 3, 3, 3, generator=gen)
    if extra_tgrow:                                                  # a checkpoint with time-upsampling in level 0
        state["decoder.7.conv.weight"] = torch.randn(512, 256, 1, 1, generator=gen)
    return state


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_published_taehv_layout_loads(tmp_path, suffix):
    state = published_state(extra_tgrow=True)
    path = tmp_path / f"taew2_1{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    model = load_weights(path)
    loaded = model.state_dict()
    assert isinstance(model.decoder[7], TGrow) and model.decoder[7].stride == 1
    assert torch.equal(loaded["decoder.7.conv.weight"], state["decoder.7.conv.weight"][-256:])   # last frame's channels
    assert torch.equal(loaded["decoder.22.bias"], state["decoder.22.bias"])
    assert model.decode(torch.randn(1, 16, 2, 2, 2)).shape == (1, 5, 3, 16, 16)


def test_weights_of_another_layout_are_refused_by_name(tmp_path):
    state = published_state()
    del state["decoder.3.conv.0.weight"]
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(InputError, match=r"1 missing \(e.g. \['decoder.3.conv.0.weight'\]\)"):
        load_weights(tmp_path / "bad.safetensors")
    save_file(TinyDecoder(TinyDecoderConfig(channels=SMALL)).state_dict(), str(tmp_path / "small.safetensors"))
    with pytest.raises(InputError, match="channels must match"):
        load_weights(tmp_path / "small.safetensors")                 # right names, taew2_1 config: shapes differ


def test_saved_folder_round_trips(tmp_path):
    decoder = small_decoder(latents_mean=(0.5,) * 16, latents_std=(1.5,) * 16)
    save_folder(decoder, tmp_path / "dec")
    again = load_folder(tmp_path / "dec")
    assert again.config == decoder.config
    assert all(torch.equal(a, b) for a, b in zip(decoder.state_dict().values(), again.state_dict().values()))
    (tmp_path / "dec" / "config.json").write_text(json.dumps({"channels": [8, 8, 8]}))
    with pytest.raises(InputError, match="config.json: the tiny decoder config is not valid at channels"):
        load_folder(tmp_path / "dec")


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch(tiny_components):
    from pyrawan.models.vae import decode_latents

    latents = torch.randn(2, 16, 2, 2, 2)
    target = decode_latents(tiny_components, latents)
    decoder = small_decoder(**vae_statistics(tiny_components.vae)).train()
    opt = torch.optim.AdamW(decoder.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss, _ = decoder_loss(decoder(decoder.raw_latents(latents)), target, 0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


# ---- the distill run, sample and previews --------------------------------------------------------

OVERRIDES = ["base=tiny", "video.frames=5", "video.height=16", "video.width=16", "train.steps=4",
             "train.batch_size=2", "train.checkpoint.every=2", "train.validation.every=2", "train.validation.holdout=2",
             "train.ema.start_step=1", "distill.decoder.channels=[8,8,8,8]", "distill.decoder.target_batch=4"]


def decoder_recipe(*extra: str):
    from pyrawan.recipe import load_recipe

    return load_recipe("toy-decoder", [*OVERRIDES, *extra], kind="distill")


def test_decoder_run_resumes_bit_identical(tmp_path, monkeypatch):
    from pyrawan.commands import distill
    from test_resume_fast import assert_same, stopped_and_resumed

    from pyrawan.train.synthetic import for_recipe

    r = decoder_recipe()
    a = distill.run(r, tmp_path / "A", source=for_recipe(r, items=12), show_progress=False)
    b = stopped_and_resumed(distill.run, r, tmp_path, monkeypatch, step=2)
    assert_same(a, b, "loss")
    manifest = json.loads((a / "manifest.json").read_text())
    assert {"decoder/decoder.safetensors", "decoder/config.json"} <= {o["path"] for o in manifest["outputs"]}
    assert manifest["metrics"]["method"] == "decoder" and manifest["metrics"]["val_psnr"] > 0
    records = [json.loads(line) for line in (a / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "validation"] == [2, 4]


def test_decoder_recipe_needs_latents(tmp_path):
    from pyrawan.commands import distill

    with pytest.raises(InputError, match="needs real video latents"):
        distill.run(decoder_recipe("data.prompts=" + str(tmp_path / "p.txt")), tmp_path / "out")


@pytest.fixture(scope="module")
def tiny_pyramid(tmp_path_factory) -> Path:
    from pyrawan.commands import convert
    from pyrawan.recipe import load_recipe

    return convert.run(load_recipe("tiny", [], kind="convert"), tmp_path_factory.mktemp("pyr") / "pyr")


def test_sample_with_the_tiny_decoder_writes_previews_per_stage(tmp_path, tiny_pyramid, tiny_components):
    from pyrawan.commands.sample import SampleSettings, run
    from pyrawan.manifest import verify

    save_folder(small_decoder(**vae_statistics(tiny_components.vae)), tmp_path / "dec")
    settings = SampleSettings(prompts=["a red square", "a cat"], model=str(tiny_pyramid), schedule="1-1-1",
                              progress=False, batch_size=2, decoder="tiny", decoder_weights=str(tmp_path / "dec"),
                              previews=True)
    out = run(settings, tmp_path / "S")
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [len(r["previews"]) for r in rows] == [2, 2] and verify(out) == []
    from pyrawan.data.video import read_video

    coarse, _ = read_video(out / rows[0]["previews"][1])           # stage 2 of 17x64x64: latents 2x2x2 -> 5x16x16
    assert tuple(coarse.shape) == (5, 3, 16, 16) and json.loads((out / "manifest.json").read_text())["metrics"][
        "decoder"] == "tiny"


def test_tiny_without_a_decoder_names_the_fixes(tmp_path):
    from pyrawan.commands.sample import SampleSettings, run

    with pytest.raises(InputError, match="has no tiny decoder.*--decoder-weights"):
        run(SampleSettings(prompts=["a"], model="tiny", schedule="1", progress=False, decoder="tiny"), tmp_path / "S")


# ---- cost accounting -----------------------------------------------------------------------------

def test_analytic_decoder_flops_equal_the_meta_count():
    from torch.utils.flop_counter import FlopCounterMode

    from pyrawan.eval.decode_cost import tiny_decoder_flops

    config = TinyDecoderConfig(channels=(16, 8, 8, 4))
    with torch.device("meta"):
        module = TinyDecoder(config)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(torch.zeros(1, 3, 16, 4, 6, device="meta"))
    assert tiny_decoder_flops(config, (3, 4, 6)) == counter.get_total_flops()


def test_end_to_end_rows_add_text_and_decode_per_decoder():
    from pyrawan.eval.decode_cost import end_to_end_rows

    rows = [{"schedule": "0-0-50", "cfg_factor": 2, "total_ms": 100.0}, {"schedule": "2-2-1", "cfg_factor": 1, "total_ms": 5.0}]
    out = end_to_end_rows(rows, 100.0, (1.0, 1.5), {"vae": 20.0, "tiny": 1.0}, key="total_ms", scale=1.0)
    assert out[0]["end_to_end"] == {"vae": 121.5, "tiny": 102.5} and out[0]["ratio_to_baseline"]["vae"] == 1.0
    assert out[1]["end_to_end"] == {"vae": 26.0, "tiny": 7.0}
    assert out[1]["ratio_to_baseline"]["tiny"] == pytest.approx(7.0 / 121.5)


def test_the_toy_preset_and_its_pyramids_ship_a_tiny_decoder(tmp_path):
    from pyrawan.commands.sample import SampleSettings, run
    from pyrawan.models.toy import weights_index

    assert weights_index()["decoder"]["file"] == "decoder.safetensors"
    settings = SampleSettings(prompts=["a red circle moving left"], model="toy", schedule="2", progress=False,
                              decoder="tiny", batch_size=1)
    out = run(settings, tmp_path / "S")
    assert json.loads((out / "manifest.json").read_text())["metrics"]["decoder"] == "tiny"


def test_clamp_bound_is_the_configs_and_old_configs_keep_taehvs():
    from pyrawan.models.tiny_decoder import Clamp

    assert TinyDecoderConfig().clamp == 3.0 and TinyDecoderConfig.model_validate({"channels": [8, 8, 8, 8]}).clamp == 3.0
    x = torch.tensor([-30.0, -6.0, 0.0, 6.0, 30.0])
    assert torch.allclose(Clamp()(x), 3 * torch.tanh(x / 3))
    assert torch.allclose(Clamp(12.0)(x), 12 * torch.tanh(x / 12))
    wide = TinyDecoder(TinyDecoderConfig(channels=SMALL, clamp=12.0))
    assert wide.decoder[0].bound == 12.0 and TinyDecoder(TinyDecoderConfig(channels=SMALL)).decoder[0].bound == 3.0
    with pytest.raises(ValueError, match="clamp"):
        TinyDecoderConfig(clamp=0)


def test_held_out_scores_weigh_the_moving_pixels_apart():
    """A decoder that outputs 0.5 everywhere, against targets of a grey background (128) and a 2x2 white square
    moving one pixel a frame: the square's pixels (the foreground) are off by 0.5, the rest by 0.5/255."""
    import math

    from pyrawan.commands.distill_decoder import held_out_scores
    from pyrawan.train.decoder import DecoderPairs

    model = TinyDecoder(TinyDecoderConfig(channels=SMALL))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.decoder[-1].bias.fill_(0.5)
    frames = torch.full((1, 5, 3, 8, 8), 128, dtype=torch.uint8)
    for f in range(5):
        frames[0, f, :, 2:4, f:f + 2] = 255
    pairs = DecoderPairs(torch.zeros(1, 16, 2, 1, 1), frames)
    scores = held_out_scores(model, pairs, [0], torch.device("cpu"), 1)
    fg, bg = 0.5, 0.5 / 255
    assert scores["val_fg_psnr"] == pytest.approx(-10 * math.log10(fg ** 2), abs=1e-3)
    share = 4 / 64                                                      # square pixels per frame
    assert scores["val_psnr"] == pytest.approx(-10 * math.log10(share * fg ** 2 + (1 - share) * bg ** 2), abs=1e-3)
    assert scores["val_l1"] == pytest.approx(share * fg + (1 - share) * bg, abs=1e-6)
    assert held_out_scores(model, pairs, [], torch.device("cpu"), 1) is None


def test_cpu_decode_goes_in_groups_that_give_the_same_frames(monkeypatch):
    import pyrawan.models.tiny_decoder as td

    model = small_decoder()
    latents = torch.randn(5, 16, 3, 2, 2)
    assert model.largest_activation_bytes(latents) == 4 * 3 * 4 * 8 * 2 * 2 * 64     # 4T frames, 8 ch, 16x16
    calls = []
    forward = TinyDecoder.forward
    monkeypatch.setattr(TinyDecoder, "forward", lambda self, x: calls.append(len(x)) or forward(self, x))
    whole = model.decode(latents)
    assert calls == [5]                                                  # 24 KiB a video: one group
    monkeypatch.setattr(td, "CPU_CHUNK_BYTES", 2 * model.largest_activation_bytes(latents))
    calls.clear()
    torch.testing.assert_close(model.decode(latents), whole, rtol=1e-5, atol=1e-6)
    assert calls == [2, 2, 1]
    monkeypatch.setattr(td, "CPU_CHUNK_BYTES", 1)
    calls.clear()
    assert model.decode(latents).shape == (5, 9, 3, 16, 16) and calls == [1] * 5
