"""Latent cache: the reader contract, Definitions 1 and 2, reuse, invalidation, and resuming after SIGKILL."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pyrawan.data.cache import INDEX, KILL_ENV, LatentCache, ensure_cache
from pyrawan.data.frames import load_clip, stage_clips, to_vae_input
from pyrawan.errors import InputError
from pyrawan.models.denoiser import encode_prompts
from pyrawan.models.vae import encode_video
from pyrawan.pyramid.resize import get_resizer
from pyrawan.recipe import load_recipe
from synthetic import detailed_video, make_dataset, pool_components, smooth_video

TESTS = Path(__file__).resolve().parent


pytestmark = pytest.mark.usefixtures("one_thread")



def recipe_for(root: Path, *overrides: str):
    return load_recipe("tiny", ["kind=calibrate", f"data.root={root}", *overrides])


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    videos = [smooth_video(0), detailed_video(1), smooth_video(2), detailed_video(3), smooth_video(4)]
    captions = ["a calm sea", "static noise", "a calm sea", "a busy street", "sunset"]
    return make_dataset(tmp_path_factory.mktemp("cache") / "data", "metadata.jsonl", videos, captions)


@pytest.fixture(scope="module")
def pool(tiny_components):
    return pool_components(tiny_components)


@pytest.mark.parametrize("definition", [1, 2])
def test_reader_contract_and_both_definitions(tmp_path, data_root, pool, definition):
    recipe = recipe_for(data_root, f"pyramid.stage_data={definition}", "pyramid.resizer=dct", "data.shard_size=2")
    cache = LatentCache(ensure_cache(recipe, pool, tmp_path / "c", progress=False))
    assert len(cache) == 5 and cache.num_stages == 3 and cache.definition == definition
    assert cache.stage_shapes == [(5, 8, 8), (3, 4, 4), (2, 2, 2)]
    assert cache.record(1) == {"id": "videos/clip1", "caption": "static noise", "video": "videos/clip1.mp4"}
    latents = cache.latents(1)
    assert [tuple(z.shape) for z in latents] == [(16, 5, 8, 8), (16, 3, 4, 4), (16, 2, 2, 2)]
    assert all(z.dtype == torch.float32 for z in latents)
    clip = load_clip(data_root / "videos/clip1.mp4", 17, 64, 64, 16)
    torch.testing.assert_close(latents[0], encode_video(pool.vae, to_vae_input(clip))[0])
    if definition == 1:                                                   # each stage: the resizer's down of the finer
        for stage in (1, 2):
            torch.testing.assert_close(latents[stage], get_resizer("dct").down(latents[stage - 1][None])[0])
    else:                                                                 # each stage: its resized pixels, encoded
        for stage in (1, 2):
            expected = encode_video(pool.vae, to_vae_input(stage_clips(clip, 3)[stage]))[0]
            torch.testing.assert_close(latents[stage], expected)
    text, _ = encode_prompts(pool, ["a calm sea"], None, 16)
    assert cache.text(2).shape == (16, 32) and cache.text(2).dtype == torch.float32
    torch.testing.assert_close(cache.text(2), text[0].float(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(cache.text(0), cache.text(2))
    index = json.loads((tmp_path / "c" / INDEX).read_text())
    assert sum(len(s["texts"]) for s in index["shards"]) == 4                  # "a calm sea" encoded once
    assert index["settings"]["normalisation"]["latents_std"] == [1.0] * 16
    with pytest.raises(IndexError):
        cache.latents(5)


def test_reuse_invalidation_and_the_default_folder(tmp_path, data_root, pool, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = recipe_for(data_root)
    folder = ensure_cache(recipe, pool, progress=False)
    assert folder.parent == Path("runs/cache") and len(folder.name) == 16
    stamp = (folder / INDEX).stat().st_mtime_ns
    assert ensure_cache(recipe, pool, progress=False) == folder and (folder / INDEX).stat().st_mtime_ns == stamp
    assert ensure_cache(recipe_for(data_root, "text.max_sequence_length=8"), pool, progress=False) != folder
    with pytest.raises(InputError) as err:
        ensure_cache(recipe_for(data_root, "text.max_sequence_length=8", f"data.cache={folder}"), pool, progress=False)
    assert "max_sequence_length (cache 16, now 8)" in str(err.value) and f"Delete {folder}" in str(err.value)
    with pytest.raises(InputError, match="vae_sha256"):
        ensure_cache(recipe_for(data_root, f"data.cache={folder}"), pool_components_with_scale(pool, 2.0), progress=False)


def pool_components_with_scale(pool, scale: float):
    other = pool_components(pool)
    other.vae.mix.data *= scale
    return other


def test_skip_policy_counts_bad_entries_and_an_incomplete_cache_is_refused(tmp_path, data_root, pool):
    root = make_dataset(tmp_path / "d", "sidecar", [smooth_video(0), smooth_video(1)])
    (root / "clip1.txt").unlink()
    with pytest.raises(InputError, match="1 of 2 entries"):
        ensure_cache(recipe_for(root), pool, tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists()                                     # nothing written before failing
    cache = LatentCache(ensure_cache(recipe_for(root, "data.on_bad_sample=skip"), pool, tmp_path / "c", progress=False))
    assert len(cache) == 1 and cache.dataset["bad_counts"] == {"missing caption": 1}
    index = json.loads((tmp_path / "c" / INDEX).read_text())
    index["complete"] = False
    (tmp_path / "c" / INDEX).write_text(json.dumps(index))
    with pytest.raises(InputError, match="incomplete"):
        LatentCache(tmp_path / "c")


KILLED_BUILD = """
import sys
from pathlib import Path
from pyrawan.data.cache import ensure_cache
from pyrawan.models.presets import build_preset
from pyrawan.recipe import load_recipe
from synthetic import pool_components
recipe = load_recipe("tiny", ["kind=calibrate", "data.root=" + sys.argv[1], "data.shard_size=2"])
ensure_cache(recipe, pool_components(build_preset("tiny")), Path(sys.argv[2]), progress=False)
"""


@pytest.mark.slow
def test_a_killed_build_resumes_without_redoing_finished_shards(tmp_path, data_root, pool):
    folder = tmp_path / "killed"
    env = {**os.environ, KILL_ENV: "2", "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", KILLED_BUILD, str(data_root), str(folder)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not json.loads((folder / INDEX).read_text())["complete"]
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (folder / "shards").iterdir()}
    assert sorted(before) == ["00000.json", "00000.safetensors", "00001.json", "00001.safetensors"]
    with pytest.raises(InputError, match=r"incomplete \(2 of 3 shards\)"):
        LatentCache(folder)
    recipe = recipe_for(data_root, "data.shard_size=2")
    resumed = LatentCache(ensure_cache(recipe, pool, folder, progress=False))
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (folder / "shards").iterdir()}
    assert {k: after[k] for k in before} == before and len(after) == 6       # finished shards untouched
    fresh = LatentCache(ensure_cache(recipe, pool, tmp_path / "fresh", progress=False))
    assert len(resumed) == len(fresh) == 5
    for i in range(5):
        assert resumed.record(i) == fresh.record(i)
        assert all(torch.equal(a, b) for a, b in zip(resumed.latents(i), fresh.latents(i)))
        assert torch.equal(resumed.text(i), fresh.text(i))
