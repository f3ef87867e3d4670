"""Pyramidal model artifacts: the changed components in diffusers layout plus references to the rest.

Layout of ``out_dir``::

    transformer/{config.json, diffusion_pytorch_model.safetensors}   # each changed component
    components.json   # {"schema": ..., "components": {name: entry}}
    pyramid.json      # the pyramid definition (``pyramid_spec.PyramidSpec``)

A ``components.json`` entry is ``{"saved": "<subfolder>"}`` for a component stored in the artifact,
or a reference with hashes: ``{"preset", "seed", "sha256"}`` (sha256 of the freshly built fp32
state dict), ``{"path", "subfolder", "files": {relative file: sha256}}`` for a local folder, or
``{"repo_id", "revision", "subfolder", "files"}`` for a Hub snapshot. The two JSON files are
written last, so a folder holding both is complete.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pyrawan.errors import InputError
from pyrawan.fsutil import atomic_path, atomic_write_text, sha256_tree
from pyrawan.models.loading import load_component, load_components, resolve_hub
from pyrawan.models.model_files import COMPONENTS_SCHEMA, check_transformer_folder, parse_components, parse_reference
from pyrawan.models.presets import COMPONENT_NAMES, WanComponents, build_preset
from pyrawan.models.pyramid_spec import PyramidSpec

PYRAMID_FILE = "pyramid.json"
COMPONENTS_FILE = "components.json"


@dataclass
class LoadedModel:
    """A loaded stack, its pyramid definition (``None`` for a plain model) and artifact folder."""

    components: WanComponents
    spec: PyramidSpec | None
    path: Path | None

    @property
    def pyramid(self) -> dict[str, Any] | None:
        """``pyramid.json`` as plain data (read-only view of ``spec``)."""
        return None if self.spec is None else self.spec.to_dict()


def state_dict_sha256(module: torch.nn.Module) -> str:
    """sha256 over sorted (name, dtype, shape, raw bytes) of a module's state dict."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def tokenizer_sha256(tokenizer: Any) -> str:
    """sha256 of a tokenizer's class name and sorted vocabulary (canonical JSON)."""
    body = {"class": type(tokenizer).__name__, "vocab": sorted(tokenizer.get_vocab().items())}
    return hashlib.sha256(json.dumps(body, separators=(",", ":")).encode()).hexdigest()


def preset_sha256(name: str, seed: int, component: str) -> str:
    """Fingerprint of one component of a freshly built fp32 CPU preset."""
    built = build_preset(name, seed=seed)
    obj = getattr(built, component)
    return tokenizer_sha256(obj) if component == "tokenizer" else state_dict_sha256(obj)


def reference_entry(component: str, source: dict[str, Any]) -> dict[str, Any] | None:
    """The ``components.json`` reference for an unchanged component, or None if not referenceable."""
    if "preset" in source:
        return {"preset": source["preset"], "seed": source["seed"],
                "sha256": preset_sha256(source["preset"], source["seed"], component)}
    if "path" not in source or "subfolder" not in source:
        return None                                   # e.g. a single-file transformer: save it
    files = sha256_tree(source["path"], source["subfolder"])
    if "repo_id" in source:
        return {"repo_id": source["repo_id"], "revision": source["revision"],
                "subfolder": source["subfolder"], "files": files}
    return {"path": source["path"], "subfolder": source["subfolder"], "files": files}


def _save_component(out_dir: Path, name: str, obj: Any) -> list[Path]:
    """``save_pretrained`` (safetensors) into ``out_dir/name`` atomically; returns the files."""
    with atomic_path(out_dir / name, is_dir=True) as tmp:
        if name == "tokenizer":
            obj.save_pretrained(tmp)
        else:
            obj.save_pretrained(tmp, safe_serialization=True)
    return sorted(p for p in (out_dir / name).rglob("*") if p.is_file())


def _dump(obj: Any) -> str:
    """Pretty, key-sorted JSON text with a trailing newline."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def save_model(
    out_dir: Path,
    components: WanComponents,
    pyramid: PyramidSpec,
    changed: tuple[str, ...] | list[str] = ("transformer",),
) -> list[Path]:
    """Write a pyramidal model artifact to ``out_dir``; returns the written files.

    Components in ``changed`` (and unchanged ones that cannot be referenced) are saved in
    diffusers layout; the others are referenced with hashes in ``components.json``.
    """
    unknown = set(changed) - set(COMPONENT_NAMES)
    if unknown:
        raise InputError(f"save_model: unknown component(s) {sorted(unknown)} in changed; "
                         f"use names from {list(COMPONENT_NAMES)}.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries: dict[str, Any] = {}
    written: list[Path] = []
    for name in COMPONENT_NAMES:
        ref = None if name in changed else reference_entry(name, components.source.get(name, {}))
        if ref is None:
            written += _save_component(out_dir, name, getattr(components, name))
            ref = {"saved": name}
        entries[name] = ref
    written.append(atomic_write_text(out_dir / PYRAMID_FILE, _dump(pyramid.to_dict())))
    body = {"schema": COMPONENTS_SCHEMA, "components": entries}
    written.append(atomic_write_text(out_dir / COMPONENTS_FILE, _dump(body)))
    return written


def is_artifact(path: Path) -> bool:
    """True when ``path`` is a folder holding both ``pyramid.json`` and ``components.json``."""
    return (path / PYRAMID_FILE).is_file() and (path / COMPONENTS_FILE).is_file()


def _read_json(path: Path) -> Any:
    """Parse a JSON file, InputError on a syntax error."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"Cannot read {path}: {err}. The artifact is damaged; re-create it "
                         "(e.g. re-run the convert step).") from err


def _mismatch(artifact: Path, name: str, what: str) -> InputError:
    """The InputError for a referenced component that no longer matches its recorded hash."""
    return InputError(
        f"The artifact {artifact} references its {name} from {what}, but that component no longer "
        f"matches the sha256 recorded in {artifact / COMPONENTS_FILE}. The referenced files were "
        "changed or replaced (or the pyrawan preset definition changed). Restore the original "
        "component or re-create the artifact from the current one."
    )


def _verify_files(
    artifact: Path, name: str, folder: Path, entry: dict[str, Any], what: str, exact: bool
) -> None:
    """Raise ``_mismatch`` unless the recorded files under ``folder`` have their recorded sha256.

    ``exact`` also rejects files that were not recorded (local folders); a Hub snapshot may hold
    extra files from other downloads, so there only the recorded ones are checked.
    """
    files: dict[str, str] = entry.get("files") or {}
    sub = folder / entry["subfolder"]
    actual = sha256_tree(folder, entry["subfolder"]) if sub.is_dir() else {}
    if not exact:
        actual = {rel: actual.get(rel) for rel in files}
    if not files or actual != files:
        raise _mismatch(artifact, name, what)


def _check_entry(artifact: Path, name: str, entry: Any) -> dict[str, Any]:
    """The validated ``components.json`` entry for ``name`` (a reference of one known kind; InputError otherwise)."""
    return parse_reference(entry, str(artifact / COMPONENTS_FILE), name)


def _check_transformer(artifact: Path, entry: dict[str, Any]) -> None:
    """The transformer's config against its weights' header, before any component is built."""
    if "saved" in entry:
        check_transformer_folder(artifact / entry["saved"])
    elif "path" in entry:
        check_transformer_folder(Path(entry["path"]) / entry["subfolder"])


def _load_reference(
    artifact: Path, name: str, entry: dict[str, Any], device: str | torch.device, dtype: torch.dtype
) -> tuple[Any, dict[str, Any]]:
    """Load one component named by a ``components.json`` entry, verifying its hashes."""
    if "saved" in entry:
        return (load_component(name, artifact, entry["saved"], device, dtype),
                {"path": str(artifact.resolve()), "subfolder": entry["saved"]})
    if "preset" in entry:
        if preset_sha256(entry["preset"], entry["seed"], name) != entry.get("sha256"):
            raise _mismatch(artifact, name, f"preset {entry['preset']!r} (seed {entry['seed']})")
        built = build_preset(entry["preset"], seed=entry["seed"], device=device, dtype=dtype,
                             vae_dtype=dtype)
        return getattr(built, name), {"preset": entry["preset"], "seed": entry["seed"]}
    if "repo_id" in entry:
        spec = f"{entry['repo_id']}@{entry['revision']}"
        folder, origin = resolve_hub(spec, allow_patterns=sorted(entry.get("files") or {}))
        what, exact = f"the Hub snapshot {spec}", False
    else:
        folder, origin = Path(entry["path"]), {"path": entry["path"]}
        what, exact = f"the folder {entry['path']}", True
        if not folder.is_dir():
            raise InputError(f"The artifact {artifact} references its {name} from {folder}, which does "
                             "not exist (moved or deleted). Restore it at that path or re-create the artifact.")
    _verify_files(artifact, name, folder, entry, what, exact)
    obj = load_component(name, folder, entry["subfolder"], device, dtype)
    return obj, {**origin, "subfolder": entry["subfolder"]}


def load_artifact(
    path: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    vae_dtype: torch.dtype | None = torch.float32,
) -> LoadedModel:
    """Load a saved pyramidal artifact folder (see module docstring)."""
    spec = PyramidSpec.parse(_read_json(path / PYRAMID_FILE), str(path / PYRAMID_FILE))
    entries = parse_components(_read_json(path / COMPONENTS_FILE), str(path / COMPONENTS_FILE))
    _check_transformer(path, entries["transformer"])
    parts: dict[str, Any] = {"source": {}}
    for name in COMPONENT_NAMES:
        comp_dtype = (vae_dtype or dtype) if name == "vae" else dtype
        parts[name], parts["source"][name] = _load_reference(path, name, entries[name], device, comp_dtype)
    return LoadedModel(WanComponents(**parts), spec, path.resolve())


def load_model(
    spec: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    config_from: str | None = None,
    vae_dtype: torch.dtype | None = torch.float32,
) -> LoadedModel:
    """Load a pyramidal artifact folder, or anything ``load_components`` accepts (``pyramid=None``)."""
    path = Path(str(spec)).expanduser()
    if path.is_dir() and ((path / PYRAMID_FILE).exists() or (path / COMPONENTS_FILE).exists()):
        if not is_artifact(path):
            raise InputError(f"{path} looks like an unfinished pyrawan artifact: it needs both "
                             f"{PYRAMID_FILE} and {COMPONENTS_FILE}. Re-run the step that writes it.")
        return load_artifact(path, device, dtype, vae_dtype)
    comps = load_components(str(spec), device=device, dtype=dtype, config_from=config_from,
                            vae_dtype=vae_dtype)
    return LoadedModel(comps, None, None)
