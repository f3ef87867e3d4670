"""``eval report``'s page in a real headless Chromium (the system package, driven over a pipe by
``browser.py``): it loads without console errors or failed requests, every video, poster and image
resolves and decodes, and the layout holds at 1280 and 800 pixels wide. Screenshots are left in the
test's tmp folder (``report-1280.png``, ``report-800.png``)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from browser import INSTALL, Page, find_chromium

from pyrawan.commands.eval_compare import run_compare
from pyrawan.data.video import write_video
from pyrawan.eval.artifact import build_eval, write_eval
from pyrawan.manifest import write_manifest
from pyrawan.outputs import artifact_dir

pytestmark = pytest.mark.slow

METRICS = [f"toybench_{n}" for n in ("overall", "detection", "colour", "shape", "size", "direction", "speed", "fd")] + \
    ["pixel_psnr", "pixel_ssim", "latent_psnr", "temporal_flickering"]
PROMPTS = ["a large red square slowly moving right on a plain black background",
           "a small blue circle quickly moving left on a grey background", "a green triangle moving up"]

# Open every section, load every video and poster, and report what did not decode.
LOAD_ALL = """(async () => {
  document.querySelectorAll('details').forEach(d => d.open = true);
  const wait = (el, ok, bad) => new Promise(done => {
    el.addEventListener(ok, () => done(null), {once: true});
    el.addEventListener(bad, () => done(el.src || el.getAttribute('src')), {once: true}); });
  const videos = [...document.querySelectorAll('video')].map(v => {
    const loaded = wait(v, 'loadeddata', 'error'); v.preload = 'auto'; v.load(); return loaded; });
  const posters = [...document.querySelectorAll('video[poster]')].map(v => {
    const img = new Image(); const loaded = wait(img, 'load', 'error'); img.src = v.poster; return loaded; });
  const images = [...document.images].map(i => i.complete ? (i.naturalWidth ? null : i.src) : wait(i, 'load', 'error'));
  const failed = (await Promise.all([...videos, ...posters, ...images])).filter(x => x);
  return {failed, videos: videos.length, posters: posters.length, images: images.length,
          sections: document.querySelectorAll('details').length};
})()"""

LAYOUT = """(() => {
  const box = document.querySelector('.scroll'), first = box.querySelector('tbody th');
  box.scrollLeft = 1e6;
  const v = document.querySelector('details video');
  return {pageOverflow: document.documentElement.scrollWidth - innerWidth,
          tableScrolls: box.scrollWidth > box.clientWidth, stickyGap: first.getBoundingClientRect().left -
          box.getBoundingClientRect().left, videoScale: v.getBoundingClientRect().width / v.videoWidth};
})()"""


def make_eval(folder: Path, label: str, level: float, tflops: float) -> Path:
    """An eval artifact of 6 tiny mp4s (3 prompts × 2 seeds), each with its own value of every metric."""
    with artifact_dir(folder) as tmp:
        videos = []
        for prompt in PROMPTS:
            for seed in range(2):
                k = len(videos)
                frames = torch.zeros(6, 3, 32, 32)
                for t in range(6):
                    frames[t, k % 3, 10:20, 2 + 3 * t:12 + 3 * t] = 1.0
                write_video(tmp / "videos" / f"{k}.mp4", frames, fps=8)
                videos.append({"index": k, "prompt": prompt, "seed": seed, "video": f"videos/{k}.mp4",
                               "values": {m: level + 0.01 * ((k + j) % 5) for j, m in enumerate(METRICS)}})
        write_eval(tmp, build_eval("quality", label, videos, model=label, schedule="2-2-1",
                                   tflops_per_video=tflops, seconds_per_video=tflops / 10))
        write_manifest(tmp, "eval-quality", {"kind": "eval-quality"}, [], {}, None)
    return folder


def test_report_page_loads_cleanly_in_headless_chromium(tmp_path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip(f"needs the system Chromium: `{INSTALL}`")
    paths = [make_eval(tmp_path / "teacher", "teacher <50 steps>", 0.75, 12.0),
             make_eval(tmp_path / "pyramid", "pyramid & finetuned", 0.45, 3.1),
             make_eval(tmp_path / "dmd", "DMD-OT 2-2-1", 0.6, 0.15)]
    run_compare(paths, tmp_path / "report", html=True)

    with Page(chromium, tmp_path / "profile", width=1280) as page:
        page.open((tmp_path / "report" / "index.html").as_uri())
        loaded = page.evaluate(LOAD_ALL)
        assert loaded == {"failed": [], "videos": 3 * 6 + 3 * 6, "posters": 36, "images": 1, "sections": 3}
        for width in (1280, 800):
            page.resize(width, 900)
            page.screenshot(tmp_path / f"report-{width}.png")
            layout = page.evaluate(LAYOUT)
            assert layout["pageOverflow"] <= 0, (width, layout)      # only the tables scroll sideways
            assert abs(layout["stickyGap"]) <= 2, (width, layout)    # the model column stays in view
            assert layout["videoScale"] >= 3, (width, layout)        # 32-px videos drawn at 96 px or more
            page.call("Runtime.evaluate", session=True, expression="document.querySelector('.scroll').scrollLeft = 0")
        assert layout["tableScrolls"]                                # 800 px: 19 columns do not fit
        assert page.problems == []
    assert (tmp_path / "report-800.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
