"""Model presets, loading, artifacts, prompt encoding and the velocity wrapper (all tiny, offline)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from pyrawan.errors import InputError
from pyrawan.fsutil import atomic_write_text, sha256_file
from pyrawan.models import (
    Velocity,
    build_preset,
    build_transformer,
    decode_latents,
    encode_prompts,
    encode_video,
    frame_timesteps,
    load_components,
    load_model,
    save_model,
)
from pyrawan.models.artifact import state_dict_sha256
from pyrawan.models.denoiser import pipeline_for

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _forward(transformer, x, text, t=500.0):
    """Plain transformer output for latents x [B, 16, T, H, W] at a scalar timestep."""
    with torch.no_grad():
        return transformer(hidden_states=x, timestep=torch.full((x.shape[0],), t),
                           encoder_hidden_states=text, return_dict=False)[0]


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def fake_hub(tmp_path, tiny_pipeline_dir, monkeypatch):
    """A Hugging Face cache holding the tiny pipeline as repo ``acme/tiny-wan`` at ``COMMIT``."""
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--acme--tiny-wan"
    shutil.copytree(tiny_pipeline_dir, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return "acme/tiny-wan"


# --- presets -------------------------------------------------------------------------------------

def test_preset_is_deterministic_per_seed(tiny_components):
    again, other = build_preset("tiny", seed=0), build_preset("tiny", seed=1)
    for name in ("text_encoder", "vae", "transformer"):
        assert _same_weights(getattr(tiny_components, name), getattr(again, name))
        assert not _same_weights(getattr(tiny_components, name), getattr(other, name))
    assert tiny_components.source["vae"] == {"preset": "tiny", "seed": 0}


def test_tiny_tokenizer_covers_ascii(tiny_components):
    tok = tiny_components.tokenizer
    ids = tok("A Red car: 42 birds, (fast)! #1 @x ~y").input_ids
    assert tok.unk_token_id not in ids and ids[-1] == tok.eos_token_id
    assert tok.unk_token_id in tok("caf\u00e9").input_ids


def test_tiny_shapes_vae_and_transformer(tiny_components, tiny_text):
    video = torch.rand(1, 3, 17, 64, 64) * 2 - 1
    z = encode_video(tiny_components.vae, video)
    assert z.shape == (1, 16, 5, 8, 8)
    assert decode_latents(tiny_components, z).shape == (1, 17, 3, 64, 64)
    assert encode_video(tiny_components.vae, video[:, :, :9, :32, :32]).shape == (1, 16, 3, 4, 4)
    cond = tiny_text[0][:1]
    for thw in [(5, 8, 8), (3, 4, 4), (2, 2, 2), (9, 16, 16), (9, 32, 32)]:
        x = torch.randn(1, 16, *thw)
        assert _forward(tiny_components.transformer, x, cond).shape == x.shape


def test_build_transformer_meta_and_dtype():
    big = build_transformer("wan1.3b", empty=True, dtype=torch.bfloat16)
    assert sum(p.numel() for p in big.parameters()) == 1_418_996_800
    assert all(p.is_meta for p in big.parameters())
    tiny = build_transformer("tiny", dtype=torch.bfloat16)
    assert tiny.patch_embedding.weight.dtype == torch.bfloat16
    assert tiny.scale_shift_table.dtype == torch.float32 and tiny.blocks[0].norm2.weight.dtype == torch.float32
    with pytest.raises(InputError, match="wan1.3b"):
        build_transformer("wan99b")


# --- loading -------------------------------------------------------------------------------------

def test_load_local_pipeline_folder(tiny_pipeline_dir, tiny_components, tiny_text):
    loaded = load_components(str(tiny_pipeline_dir))
    x = torch.randn(1, 16, 3, 4, 4)
    ref = _forward(tiny_components.transformer, x, tiny_text[0][:1])
    torch.testing.assert_close(_forward(loaded.transformer, x, tiny_text[0][:1]), ref, atol=1e-4, rtol=0)
    assert _same_weights(loaded.vae, tiny_components.vae)
    cond, _ = encode_prompts(loaded, ["a cat runs in the park"], None, 16)
    torch.testing.assert_close(cond, tiny_text[0][:1], atol=1e-5, rtol=0)
    assert loaded.source["vae"] == {"path": str(tiny_pipeline_dir.resolve()), "subfolder": "vae"}


def test_load_bf16_keeps_fp32_modules(tiny_pipeline_dir):
    loaded = load_components(str(tiny_pipeline_dir), dtype=torch.bfloat16)
    assert loaded.transformer.patch_embedding.weight.dtype == torch.bfloat16
    assert loaded.transformer.scale_shift_table.dtype == torch.float32
    assert next(loaded.vae.parameters()).dtype == torch.float32


@pytest.mark.parametrize("make", ["missing", "no_index", "word", "lone_file"])
def test_bad_specs_raise_input_error(tmp_path, tiny_pipeline_dir, make):
    spec = {"missing": str(tmp_path / "nope"), "no_index": str(tmp_path), "word": "tinyy",
            "lone_file": str(tiny_pipeline_dir / "transformer" / "diffusion_pytorch_model.safetensors")}[make]
    with pytest.raises(InputError) as err:
        load_components(spec)
    text = str(err.value)
    expected = {"lone_file": "config_from", "missing": "no such folder"}.get(make, "model_index.json")
    assert spec in text and expected in text


def test_single_file_with_config_from(tiny_pipeline_dir, tiny_components):
    file = tiny_pipeline_dir / "transformer" / "diffusion_pytorch_model.safetensors"
    loaded = load_components(str(file), config_from=str(tiny_pipeline_dir))
    assert _same_weights(loaded.transformer, tiny_components.transformer)
    assert loaded.source["transformer"]["file"] == str(file.resolve())


def test_hub_id_offline_not_cached_is_clear(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(InputError, match="HF_HUB_OFFLINE") as err:
        load_components("Wan-AI/Wan2.1-T2V-1.3B-Diffusers")
    assert "local diffusers pipeline folder" in str(err.value) and "HF_HOME" in str(err.value)


def test_hub_id_from_cache(fake_hub, tiny_components):
    loaded = load_components(fake_hub)
    assert _same_weights(loaded.transformer, tiny_components.transformer)
    assert loaded.source["vae"]["repo_id"] == fake_hub and loaded.source["vae"]["revision"] == COMMIT


# --- artifacts -----------------------------------------------------------------------------------

def _roundtrip_checks(loaded, components, text):
    x = torch.randn(1, 16, 5, 8, 8)
    torch.testing.assert_close(_forward(loaded.components.transformer, x, text),
                               _forward(components.transformer, x, text), atol=1e-4, rtol=0)
    assert _same_weights(loaded.components.vae, components.vae)
    assert _same_weights(loaded.components.text_encoder, components.text_encoder)


def tiny_spec():
    """The pyramid.json of the shipped ``tiny`` recipe."""
    from pyrawan.models.pyramid_spec import define_pyramid
    from pyrawan.recipe import load_recipe

    return define_pyramid(load_recipe("tiny"), None)


def test_artifact_roundtrip_preset(tmp_path, tiny_components, tiny_text):
    pyramid = tiny_spec()
    written = save_model(tmp_path / "art", tiny_components, pyramid)
    names = {p.relative_to(tmp_path / "art").as_posix() for p in written}
    assert {"pyramid.json", "components.json", "transformer/config.json",
            "transformer/diffusion_pytorch_model.safetensors"} <= names
    assert not (tmp_path / "art" / "vae").exists()
    refs = json.loads((tmp_path / "art" / "components.json").read_text())["components"]
    assert refs["transformer"] == {"saved": "transformer"}
    assert refs["vae"] == {"preset": "tiny", "seed": 0, "sha256": state_dict_sha256(tiny_components.vae)}
    loaded = load_model(str(tmp_path / "art"))
    assert loaded.spec == pyramid and loaded.pyramid == pyramid.to_dict() and loaded.path == (tmp_path / "art").resolve()
    _roundtrip_checks(loaded, tiny_components, tiny_text[0][:1])
    # Tampering with a recorded hash is detected.
    refs["vae"]["sha256"] = "0" * 64
    atomic_write_text(tmp_path / "art" / "components.json",
                      json.dumps({"schema": "pyrawan.components/1", "components": refs}))
    with pytest.raises(InputError, match="vae"):
        load_model(str(tmp_path / "art"))


def test_artifact_references_local_folder(tmp_path, tiny_pipeline_dir, tiny_text):
    src = tmp_path / "src"
    shutil.copytree(tiny_pipeline_dir, src)
    components = load_components(str(src))
    save_model(tmp_path / "art", components, tiny_spec())
    refs = json.loads((tmp_path / "art" / "components.json").read_text())["components"]
    vae_file = "vae/diffusion_pytorch_model.safetensors"
    assert refs["vae"]["path"] == str(src.resolve())
    assert refs["vae"]["files"][vae_file] == sha256_file(src / vae_file)
    loaded = load_model(tmp_path / "art")
    _roundtrip_checks(loaded, components, tiny_text[0][:1])
    assert loaded.components.source["vae"] == {"path": str(src.resolve()), "subfolder": "vae"}
    (src / "vae" / "config.json").write_text((src / "vae" / "config.json").read_text() + " ")
    with pytest.raises(InputError, match="sha256"):
        load_model(tmp_path / "art")


def test_artifact_references_hub_snapshot(tmp_path, fake_hub, tiny_text):
    components = load_components(fake_hub)
    save_model(tmp_path / "art", components, tiny_spec())
    ref = json.loads((tmp_path / "art" / "components.json").read_text())["components"]["text_encoder"]
    assert ref["repo_id"] == fake_hub and ref["revision"] == COMMIT and ref["files"]
    _roundtrip_checks(load_model(tmp_path / "art"), components, tiny_text[0][:1])


def test_load_model_plain_spec_and_incomplete_artifact(tmp_path):
    plain = load_model("tiny")
    assert plain.pyramid is None and plain.path is None
    (tmp_path / "pyramid.json").write_text("{}")
    with pytest.raises(InputError, match="components.json"):
        load_model(tmp_path)


def test_damaged_pyramid_json_names_the_key(tmp_path, tiny_components):
    save_model(tmp_path / "art", tiny_components, tiny_spec())
    data = json.loads((tmp_path / "art" / "pyramid.json").read_text())
    data["sampling"]["guidance"] = "strong"
    (tmp_path / "art" / "pyramid.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"pyramid\.json.*sampling\.guidance"):
        load_model(tmp_path / "art")


# --- prompts and velocity ------------------------------------------------------------------------

def test_encode_prompts_shapes(tiny_components, tiny_text):
    cond, uncond = tiny_text
    assert cond.shape == uncond.shape == (2, 16, 32)
    n_tokens = len(tiny_components.tokenizer("blurry").input_ids)
    assert uncond[0, n_tokens:].abs().sum() == 0 and uncond[0, :n_tokens].abs().sum() > 0
    cond_only, none = encode_prompts(tiny_components, ["a cat runs in the park"], None, 16)
    assert none is None
    torch.testing.assert_close(cond_only, cond[:1])
    with pytest.raises(InputError):
        encode_prompts(tiny_components, ["a", "b"], ["c"], 16)


def test_per_token_equal_levels_match_scalar(tiny_components, tiny_text, tiny_latents):
    tr = tiny_components.transformer
    sigma = torch.full((5,), 0.6)
    scalar = frame_timesteps(sigma, 2, (8, 8), (1, 2, 2))
    assert scalar.shape == (2,) and scalar[0] == pytest.approx(600.0)
    v = Velocity(tr, tiny_text[0])
    tokens = torch.full((2, 5 * 4 * 4), 600.0)
    with torch.no_grad():
        per_token = tr(hidden_states=tiny_latents, timestep=tokens,
                       encoder_hidden_states=tiny_text[0], return_dict=False)[0]
        torch.testing.assert_close(v(tiny_latents, sigma), per_token, atol=1e-5, rtol=0)
        mixed = torch.tensor([0.9, 0.6, 0.6, 0.3, 0.3])
        per_frame = frame_timesteps(mixed, 2, (8, 8), (1, 2, 2))
        assert per_frame.shape == (2, 80) and per_frame[0, 15] == 900.0 and per_frame[0, 16] == 600.0
        assert not torch.allclose(v(tiny_latents, mixed), v(tiny_latents, sigma))


def test_batched_cfg_equals_separate_calls(tiny_components, tiny_text, tiny_latents):
    tr, (cond, uncond), g = tiny_components.transformer, tiny_text, 5.0
    for sigma in (torch.full((5,), 0.8), torch.tensor([0.9, 0.7, 0.7, 0.4, 0.4])):
        with torch.no_grad():
            guided = Velocity(tr, cond, uncond, g)(tiny_latents, sigma)
            c = Velocity(tr, cond)(tiny_latents, sigma)
            u = Velocity(tr, uncond)(tiny_latents, sigma)
        torch.testing.assert_close(guided, u + g * (c - u), atol=1e-5, rtol=0)
        assert guided.dtype == torch.float32


def test_velocity_euler_matches_wan_pipeline(tiny_components):
    """A 2-step Euler loop with Velocity + decode_latents reproduces WanPipeline (CFG 5)."""
    pipe = pipeline_for(tiny_components)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    noise = torch.randn(1, 16, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    kw = dict(prompt="a cat runs", negative_prompt="blurry", height=32, width=32, num_frames=9,
              num_inference_steps=2, guidance_scale=5.0, max_sequence_length=16, latents=noise.clone())
    ref_latents = pipe(**kw, output_type="latent").frames
    ref_video = pipe(**kw, output_type="pt").frames
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(2)
    cond, uncond = encode_prompts(tiny_components, ["a cat runs"], ["blurry"], 16)
    velocity, x = Velocity(tiny_components.transformer, cond, uncond, 5.0), noise.clone()
    with torch.no_grad():
        for s, s_next in zip(sched.sigmas[:-1], sched.sigmas[1:]):
            x = x + (s_next - s) * velocity(x, s.expand(3))
    torch.testing.assert_close(x, ref_latents, atol=1e-5, rtol=0)
    torch.testing.assert_close(decode_latents(tiny_components, x), ref_video, atol=1e-4, rtol=0)
