"""A VAE other than Wan2.1's (4x temporal, 8x spatial): every pixel-to-latent size follows the model's VAE."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from diffusers import AutoencoderKLWan
from safetensors.torch import load_file
from typer.testing import CliRunner

from pyrawan.cli import app
from pyrawan.errors import InputError
from pyrawan.models.arch import factors_of_vae_config, vae_factors
from pyrawan.models.denoiser import pipeline_for
from pyrawan.recipe import RECIPES_DIR, load_recipe

# Two levels, both temporal: 4x in time, 4x in space (a 64x64 video -> 16x16 latents).
VAE_4X: dict = dict(base_dim=4, z_dim=16, dim_mult=[1, 1, 1], num_res_blocks=1,
                    temperal_downsample=[True, True], scale_factor_temporal=4, scale_factor_spatial=4)


def cli(*args, code: int = 0):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    return result


@pytest.mark.parametrize("config, factors", [
    ({}, (4, 8)),                                                                  # diffusers' defaults = Wan2.1
    ({"dim_mult": [1, 2, 4, 4], "temperal_downsample": [False, True, True]}, (4, 8)),
    ({"dim_mult": [1, 2, 4, 4], "temperal_downsample": [False, True, True], "patch_size": 2}, (4, 16)),  # Wan2.2
    (VAE_4X, (4, 4)),
    ({"dim_mult": [1, 2, 2], "temperal_downsample": [False, True]}, (2, 4)),
])
def test_factors_come_from_the_vae_levels(config, factors):
    assert factors_of_vae_config(config, "vae/config.json") == factors


def test_a_recorded_factor_that_disagrees_with_the_levels_is_refused_by_name():
    with pytest.raises(InputError, match=r"M/vae/config.json: scale_factor_spatial = 8 .* compress by 4"):
        factors_of_vae_config({**VAE_4X, "scale_factor_spatial": 8}, "M/vae/config.json")


@pytest.fixture(scope="module")
def folder_4x(tmp_path_factory, tiny_components) -> Path:
    """The tiny stack with a 4x-spatial VAE, saved as a diffusers pipeline folder."""
    folder = tmp_path_factory.mktemp("tiny_vae4x")
    components = replace(tiny_components, vae=AutoencoderKLWan(**VAE_4X).eval())
    pipeline_for(components).save_pretrained(folder, safe_serialization=True)
    return folder


def test_model_references_name_their_vae_factors(folder_4x, tiny_pipeline_dir, tmp_path):
    assert vae_factors(str(folder_4x)) == (4, 4)
    assert vae_factors(str(tiny_pipeline_dir)) == (4, 8)
    assert vae_factors("Wan-AI/Wan2.1-T2V-1.3B-Diffusers") == vae_factors("tiny") == (4, 8)
    broken = tmp_path / "broken"
    (broken / "vae").mkdir(parents=True)
    (broken / "vae" / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot load the vae from .*broken/vae: its config.json is not readable JSON"):
        vae_factors(str(broken))


def test_recipe_sizes_are_checked_against_the_models_vae(folder_4x, tiny_pipeline_dir):
    """32x32 pixels is 8x8 latents through a 4x VAE (fits 3 stages of 2x2 patches) but 4x4 through Wan's."""
    small = ["video.height=32", "video.width=32"]
    recipe = load_recipe(str(RECIPES_DIR / "tiny.yaml"), [f"base={folder_4x}", *small])
    assert recipe.latent_size() == (5, 8, 8)
    with pytest.raises(InputError, match="video.height"):
        load_recipe(str(RECIPES_DIR / "tiny.yaml"), [f"base={tiny_pipeline_dir}", *small])


def test_convert_and_sample_through_a_4x_vae(folder_4x, tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)
    cli("convert", RECIPES_DIR / "tiny.yaml", f"base={folder_4x}", "-o", "P")
    spec = json.loads((tmp_path / "P" / "pyramid.json").read_text())
    assert spec["stage_latents"] == [[5, 16, 16], [3, 8, 8], [2, 4, 4]]    # 17x64x64 -> (5, 16, 16)
    assert spec["vae_factors"] == [4, 4]
    finetune = load_recipe(str(RECIPES_DIR / "tiny-finetune.yaml"), [f"base={tmp_path / 'P'}"])
    assert finetune.latent_size() == (5, 16, 16)                          # a recipe on the converted model

    cli("sample", "--model", "P", "--prompt", "a red square", "--schedule", "1-1-1", "-q", "-o", "S")
    row = json.loads((tmp_path / "S" / "samples.jsonl").read_text().splitlines()[0])
    assert tuple(load_file(tmp_path / "S" / row["latents"])["latents"].shape[-3:]) == (5, 16, 16)

    flops = cli("eval", "flops", "P", "-o", "F").output
    report = json.loads((tmp_path / "F" / "flops.json").read_text())
    assert report["stages"][0]["latent"] == [5, 16, 16], flops


def test_a_model_folders_pyramid_json_gives_its_factors(tmp_path):
    """Older ``pyramid.json`` files (no ``vae_factors``) are Wan2.1's; a malformed value is refused by name."""
    (tmp_path / "pyramid.json").write_text(json.dumps({"num_stages": 3}))
    assert vae_factors(str(tmp_path)) == (4, 8)
    (tmp_path / "pyramid.json").write_text(json.dumps({"vae_factors": [4, 4]}))
    assert vae_factors(str(tmp_path)) == (4, 4)
    (tmp_path / "pyramid.json").write_text(json.dumps({"vae_factors": [4, "8"]}))
    with pytest.raises(InputError, match=r"pyramid.json: vae_factors = \[4, '8'\] is not \[temporal, spatial\]"):
        vae_factors(str(tmp_path))


@pytest.mark.slow
def test_calibrate_caches_latents_of_the_models_vae(folder_4x, tmp_path, monkeypatch, one_thread):
    """The latent cache and calibration of a 4x-VAE base hold 16x16 latents per 64x64 frame."""
    import torch

    from synthetic import make_dataset

    monkeypatch.chdir(tmp_path)
    videos = [torch.rand(17, 3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    make_dataset(tmp_path / "clips", "metadata.csv", videos)
    cli("calibrate", "clips", f"base={folder_4x}", "-o", "C")
    calibration = json.loads((tmp_path / "C" / "calibration.json").read_text())
    assert calibration["stage_latents"] == [[5, 16, 16], [3, 8, 8], [2, 4, 4]]
