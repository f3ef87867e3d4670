"""Quality of a set of sampled videos: unpaired metrics, ToyBench, and paired metrics against a reference.

A ``SampleSet`` is what was sampled: prompts, seeds, final latents ``[N, 16, T, H, W]``, decoded
float frames ``[N, F, 3, H, W]`` (before mp4), the mp4 paths, and how (model, schedule, sizes,
whether the initial noise was coupled to a full-resolution draw). ``read_sample_set`` builds one
from a ``pyrawan sample`` artifact; ``pyrawan eval quality`` builds one by sampling.

Paired metrics need the *same* prompts, seeds and sizes (``check_pairing`` refuses anything else)
and coupled noise on both sides: a set sampled from uncoupled noise at a coarse first stage has
noise unrelated to the reference's, and its paired metrics are reported as not applicable.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load

from pyrawan.artifact_files import ArtifactFiles
from pyrawan.errors import InputError
from pyrawan.eval import metrics as M

Decode = Callable[[torch.Tensor], torch.Tensor]   # latents [B, 16, T, H, W] -> frames [B, F, 3, H, W] in [0, 1]


@dataclass
class SampleSet:
    """Videos sampled from one model with one schedule (index i: prompt i, seed i)."""

    label: str
    model: str
    prompts: list[str]
    seeds: list[int]
    latents: torch.Tensor                      # [N, 16, T, H, W], normalised
    frames: torch.Tensor | None                # [N, F, 3, H, W] float in [0, 1], decoded before mp4
    videos: list[Path | None]                  # mp4 of each video (absolute), None when not written
    schedule: str | None = None
    video: dict = field(default_factory=dict)  # frames, height, width, fps
    coupled: bool = False                      # initial noise derived from a full-resolution draw
    tflops_per_video: float | None = None
    seconds_per_video: float | None = None
    source: Path | None = None                 # the sample artifact it was read from
    positions: list[int] | None = None         # index of each video in the whole set (a shard); None = 0..N-1
    records: list[dict] = field(default_factory=list)   # samples.jsonl records of the files written

    def __len__(self) -> int:
        return len(self.prompts)

    def index(self, i: int) -> int:
        """Position of video ``i`` of this set in the whole set."""
        return i if self.positions is None else self.positions[i]

    def subset(self, positions: list[int]) -> "SampleSet":
        """The videos at ``positions`` (of a whole set): this rank's shard."""
        pick = lambda xs: [xs[i] for i in positions]  # noqa: E731
        return dataclasses.replace(self, prompts=pick(self.prompts), seeds=pick(self.seeds),
                                   latents=self.latents[positions],
                                   frames=None if self.frames is None else self.frames[positions],
                                   videos=pick(self.videos), positions=list(positions))


def keys_only(label: str, prompts: list[str], seeds: list[int], latent_shape: tuple[int, int, int]) -> SampleSet:
    """What a set will hold, before sampling: prompts, seeds and the latent shape (no data; the latents
    are a zero-stride view). Used to refuse a mismatched reference before any video is sampled."""
    latents = torch.empty(1, 16, *latent_shape).expand(len(prompts), -1, -1, -1, -1)
    return SampleSet(label=label, model="", prompts=list(prompts), seeds=list(seeds), latents=latents, frames=None,
                     videos=[None] * len(prompts))


def first_stage_is_full(schedule: str | None) -> bool:
    """True when a schedule (coarsest first) has steps only at full resolution (``0-0-50``, ``8``)."""
    if not schedule:
        return False
    steps = [int(s) for s in str(schedule).split("-")]
    return all(s == 0 for s in steps[:-1])


def decode_in_batches(decode: Decode, latents: torch.Tensor, batch_size: int,
                      advance: Callable[[int], None] = lambda n=1: None) -> torch.Tensor:
    """Frames ``[N, F, 3, H, W]`` of latents ``[N, 16, T, H, W]``, ``batch_size`` at a time, on the CPU."""
    parts = []
    for k in range(0, len(latents), batch_size):
        parts.append(decode(latents[k:k + batch_size]).float().cpu())
        advance(len(parts[-1]))
    return torch.cat(parts)


SAMPLES_FOLDERS = "a `pyrawan sample` artifact, an eval artifact (`pyrawan eval quality`) or its samples/ folder"


def samples_files(folder: str | Path, what: str = "--samples") -> tuple[ArtifactFiles, str] | None:
    """``(door, prefix)`` when ``folder`` is a folder of videos with a samples manifest: a sample artifact
    (prefix ``""``), an eval-quality artifact (its ``samples/``) or an eval artifact's ``samples/`` folder
    (read through the eval artifact's door, prefix ``"samples/"``). None when it is not a folder with a
    manifest (nor such a subfolder); InputError for an artifact of another kind."""
    folder = Path(folder)
    if (folder / "manifest.json").is_file():
        files = ArtifactFiles(folder, what)
        kind = files.manifest.get("kind")
        if kind == "sample":
            return files, ""
        if kind == "eval-quality" and "samples/samples.jsonl" in files.outputs:
            return files, "samples/"
        raise InputError(f"{what} {folder} is a {kind!r} artifact without sampled videos; give {SAMPLES_FOLDERS}.")
    parent = folder.parent
    if folder.name == "samples" and (parent / "manifest.json").is_file():
        files = ArtifactFiles(parent, what)
        if files.manifest.get("kind") == "eval-quality" and "samples/samples.jsonl" in files.outputs:
            return files, "samples/"
    return None


def _records(files: ArtifactFiles, prefix: str) -> list[dict]:
    """The folder's ``samples.jsonl`` (through its door), each record checked for the keys read here."""
    name = f"{prefix}samples.jsonl"
    if name not in files.outputs:
        raise InputError(f"{files.what} {files.folder} has no {name}; give {SAMPLES_FOLDERS}.")
    records = files.read_jsonl(name)
    for r in records:
        if not (isinstance(r, dict) and type(r.get("index")) is int and isinstance(r.get("prompt"), str)
                and type(r.get("seed")) is int and isinstance(r.get("latents"), str)
                and isinstance(r.get("video"), (str, type(None)))):
            raise InputError(f"{files.folder / name}: a record is not {{index, prompt, seed, latents, "
                             f"video}} as `pyrawan sample` writes it ({str(r)[:80]}); rerun `pyrawan sample`.")
    return records


def read_sample_set(folder: str | Path, label: str | None = None, what: str = "--samples") -> SampleSet:
    """Sampled videos as a SampleSet (latents loaded, frames not decoded yet): a sample artifact, an eval
    artifact or its ``samples/`` (``samples_files``), every file read through the artifact's door (listed,
    inside, hash-checked)."""
    folder = Path(folder)
    found = samples_files(folder, what)
    if found is None:
        raise InputError(f"{what} {folder} is not a folder of videos with a samples manifest (no manifest.json); "
                         f"give {SAMPLES_FOLDERS}.")
    files, prefix = found
    manifest = files.manifest
    resolved = (manifest.get("recipe") or {}).get("resolved") or {}
    records = sorted(_records(files, prefix), key=lambda r: r["index"])
    missing = [r["latents"] for r in records if prefix + r["latents"] not in files.outputs]
    if missing:
        raise InputError(f"{what} {folder}: latents file {missing[0]!r} is missing; pixel metrics are computed "
                         f"from the saved latents (never from the lossy mp4). Rerun `pyrawan sample`.")
    for r in records:
        if r.get("video"):
            files.locate(prefix + r["video"])  # inside and listed; hashed when a report copies it
    latents = torch.cat([_latents(files, prefix + r["latents"]) for r in records])
    schedule = resolved.get("schedule")
    metrics = manifest.get("metrics") or {}
    seconds = metrics.get("seconds_per_video")
    if seconds is None and metrics.get("seconds") is not None and records and not prefix:
        seconds = float(metrics["seconds"]) / len(records)
    coupled = bool(resolved.get("coupled_noise", False)) or first_stage_is_full(schedule)
    root = files.folder / prefix
    return SampleSet(label=label or (files.folder.name if prefix else folder.name), model=str(resolved.get("model")),
                     prompts=[r["prompt"] for r in records], seeds=[int(r["seed"]) for r in records],
                     latents=latents, frames=None, videos=[root / r["video"] if r.get("video") else None
                                                           for r in records],
                     schedule=schedule, video=dict(resolved.get("video") or {}), coupled=coupled,
                     seconds_per_video=seconds, source=files.folder)


def _latents(files: ArtifactFiles, name: str) -> torch.Tensor:
    """The ``latents`` tensor of one sample's safetensors file, parsed from the hash-checked bytes."""
    try:
        return load(files.read_bytes(name))["latents"].float()
    except (KeyError, SafetensorError) as err:
        raise InputError(f"{files.what} {files.folder}: {name} is not a pyrawan latents file ({err}); rerun "
                         f"`pyrawan sample`.") from None


def pairing_problems(a: SampleSet, b: SampleSet) -> list[str]:
    """What differs between two sets that must be paired video by video (empty = comparable)."""
    problems = []
    if len(a) != len(b):
        problems.append(f"{len(a)} videos vs {len(b)} in the reference")
    for name, x, y in (("prompt", a.prompts, b.prompts), ("seed", a.seeds, b.seeds)):
        diff = [i for i, (p, q) in enumerate(zip(x, y)) if p != q]
        if diff:
            i = diff[0]
            problems.append(f"{name}s differ at {len(diff)} video(s), first at index {i}: {x[i]!r} vs {y[i]!r}")
    if tuple(a.latents.shape[1:]) != tuple(b.latents.shape[1:]):
        problems.append(f"latent size {tuple(a.latents.shape[1:])} vs {tuple(b.latents.shape[1:])} "
                        f"(video {a.video or '?'} vs {b.video or '?'})")
    return problems


def check_pairing(a: SampleSet, b: SampleSet) -> None:
    """InputError naming every difference when ``b`` cannot serve as ``a``'s reference."""
    problems = pairing_problems(a, b)
    if problems:
        raise InputError(f"the reference {b.label} was not sampled like {a.label}: " + "; ".join(problems)
                         + ". Sample the reference with the same prompts, seeds and video size (e.g. pass the same "
                         "--prompts/--suite, --seeds and sizes, or let `eval quality --reference MODEL` sample it).")


def toy_prompts(prompts: Sequence[str]) -> bool:
    """True when every prompt is a toy-world caption ToyBench can judge, short ones included
    (``a red square moving left`` is judged on what it names; ``pyrawan.toy.world.parse_caption``)."""
    from pyrawan.toy.world import parse_caption

    try:
        for p in prompts:
            parse_caption(p, partial=True)
    except InputError:
        return False
    return bool(prompts)


def toybench_entry(result: dict) -> dict[str, float]:
    """``toybench_overall`` and ``toybench_<score>`` of one ``score_video`` result; a score the prompt does
    not name (a short caption) is left out, so its mean runs over the videos that name it."""
    scores = {f"toybench_{k}": v for k, v in result["scores"].items() if v is not None}
    return {"toybench_overall": result["overall"], **scores}


def toybench_values(frames: torch.Tensor, prompts: Sequence[str]) -> list[dict[str, float]]:
    """ToyBench overall and per-score values of each video ``[F, 3, H, W]`` against its prompt."""
    from pyrawan.toy.bench import score_video

    return [toybench_entry(score_video(video, prompt)) for video, prompt in zip(frames, prompts)]


def judge_features(video: torch.Tensor, result: dict | None = None) -> list[float]:
    """ToyBench's prompt-free feature vector ``[D]`` of one video ``[F, 3, H, W]`` (for the Fréchet
    distance); taken from a ``score_video`` ``result`` when there is one, else measured."""
    if result is not None:
        return [float(x) for x in result["features"]]
    from pyrawan.toy.bench import feature_vector
    from pyrawan.toy.features import measure_video

    return feature_vector(measure_video(video)).tolist()


def score_sets(samples: SampleSet, reference: SampleSet | None = None, toybench: bool | None = None,
               advance: Callable[[int], None] = lambda n=1: None,
               features: bool = False) -> tuple[list[dict], list[str]]:
    """Per-video records ``{"index", "prompt", "seed", "video", "values"}`` and notes.

    ``toybench=None``: ToyBench when every prompt is a toy-world caption. Paired metrics only with a
    reference (after ``check_pairing``) and coupled noise on both sides; pixel ones need frames.
    ``features``: each record also holds ``"features"``, ToyBench's judge features ``[D]`` (None
    without frames), for a Fréchet distance over the set.
    """
    from pyrawan.toy.bench import score_video

    notes: list[str] = []
    if reference is not None:
        check_pairing(samples, reference)                 # before any scoring
    if not len(samples):                                  # an empty shard
        return [], notes
    values: list[dict[str, float]] = [{} for _ in range(len(samples))]
    judged: list[list[float] | None] = [None] * len(samples)
    if samples.frames is not None:
        toybench = toy_prompts(samples.prompts) if toybench is None else toybench
        for i, row in enumerate(values):                  # one video at a time: a progress bar per video
            video = samples.frames[i:i + 1]
            row.update({name: float(column[0]) for name, column in M.unpaired_metrics(video).items()})
            result = score_video(video[0], samples.prompts[i]) if toybench else None
            if result is not None:
                row.update(toybench_entry(result))
            if features:
                judged[i] = judge_features(video[0], result)
            advance(1)
    else:
        notes.append("no decoded frames: pixel metrics, flicker, motion and ToyBench were not computed")
        advance(len(samples))
    if reference is not None:
        if samples.coupled and reference.coupled:
            frames = samples.frames if reference.frames is not None else None
            paired = M.paired_metrics(samples.latents, reference.latents, frames, reference.frames)
            for name, column in paired.items():
                for row, v in zip(values, column):
                    row[name] = float(v)
            notes.append(f"paired metrics against {reference.label}: same prompts, seeds and sizes, coupled noise")
        else:
            side = samples.label if not samples.coupled else reference.label
            notes.append(f"paired metrics not applicable: {side} was sampled from noise drawn at a coarse stage, not "
                         f"coupled to a full-resolution draw (sample it with `eval quality --model`, which couples)")
    records = [{"index": samples.index(i), "prompt": samples.prompts[i], "seed": samples.seeds[i],
                "video": None if samples.videos[i] is None else str(samples.videos[i]), "values": values[i]}
               for i in range(len(samples))]
    if features:
        for record, vector in zip(records, judged):
            record["features"] = vector
    return records, notes


def relative_videos(records: list[dict], folder: Path) -> list[dict]:
    """Video paths made relative to the eval artifact ``folder`` (posix)."""
    import os

    out = []
    for r in records:
        video = r["video"]
        if video is not None:
            video = Path(os.path.relpath(Path(video).resolve(), folder.resolve())).as_posix()
        out.append({**r, "video": video})
    return out
