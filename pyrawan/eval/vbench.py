"""VBench and VBench-2.0: the prompt suite, VBench's file naming, and its result files.

pyrawan never runs VBench (it needs a GPU, its own environment and downloaded weights; see
docs/eval.md). ``export`` samples the suite's prompts into files VBench reads:
``{prompt}-{index}.mp4`` (VBench; VBench-2.0 truncates the prompt to 180 characters), 5 videos per
prompt (VBench-2.0: 3). ``import`` reads VBench's ``{name}_eval_results.json``:
``{dimension: [mean, [{"video_path": ..., "video_results": score}, ...]]}``.

The prompt list is the package's own ``VBench_full_info.json`` (``vbench`` 0.1.5) or
``VBench2_full_info.json`` (``vbench2``): entries ``{"prompt_en", "dimension": [...], ...}``. It is
read from an installed package (located without importing it) or from a file given by the user.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path, PurePath

from pyrawan.errors import InputError
from pyrawan.fsutil import capped_name

SUITES = {  # suite -> (package, info file, samples per prompt, prompt characters kept in file names)
    "vbench": ("vbench", "VBench_full_info.json", 5, None),
    "vbench2": ("vbench2", "VBench2_full_info.json", 3, 180),
}
RESULTS_SUFFIX = "_eval_results.json"
NAME_BYTES = 200  # a video name's cap: VBench's own prompts (VBench-2.0 cuts them to 180 characters) fit whole


@dataclass(frozen=True)
class SuitePrompt:
    """One prompt of the suite and the dimensions VBench evaluates it on."""

    prompt: str
    dimensions: tuple[str, ...]


def _suite(suite: str) -> tuple[str, str, int, int | None]:
    if suite not in SUITES:
        raise InputError(f"--suite {suite!r} is unknown; use one of {', '.join(SUITES)}.")
    return SUITES[suite]


def installed_info(suite: str) -> tuple[Path | None, str | None]:
    """``(path of the package's prompt file, package version)`` when the package is installed, else ``(None, None)``.

    Found with ``importlib.util.find_spec`` (the package is not imported: its imports need a GPU stack).
    """
    package, filename, _, _ = _suite(suite)
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None, None
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    try:
        version = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        version = None
    return (path if path.is_file() else None), version


def locate_info(suite: str, info: Path | None = None) -> tuple[Path, str | None]:
    """The prompt file to use (``info`` if given, else the installed package's) and the package version."""
    package, filename, _, _ = _suite(suite)
    if info is not None:
        if not Path(info).is_file():
            raise InputError(f"--vbench-info {info} does not exist; give the path of {filename}.")
        return Path(info), None
    path, version = installed_info(suite)
    if path is None:
        pin = "vbench==0.1.5" if suite == "vbench" else "vbench2==0.1.1"
        raise InputError(
            f"the {suite} prompt list ({filename}) was not found: the `{package}` package is not installed here. "
            f"It cannot share pyrawan's environment (it pins transformers and numpy), so fetch its prompt file "
            f"without installing it: `pip download --no-deps {pin} -d vbench-wheel && unzip -o "
            f"vbench-wheel/*.whl '{package}/{filename}' -d vbench-wheel`, then pass "
            f"--vbench-info vbench-wheel/{package}/{filename}.")
    return path, version


def read_suite(path: Path, dimensions: list[str] | None = None) -> list[SuitePrompt]:
    """Unique prompts of a full-info file in file order (dimensions of repeated prompts merged),
    keeping only those evaluated on one of ``dimensions`` (all when None)."""
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: cannot read the VBench prompt list ({err}); give VBench's full-info JSON.") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("prompt_en"), str)
                                                for e in entries):
        raise InputError(f"{path} is not a VBench full-info file: it must be a list of {{\"prompt_en\", "
                         f"\"dimension\"}} entries.")
    merged: dict[str, list[str]] = {}
    for e in entries:
        dims = e.get("dimension") or []
        merged.setdefault(e["prompt_en"], [])
        merged[e["prompt_en"]] += [d for d in ([dims] if isinstance(dims, str) else dims) if d not in merged[e["prompt_en"]]]
    known = sorted({d for dims in merged.values() for d in dims})
    unknown = [d for d in dimensions or [] if d not in known]
    if unknown:
        raise InputError(f"--dimension {', '.join(unknown)}: not in {path}; it has: {', '.join(known)}.")
    prompts = [SuitePrompt(p, tuple(d)) for p, d in merged.items()]
    return [p for p in prompts if dimensions is None or set(p.dimensions) & set(dimensions)]


def video_name(prompt: str, index: int, suite: str = "vbench") -> str:
    """VBench's file name of video ``index`` of ``prompt``: ``{prompt}-{index}.mp4`` (vbench2: prompt[:180]).

    A prompt longer than NAME_BYTES bytes of UTF-8 is cut and tagged with a hash of the whole prompt
    (``capped_name``): no file system takes it whole, and VBench's standard mode cannot find it then (use
    ``--mode custom_input`` with ``prompts.json``).
    """
    keep = _suite(suite)[3]
    if "/" in prompt or "\0" in prompt:
        raise InputError(f"prompt {prompt!r} contains '/', which cannot be part of a file name; VBench prompts never do.")
    return capped_name(prompt[:keep] if keep else prompt, f"-{index}.mp4", NAME_BYTES)


def capped_items(items: list[dict], suite: str = "vbench") -> list[dict]:
    """Export items whose file name is not VBench's own (the prompt was too long to keep whole)."""
    keep = _suite(suite)[3]
    return [it for it in items if it["file"] != f"{it['prompt'][:keep] if keep else it['prompt']}-{it['index']}.mp4"]


def samples_per_prompt(suite: str, given: int | None = None) -> int:
    """``given`` or the suite's standard count (VBench 5, VBench-2.0 3)."""
    count = _suite(suite)[2] if given is None else int(given)
    if count < 1:
        raise InputError(f"--samples-per-prompt {given} must be at least 1 (VBench's standard is {_suite(suite)[2]}).")
    return count


def export_items(prompts: list[SuitePrompt], per_prompt: int, seed: int, suite: str) -> list[dict]:
    """``{"file", "prompt", "index", "seed", "dimensions"}`` per video; video ``i`` of every prompt uses
    ``seed + i`` (the seed is set at the start of each prompt, as VBench asks)."""
    items = [{"file": video_name(p.prompt, i, suite), "prompt": p.prompt, "index": i, "seed": seed + i,
              "dimensions": list(p.dimensions)} for p in prompts for i in range(per_prompt)]
    names = [it["file"] for it in items]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise InputError(f"two prompts give the same file name {dup!r} (prompts that agree in their first 180 "
                         f"characters); drop one of them from the prompt list.")
    return items


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---- results -------------------------------------------------------------------------------------

def parse_video_name(path: str) -> tuple[str, int | None]:
    """``(prompt, index)`` from a VBench video path ``.../{prompt}-{index}.mp4`` (index None if absent)."""
    stem = PurePath(str(path).replace("\\", "/")).name
    stem = stem[: -len(PurePath(stem).suffix)] if PurePath(stem).suffix else stem
    head, _, tail = stem.rpartition("-")
    return (head, int(tail)) if head and tail.isdigit() else (stem, None)


def _score(value) -> float | None:
    """A per-video VBench value as a float (bools count 0/1); None for anything else."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(float(value)):
        return float(value)
    return None


def read_results(path: Path) -> dict[str, tuple[float | None, list[dict]]]:
    """``{dimension: (VBench's mean, [{"video_path", "video_results"}, ...])}`` of one results file."""
    try:
        body = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: cannot read VBench results ({err}); give the {{name}}{RESULTS_SUFFIX} file "
                         f"VBench's evaluate wrote.") from None
    shape = ("VBench results must map each dimension to [mean score, [{\"video_path\", \"video_results\"}, ...]] "
             f"as in its {{name}}{RESULTS_SUFFIX}")
    if not isinstance(body, dict) or not body:
        raise InputError(f"{path}: {shape}; this file holds {type(body).__name__}.")
    out = {}
    for dim, value in body.items():
        if not (isinstance(value, list) and len(value) == 2 and isinstance(value[1], list)
                and all(isinstance(r, dict) and "video_path" in r for r in value[1])):
            raise InputError(f"{path}: key {dim!r}: {shape}.")
        out[dim] = (_score(value[0]), value[1])
    return out


def result_records(results: dict[str, tuple[float | None, list[dict]]],
                   exported: dict[str, dict] | None = None) -> tuple[list[dict], dict[str, float | None]]:
    """Per-video records ``{"index", "prompt", "seed", "video", "values": {"vbench_<dim>": score}}``
    joined over dimensions by file name, and VBench's own mean per dimension.

    ``exported``: ``{file name: export item}`` of the export the videos came from (adds seeds).
    """
    by_file: dict[str, dict] = {}
    for dim, (_, videos) in results.items():
        for r in videos:
            name = PurePath(str(r["video_path"]).replace("\\", "/")).name
            prompt, index = parse_video_name(name)
            item = (exported or {}).get(name, {})
            rec = by_file.setdefault(name, {"prompt": item.get("prompt", prompt), "file": name,
                                            "seed": item.get("seed"), "sample": index, "values": {}})
            score = _score(r.get("video_results"))
            if score is not None:
                rec["values"][f"vbench_{dim}"] = score
    records = [{"index": i, "prompt": r["prompt"], "seed": r["seed"], "sample": r["sample"], "file": r["file"],
                "video": None, "values": r["values"]} for i, r in enumerate(by_file.values())]
    return records, {f"vbench_{dim}": mean for dim, (mean, _) in results.items()}


def metric_info(names: list[str]) -> dict[str, tuple[bool, str, str]]:
    """Every VBench dimension is a score where higher is better."""
    return {n: (True, "", f"VBench {n.removeprefix('vbench_')} (VBench's own model-based score)") for n in names}
