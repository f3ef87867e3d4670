"""Datasets: layout detection, bad entries and the skip/fail policy, path safety, clips per stage."""
from __future__ import annotations

import json
import sys

import av
import pytest
import torch

from pyrawan.data.config import Data
from pyrawan.data.datasets import apply_policy, probe_dataset, scan_dataset
from pyrawan.data.frames import frame_indices, load_clip, pixel_down, resize_crop, stage_clips
from pyrawan.errors import InputError
from synthetic import make_dataset, smooth_video, write_clip

LAYOUTS = ["metadata.csv", "metadata.jsonl", "metadata.json", "samples.jsonl", "prompts+videos", "sidecar"]


@pytest.fixture(scope="module")
def two_clips() -> list[torch.Tensor]:
    return [smooth_video(0, frames=9, size=32), smooth_video(1, frames=9, size=32)]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_is_detected_and_normalised(tmp_path, layout, two_clips):
    root = make_dataset(tmp_path / "data", layout, two_clips, ["a red ball", "a blue sky"])
    ds = scan_dataset(root, Data())
    assert ds.layout == layout and ds.entries == 2 and not ds.bad
    videos = ["clip0.mp4", "clip1.mp4"] if layout == "sidecar" else ["videos/clip0.mp4", "videos/clip1.mp4"]
    assert [r.to_dict() for r in ds.records] == [
        {"id": v.removesuffix(".mp4"), "caption": c, "video": v} for v, c in zip(videos, ["a red ball", "a blue sky"])]
    assert f"layout {layout}" in ds.describe()


def test_columns_can_be_overridden_and_unknown_columns_are_named(tmp_path, two_clips):
    root = make_dataset(tmp_path / "d", "metadata.jsonl", two_clips)
    lines = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    (root / "metadata.jsonl").write_text("".join(json.dumps({"clip": x["video"], "desc": x["prompt"]}) + "\n" for x in lines))
    with pytest.raises(InputError, match="none of the columns video, file_name"):
        scan_dataset(root, Data())
    ds = scan_dataset(root, Data(video_column="clip", caption_column="desc"))
    assert ds.columns == ("clip", "desc") and len(ds.records) == 2
    with pytest.raises(InputError, match="data.caption_column = 'nope'.*columns: clip, desc"):
        scan_dataset(root, Data(video_column="clip", caption_column="nope"))


def test_an_empty_folder_or_a_missing_forced_layout_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no dataset found"):
        scan_dataset(tmp_path / "empty", Data())
    with pytest.raises(InputError, match="data.layout = metadata.csv but .* has no metadata.csv"):
        scan_dataset(tmp_path / "empty", Data(layout="metadata.csv"))


@pytest.fixture
def bad_dataset(tmp_path, two_clips):
    """Two good rows and one row of each kind of bad entry (escapes via .., an absolute path and a symlink)."""
    root = make_dataset(tmp_path / "data", "metadata.csv", two_clips)
    outside = tmp_path / "outside"
    outside.mkdir()
    write_clip(outside / "secret.mp4", two_clips[0])
    (root / "videos" / "link.mp4").symlink_to(outside / "secret.mp4")
    write_clip(root / "videos" / "short.mp4", smooth_video(0, frames=5, size=32))
    (root / "videos" / "broken.mp4").write_bytes(b"not a video at all")
    rows = ["videos/clip0.mp4,fine", "videos/clip1.mp4,", "videos/none.mp4,gone", "../outside/secret.mp4,up",
            f"{outside / 'secret.mp4'},absolute", "videos/link.mp4,link", "videos/short.mp4,short",
            "videos/broken.mp4,broken", ",no path"]
    (root / "metadata.csv").write_text("video,caption\n" + "\n".join(rows) + "\n")
    return root, outside


def test_every_kind_of_bad_entry_is_reported_and_fail_lists_them_all_before_encoding(bad_dataset):
    root, _ = bad_dataset
    ds = probe_dataset(scan_dataset(root, Data()), frames=9, fps=16)
    assert [r.video for r in ds.records] == ["videos/clip0.mp4"]
    assert ds.bad_counts() == {"missing caption": 1, "missing file": 1, "outside the dataset folder": 3,
                               "missing video path": 1, "too short": 1, "unreadable video": 1}
    with pytest.raises(InputError) as err:
        apply_policy(ds, "fail")
    message = str(err.value)
    assert "8 of 9 entries" in message and "data.on_bad_sample=skip" in message
    for piece in ("line 3 (videos/clip1.mp4): missing caption", "videos/none.mp4): missing file",
                  "../outside/secret.mp4): outside", "videos/link.mp4): outside", "too short (5 frames",
                  "videos/broken.mp4): unreadable video", "line 10: missing video path"):
        assert piece in message
    assert apply_policy(ds, "skip") is ds


def test_nothing_outside_the_dataset_folder_is_opened(bad_dataset, monkeypatch):
    root, outside = bad_dataset
    opened: list[str] = []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
    active = [True]  # audit hooks cannot be removed: this one goes quiet after the test
    sys.addaudithook(lambda event, args: opened.append(str(args[0])) if active[0] and event == "open" and args else None)
    try:
        ds = probe_dataset(scan_dataset(root, Data()), frames=9, fps=16)
        load_clip(ds.records[0].path, 9, 32, 32, 16)
    finally:
        active[0] = False
    assert opened and not [p for p in opened if p.startswith(str(outside))]
    (root / "metadata.csv").unlink()
    (root / "metadata.csv").symlink_to(outside / "secret.mp4")
    with pytest.raises(InputError, match="points outside the dataset folder"):
        scan_dataset(root, Data())


def test_sidecar_without_caption_and_prompt_lists_of_unequal_length(tmp_path, two_clips):
    root = make_dataset(tmp_path / "s", "sidecar", two_clips)
    (root / "clip1.txt").unlink()
    ds = scan_dataset(root, Data())
    assert [b.reason for b in ds.bad] == ["missing caption"] and len(ds.records) == 1
    lists = make_dataset(tmp_path / "p", "prompts+videos", two_clips)
    (lists / "prompts.txt").write_text("only one caption\n")
    ds = scan_dataset(lists, Data())
    assert [str(b) for b in ds.bad] == ["videos.txt line 2 (videos/clip1.mp4): missing caption"]


def test_clip_frames_resize_and_stage_pixels():
    assert frame_indices(5, 32, 16) == [0, 2, 4, 6, 8] and frame_indices(3, 0, 16) == [0, 1, 2]
    video = torch.rand(17, 3, 48, 80)
    out = resize_crop(video, 64, 64)
    assert out.shape == (17, 3, 64, 64) and 0 <= float(out.min()) and float(out.max()) <= 1
    bands = torch.zeros(1, 3, 48, 80)
    bands[..., :16], bands[..., 64:] = 1.0, 1.0                   # bright 16 px on each side of a dark centre
    covered = resize_crop(bands, 64, 64)                          # scale 4/3 to cover, then the centre 64 columns
    assert float(covered[..., 4:-4].max()) < 0.05 and float(covered[..., 0].min()) > 0.2   # a stretch keeps the bands
    down = pixel_down(video)
    assert down.shape == (9, 3, 24, 40)
    torch.testing.assert_close(down[0], torch.nn.functional.avg_pool2d(video[0], 2))
    torch.testing.assert_close(down[1], torch.nn.functional.avg_pool2d((video[1] + video[2]) / 2, 2))
    assert [tuple(c.shape[:1]) + tuple(c.shape[2:]) for c in stage_clips(video[:, :, :32, :64], 3)] == [
        (17, 32, 64), (9, 16, 32), (5, 8, 16)]


def test_load_clip_reads_the_file_at_the_recipe_fps(tmp_path):
    fast = smooth_video(0, frames=33, size=32)
    write_clip(tmp_path / "fast.mp4", fast, fps=32)
    clip = load_clip(tmp_path / "fast.mp4", 9, 32, 32, 16)
    assert clip.shape == (9, 3, 32, 32)
    assert float((clip - fast[0:17:2]).abs().mean()) < 0.02
