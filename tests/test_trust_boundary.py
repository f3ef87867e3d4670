"""The trust boundary (docs/trust-boundary.md): one door into an artifact, symlinks in ``verify``, text
escaped for its format, imports that never overwrite each other, file names capped in bytes.

Crafted artifacts are built the way a hostile user would: files changed *before* the manifest is
written, so the manifest itself verifies. ``CRAFTS`` is shared with the corpus (tests/test_corpus.py).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pyrawan.artifact_files import ArtifactFiles
from pyrawan.cli import app
from pyrawan.data.video import write_video
from pyrawan.errors import InputError, RunError
from pyrawan.escape import markdown_text
from pyrawan.eval import vbench as vb
from pyrawan.eval.artifact import build_eval, write_eval
from pyrawan.fsutil import atomic_write_bytes, capped_name
from pyrawan.manifest import check_artifact, write_manifest
from pyrawan.outputs import artifact_dir
from test_manifest import make_artifact

SECRET = "secret.txt"  # a file outside every artifact, in the working folder


def run(*args, code: int = 0) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    text = " ".join(result.output.split())
    assert result.exit_code == code, (args, result.exit_code, text, result.exception)
    assert "Traceback" not in result.output and "unexpected" not in text, text
    return text


def sample_artifact(folder: Path, link_out: Path | None = None) -> Path:
    """A sample-like artifact with one mp4; ``link_out``: the mp4 is a symlink to it (made before the manifest)."""
    with artifact_dir(folder) as tmp:
        write_video(tmp / "videos" / "0.mp4", torch.full((3, 3, 16, 16), 0.3), fps=8)
        if link_out is not None:
            (tmp / "videos" / "0.mp4").unlink()
            (tmp / "videos" / "0.mp4").symlink_to(link_out.resolve())
        write_manifest(tmp, "sample", {"kind": "sample"}, [], {}, None)
    return folder


def eval_artifact(folder: Path, label: str = "row", video: object = "videos/0.mp4", inputs=(), seed=0,
                  own_video: bool = True) -> Path:
    """An eval artifact with one video record naming ``video`` (its own mp4 unless ``own_video`` is False)."""
    with artifact_dir(folder) as tmp:
        if own_video:
            write_video(tmp / "videos" / "0.mp4", torch.full((3, 3, 16, 16), 0.5), fps=8)
        videos = [{"index": 0, "prompt": "a red square", "seed": seed, "video": video,
                   "values": {"pixel_psnr": 20.0}}]
        write_eval(tmp, build_eval("quality", label, videos, model=label, tflops_per_video=1.0))
        write_manifest(tmp, "eval-quality", {"kind": "eval-quality"}, list(inputs), {}, None)
    return folder


def _secret(work: Path) -> Path:
    (work / SECRET).write_text("not for reports\n")
    return work / SECRET


def _linked_artifact(work: Path, target: str) -> Path:
    art = work / "art"
    with artifact_dir(art) as tmp:
        (tmp / "weights.bin").write_bytes(b"w" * 8)
        os.symlink(target, tmp / "link")
        write_manifest(tmp, "pyramid", None, [], {}, None)
    return art


def _weights_out(work: Path) -> Path:
    art = work / "art"
    with artifact_dir(art) as tmp:
        (tmp / "weights.safetensors").symlink_to(_secret(work).resolve())
        write_manifest(tmp, "pyramid", None, [], {}, None)
    return art


CRAFTS = {  # name -> builder(work folder) -> the artifact the command is given
    "video_absolute": lambda w: eval_artifact(w / "ev", video=str(_secret(w).resolve())),
    "video_dotdot": lambda w: (_secret(w), eval_artifact(w / "ev", video=f"../{SECRET}"))[1],
    "video_dotdot_deep": lambda w: eval_artifact(w / "ev", video="videos/../../../../../../etc/hostname"),
    "video_not_text": lambda w: eval_artifact(w / "ev", video=7),
    "video_unlisted": lambda w: eval_artifact(w / "ev", video="manifest.json"),
    "sample_symlink_out": lambda w: eval_artifact(
        w / "ev", video="../samples/videos/0.mp4", own_video=False,
        inputs=[sample_artifact(w / "samples", link_out=_secret(w))]),
    "sample_changed": lambda w: _changed_sample(w),
    "seed_text": lambda w: eval_artifact(w / "ev", seed="zero"),
    "weights_symlink_out": _weights_out,
    "link_etc": lambda w: _linked_artifact(w, "/etc"),
    "link_dot": lambda w: _linked_artifact(w, "."),
    "link_parent": lambda w: _linked_artifact(w, ".."),
    "link_broken": lambda w: _linked_artifact(w, "nowhere"),
}


def _changed_sample(work: Path) -> Path:
    """An untouched eval artifact over a sample artifact whose mp4 was changed afterwards."""
    ev = eval_artifact(work / "ev", video="../samples/videos/0.mp4", own_video=False,
                       inputs=[sample_artifact(work / "samples")])
    path = work / "samples" / "videos" / "0.mp4"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    return ev


# ---- the door --------------------------------------------------------------------------------------

def test_door_reads_listed_files_and_refuses_everything_else(tmp_path):
    art = make_artifact(tmp_path / "a", files={"w.bin": b"abc", "sub/c.json": b'{"x": 1}'})
    files = ArtifactFiles(art)
    assert files.read_bytes("w.bin") == b"abc" and files.read_json("./sub//c.json") == {"x": 1}
    for name in ("/etc/passwd", "../a/w.bin", "sub/../w.bin", "", 3, None, "a\0b"):
        with pytest.raises(InputError, match="not a relative path inside the artifact"):
            files.read_bytes(name)
    (art / "extra.bin").write_bytes(b"x")
    with pytest.raises(RunError, match="'extra.bin' is not listed in its manifest.json"):
        files.read_bytes("extra.bin")
    (art / "w.bin").write_bytes(b"abd")                                       # same size: only the hash tells
    with pytest.raises(RunError, match=r"'w.bin' changed after the manifest was written.*pyrawan verify"):
        files.read_bytes("w.bin")
    (art / "w.bin").unlink()
    (art / "w.bin").symlink_to(_secret(tmp_path).resolve())
    with pytest.raises(RunError, match="symbolic link to .*secret.txt, outside the artifact folder"):
        files.verified_path("w.bin")


def test_door_follows_a_link_that_stays_inside(tmp_path):
    art = tmp_path / "a"
    with artifact_dir(art) as tmp:
        (tmp / "real.bin").write_bytes(b"data")
        (tmp / "alias.bin").symlink_to("real.bin")
        write_manifest(tmp, "pyramid", None, [], {}, None)
    assert ArtifactFiles(art).read_bytes("alias.bin") == b"data"
    findings = {f.path: f for f in check_artifact(art)}
    assert not findings["alias.bin"].fatal and findings["alias.bin"].problem == "symlink"


# ---- verify ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("craft, detail", [("weights_symlink_out", "outside the artifact folder"),
                                           ("link_etc", "outside the artifact folder"),
                                           ("link_dot", "a loop"), ("link_parent", "outside the artifact folder"),
                                           ("link_broken", "broken")])
def test_verify_fails_on_a_symlink_that_leaves_or_loops(craft, detail, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    art = CRAFTS[craft](tmp_path)
    text = run("verify", art, code=1)
    assert "does not verify: 1 symbolic link leaves the artifact or loop" in text
    assert [(f.problem, f.fatal) for f in check_artifact(art) if f.problem == "symlink"] == [("symlink", True)]
    assert detail in json.loads(CliRunner().invoke(app, ["verify", str(art), "--json"]).stdout)["findings"][0]["detail"]


def test_verify_reads_no_file_outside(tmp_path, monkeypatch):
    art = _weights_out(tmp_path)
    monkeypatch.setattr("pyrawan.manifest.sha256_file", lambda p: pytest.fail(f"hashed {p}"))
    assert [f.problem for f in check_artifact(art)] == ["symlink"]


# ---- eval report / compare through the door ---------------------------------------------------------

@pytest.mark.parametrize("craft, code, expect", [
    ("video_absolute", 2, "an absolute path"), ("video_dotdot", 2, "neither inside it nor inside one of the input"),
    ("video_dotdot_deep", 2, "neither inside it"), ("video_not_text", 2, "videos.0.video"),
    ("video_unlisted", 1, "'manifest.json' is not listed"),
    ("sample_symlink_out", 2, "does not verify"), ("sample_changed", 2, "does not verify: videos/0.mp4")])
def test_report_copies_nothing_an_artifact_does_not_pin(craft, code, expect, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ev = CRAFTS[craft](tmp_path)
    text = run("eval", "report", ev, "-o", "out", code=code)
    assert expect in text and "ev" in text
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_report_copies_a_video_of_a_verified_input_artifact(tmp_path):
    ev = eval_artifact(tmp_path / "ev", video="../samples/videos/0.mp4", own_video=False,
                       inputs=[sample_artifact(tmp_path / "samples")])
    run("eval", "report", ev, "-o", tmp_path / "r")
    copied = tmp_path / "r" / "videos" / "0" / "0000.mp4"
    assert copied.read_bytes() == (tmp_path / "samples" / "videos" / "0.mp4").read_bytes()
    (tmp_path / "samples" / "manifest.json").write_text((tmp_path / "samples" / "manifest.json").read_text() + " ")
    assert "was replaced after" in run("eval", "report", ev, "-o", tmp_path / "r2", code=2)


def test_a_text_seed_is_refused_not_a_crash(tmp_path):
    ev = CRAFTS["seed_text"](tmp_path)
    assert "videos.0.seed" in run("eval", "compare", ev, code=2)


# ---- escaping ---------------------------------------------------------------------------------------

HOSTILE = "<img src=x onerror=alert(1)> | *bold* _it_ [link](http://e) `code` \\ ~~s~~\nsecond line\u2028third"


def test_markdown_text_shows_the_characters_and_nothing_renders():
    text = markdown_text(HOSTILE)
    assert "\n" not in text and "\u2028" not in text and "<" not in text and ">" not in text
    assert "&lt;img src=x onerror=alert(1)&gt; \\| \\*bold\\* \\_it\\_ \\[link\\](http://e) \\`code\\` \\\\ " in text
    assert markdown_text("a & b") == "a &amp; b"


def test_compare_writes_labels_literally_in_markdown_terminal_and_plot(tmp_path):
    base = eval_artifact(tmp_path / "base", label="base")
    labels = [HOSTILE, r"$\frac{$ and $x^$", "[/bad] [link=file:///etc/passwd]x[/link]"]
    rows = [eval_artifact(tmp_path / f"row{i}", label=label) for i, label in enumerate(labels)]
    text = run("eval", "compare", base, *rows, "-o", tmp_path / "c")
    assert "[/bad]" in text
    md = (tmp_path / "c" / "compare.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 2 + len(labels) and "<img" not in md and "&lt;img" in md
    assert all(line.count(" | ") == table[0].count(" | ") for line in table)   # no cell split or added
    assert (tmp_path / "c" / "quality_vs_cost.png").read_bytes()[:4] == b"\x89PNG"


# ---- VBench import: no overwrite, and report after an import without --export --------------------------

def _results(path: Path, dim: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({dim: [0.9, [{"video_path": f"/v/a cat-{i}.mp4", "video_results": 0.9 - i / 10}
                                            for i in range(2)]]}))
    return path


def test_import_keeps_both_files_of_one_name_and_report_works_without_export(tmp_path):
    a = _results(tmp_path / "a" / "x_eval_results.json", "subject_consistency")
    b = _results(tmp_path / "b" / "x_eval_results.json", "temporal_flickering")
    run("eval", "vbench", "import", a, b, "-o", tmp_path / "imp")
    copies = sorted((tmp_path / "imp" / "vbench").iterdir())
    assert len(copies) == 2 and sorted(p.read_text() for p in copies) == sorted([a.read_text(), b.read_text()])
    body = json.loads((tmp_path / "imp" / "metrics.json").read_text())
    assert sorted(body["results_sources"].values()) == sorted([str(a), str(b)])
    assert sorted(body["results_files"]) == [p.name for p in copies]
    run("eval", "report", tmp_path / "imp", "-o", tmp_path / "rep")
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "No videos" in page and "vbench_temporal_flickering" in page


# ---- names capped in bytes ----------------------------------------------------------------------------

def test_capped_name_keeps_short_names_and_caps_long_ones_in_bytes():
    assert capped_name("a cat", ".mp4") == "a cat.mp4"
    long_a, long_b = "é" * 300 + "a", "é" * 300 + "b"
    name_a, name_b = capped_name(long_a, "-0.mp4"), capped_name(long_b, "-0.mp4")
    assert len(name_a.encode()) <= 120 and name_a != name_b and name_a.endswith("-0.mp4") and "~" in name_a
    assert capped_name("x.json", salt="/a") != capped_name("x.json", salt="/b")


def test_a_325_character_vbench_prompt_gets_a_name_that_can_be_written(tmp_path):
    prompt = "a " + "very " * 64 + "long prompt"
    items = vb.export_items([vb.SuitePrompt(prompt, ("color",)), vb.SuitePrompt(prompt + "!", ("color",))], 2, 0,
                            "vbench")
    names = [it["file"] for it in items]
    assert len(set(names)) == 4 and all(len(n.encode()) <= vb.NAME_BYTES for n in names)
    assert vb.capped_items(items) == items and vb.capped_items(vb.export_items([vb.SuitePrompt("short", ())], 1, 0,
                                                                                "vbench")) == []
    atomic_write_bytes(tmp_path / "videos" / names[0], b"mp4")                 # temp name included: it fits
    assert vb.parse_video_name(names[1])[1] == 1
