"""Load a Wan2.1 stack from a preset, a local diffusers folder, a Hub id or a single transformer file.

Weights are only read from safetensors (``use_safetensors=True``); nothing is ever unpickled.
Reduced precision is applied at load time (``torch_dtype``), which keeps diffusers' fp32 modules.
"""
from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from transformers import AutoTokenizer, UMT5EncoderModel

from pyrawan.errors import InputError, RunError, io_fault_message
from pyrawan.models.ppf import transformer_class
from pyrawan.models.model_files import check_transformer_files, check_transformer_folder, read_json_or_none
from pyrawan.models.presets import COMPONENT_NAMES, PRESETS, WanComponents, build_preset

HUB_ALLOW_PATTERNS = [
    "model_index.json", "*/config.json", "*.json", "*.safetensors", "tokenizer/*", "scheduler/*",
]
HUB_IGNORE_PATTERNS = ["*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.msgpack", "*.h5"]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
HUB_SCHEME = "hf://"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")

ACCEPTED_FORMS = (
    "a preset name ({presets}); a local diffusers pipeline folder containing model_index.json "
    "(as written by WanPipeline.save_pretrained); or a Hugging Face Hub id such as "
    "'Wan-AI/Wan2.1-T2V-1.3B-Diffusers' or 'hf://Wan-AI/Wan2.1-T2V-1.3B-Diffusers' (optionally '@revision'). "
    "A single transformer .safetensors file is also accepted together with config_from (a folder or Hub id)"
).format(presets=", ".join(PRESETS))


def _text_dtype_kw(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """transformers >= 4.56 calls the load dtype ``dtype``; older versions ``torch_dtype``."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def load_component(
    name: str, folder: Path, subfolder: str, device: str | torch.device, dtype: torch.dtype
) -> Any:
    """Load one component (``tokenizer|text_encoder|vae|transformer``) from ``folder/subfolder``."""
    if not (folder / subfolder).is_dir():
        raise InputError(
            f"The model folder {folder} has no '{subfolder}/' subfolder, which is needed for the "
            f"{name}. Pass a complete diffusers Wan2.1 pipeline folder (tokenizer/, text_encoder/, "
            "vae/, transformer/ and model_index.json), e.g. one written by WanPipeline.save_pretrained."
        )
    try:
        with _quiet_diffusers():  # its own "error occurred while trying to fetch" line; ours follows
            return _from_pretrained(name, folder, subfolder, device, dtype)
    except (OSError, ValueError, RuntimeError, TypeError, KeyError, SafetensorError) as err:
        if io_fault_message(err) is not None:
            raise
        raise unreadable_weights(folder / subfolder, name, err) from None


@contextlib.contextmanager
def _quiet_diffusers() -> Iterator[None]:
    from diffusers.utils import logging as dlogging

    level = dlogging.get_verbosity()
    dlogging.set_verbosity(dlogging.CRITICAL)
    try:
        yield
    finally:
        dlogging.set_verbosity(level)


def _from_pretrained(name: str, folder: Path, subfolder: str, device: str | torch.device, dtype: torch.dtype) -> Any:
    """``from_pretrained`` of one component, safetensors only."""
    if name == "tokenizer":
        return AutoTokenizer.from_pretrained(folder, subfolder=subfolder)
    if name == "text_encoder":
        model = UMT5EncoderModel.from_pretrained(
            folder, subfolder=subfolder, use_safetensors=True, **_text_dtype_kw(dtype)
        )
    else:
        cls = AutoencoderKLWan if name == "vae" else transformer_class(folder / subfolder)
        model = cls.from_pretrained(folder, subfolder=subfolder, use_safetensors=True, torch_dtype=dtype)
    return model.to(device).eval()


def unreadable_weights(where: Path, name: str, err: BaseException) -> InputError:
    """The InputError for a component folder whose files cannot be loaded (not safetensors, damaged, mismatched)."""
    others = sorted(p.name for p in where.glob("*") if p.suffix in PICKLE_SUFFIXES) if where.is_dir() else []
    pickles = (f" It holds {', '.join(others)}: pyrawan never loads pickled weights (.bin/.pt/.pth/.ckpt/.pkl); "
               "convert them to safetensors with the tool that made them.") if others else ""
    first = str(err).strip().splitlines()[0].rstrip(".") if str(err).strip() else type(err).__name__
    return InputError(f"cannot load the {name} from {where}: {first[:300]}.{pickles} Weights are read only from "
                      f"valid .safetensors files with a matching config.json; re-create or re-download that folder.")


def load_folder(
    folder: Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    vae_dtype: torch.dtype | None = torch.float32,
    origin: dict[str, Any] | None = None,
    skip: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Load the components of a pipeline folder, except ``skip``. Returns ``{name: object}``.

    Also returns ``"source"``: ``{name: {**origin, "subfolder": name}}``; ``origin`` defaults to
    ``{"path": <absolute folder>}``.
    """
    folder = folder.resolve()
    origin = origin or {"path": str(folder)}
    if "transformer" not in skip:
        check_transformer_folder(folder / "transformer")       # before any component is built
    out: dict[str, Any] = {"source": {}}
    for name in COMPONENT_NAMES:
        if name in skip:
            continue
        comp_dtype = (vae_dtype or dtype) if name == "vae" else dtype
        out[name] = load_component(name, folder, name, device, comp_dtype)
        out["source"][name] = {**origin, "subfolder": name}
    return out


def looks_like_hub_id(spec: str) -> bool:
    """True for ``hf://owner/name[@revision]``, or ``owner/name[@revision]`` whose ``owner`` is no local folder.

    ``runs/pyr`` while ``runs/`` exists is a local path (that may not exist), never a Hub id.
    """
    if spec.startswith(HUB_SCHEME):
        return bool(_HUB_ID.match(spec[len(HUB_SCHEME):]))
    return bool(_HUB_ID.match(spec)) and not Path(spec).exists() and not Path(spec.split("/", 1)[0]).exists()


def missing_local(spec: str) -> str | None:
    """Why ``spec`` names a local path that does not exist (it starts like a path, or its first part
    is an existing folder); None when it exists or is not a local path."""
    if spec.startswith(HUB_SCHEME) or Path(spec).expanduser().exists():
        return None
    first = spec.split("/", 1)[0]
    pathlike = spec.startswith(("/", "./", "../", "~")) or ("/" in spec and Path(first).is_dir())
    if not pathlike:
        return None
    parent = Path(spec).expanduser().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return (f"no such folder: {spec} (the nearest existing folder is {parent}). Check the path; a Hugging Face "
            f"Hub id is read as one only when it is written {HUB_SCHEME}owner/name or its owner is no local folder.")


def resolve_hub(spec: str, allow_patterns: list[str] | None = None) -> tuple[Path, dict[str, str]]:
    """Resolve ``owner/name[@revision]`` to a local snapshot folder via ``snapshot_download``.

    Honours ``HF_HUB_OFFLINE`` (then only the local cache is used). Returns the folder and
    ``{"repo_id", "revision": <commit>, "path": <snapshot folder>}``.
    """
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )

    repo_id, _, revision = spec.partition("@")
    try:
        folder = Path(snapshot_download(
            repo_id, revision=revision or None, allow_patterns=allow_patterns or HUB_ALLOW_PATTERNS,
            ignore_patterns=HUB_IGNORE_PATTERNS,
        ))
    except LocalEntryNotFoundError as err:
        raise InputError(
            f"The model {spec!r} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) "
            f"and downloads are disabled (HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}) "
            "or the Hub cannot be reached. Fix: on a connected machine run "
            f"`hf download {repo_id}` (or `huggingface-cli download {repo_id}`) and copy that cache "
            "here or set HF_HOME to a cache that has it; or pass a local diffusers pipeline folder "
            "instead of the Hub id."
        ) from err
    except (RepositoryNotFoundError, RevisionNotFoundError, GatedRepoError) as err:
        raise InputError(
            f"The Hugging Face Hub refused the model {spec!r}: {err}. Check the repository id and "
            "revision, log in (`hf auth login`) for gated models, or pass a local pipeline folder."
        ) from err
    except Exception as err:  # network failure or Hub outage mid-download
        raise RunError(f"Downloading {spec!r} from the Hugging Face Hub failed: {err}. Retry, or "
                       "download it separately and pass the local folder.") from err
    return folder, {"repo_id": repo_id, "revision": folder.name, "path": str(folder)}


def resolve_folder(spec: str) -> tuple[Path, dict[str, str]]:
    """A pipeline folder for a local folder or Hub id, with its ``origin`` record; else InputError."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise InputError(
                f"The folder {path} has no model_index.json, so it is not a diffusers pipeline "
                f"folder. Accepted model specs: {ACCEPTED_FORMS}."
            )
        return path.resolve(), {"path": str(path.resolve())}
    missing = missing_local(spec)
    if missing:
        raise InputError(f"Model {missing}")
    if path.is_file():
        kind = ("a pickle: pyrawan never loads pickled weights" if path.suffix in PICKLE_SUFFIXES else
                "not a model folder")
        raise InputError(f"Model {spec!r} is a file, {kind}. Give a pipeline folder, or a transformer .safetensors "
                         f"file together with config_from. Accepted model specs: {ACCEPTED_FORMS}.")
    if looks_like_hub_id(spec):
        return resolve_hub(spec.removeprefix(HUB_SCHEME))
    raise InputError(f"Model {spec!r} was not found: it is not a preset, an existing folder or a Hub id. "
                     f"Accepted model specs: {ACCEPTED_FORMS}.")


def load_single_file(
    path: Path, folder: Path, config_from: str, device: str | torch.device, dtype: torch.dtype
) -> WanTransformer3DModel:
    """Load a transformer from one ``.safetensors`` file with the config in ``folder/transformer``."""
    if not (folder / "transformer" / "config.json").is_file():
        raise InputError(
            f"config_from={config_from!r} has no transformer/config.json; it must be a diffusers "
            "Wan2.1 pipeline folder or Hub id whose transformer matches the file "
            f"{path} (e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers)."
        )
    config = folder / "transformer" / "config.json"
    check_transformer_files(read_json_or_none(config), config, [path])
    try:
        with _quiet_diffusers():
            model = WanTransformer3DModel.from_single_file(
                str(path), config=str(folder), subfolder="transformer", torch_dtype=dtype
            )
    except (OSError, ValueError, RuntimeError, TypeError, KeyError, SafetensorError) as err:
        if io_fault_message(err) is not None:
            raise
        raise unreadable_weights(path, "transformer", err) from None
    return model.to(device).eval()


def _components_from_file(
    path: Path, config_from: str | None, device: str | torch.device, dtype: torch.dtype,
    vae_dtype: torch.dtype | None,
) -> WanComponents:
    """Transformer from a single file, everything else from ``config_from``.

    Without ``config_from``: a file written by ``pyrawan export --format single-file`` names its config and
    components itself; a plain Wan2.1 file gets them from the official diffusers repository of its size.
    """
    if not config_from:
        from pyrawan.models.single_file import components_from_file, default_config_from

        own = components_from_file(path, device, dtype, vae_dtype)
        if own is not None:
            return own
        config_from = default_config_from(path)
    folder, origin = resolve_folder(config_from)
    parts = load_folder(folder, device, dtype, vae_dtype, origin, skip=("transformer",))
    parts["transformer"] = load_single_file(path, folder, config_from, device, dtype)
    parts["source"]["transformer"] = {"file": str(path.resolve()), "config_from": config_from}
    return WanComponents(**parts)


def load_components(
    spec: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    config_from: str | None = None,
    vae_dtype: torch.dtype | None = torch.float32,
    seed: int = 0,
) -> WanComponents:
    """Load a full stack from ``spec`` (see ``ACCEPTED_FORMS``).

    ``dtype`` applies to the text encoder and transformer, ``vae_dtype`` (default fp32; ``None``
    = ``dtype``) to the VAE. ``seed`` only matters for presets.
    """
    spec = str(spec)
    if spec in PRESETS:
        return build_preset(spec, seed=seed, device=device, dtype=dtype, vae_dtype=vae_dtype)
    path = Path(spec).expanduser()
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise InputError(f"The transformer file {path} does not exist. Accepted model specs: "
                             f"{ACCEPTED_FORMS}.")
        return _components_from_file(path, config_from, device, dtype, vae_dtype)
    folder, origin = resolve_folder(spec)
    return WanComponents(**load_folder(folder, device, dtype, vae_dtype, origin))
