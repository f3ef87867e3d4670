"""The typed model files besides ``pyramid.json``: ``components.json`` and the transformer's ``config.json``.

Both are checked like recipes (types, ranges, finite numbers; errors name the file, the key, the value
and the fix). The transformer config is also checked against the tensor shapes in its weights'
safetensors header (read without loading a tensor) *before* any model is built: a config that does
not fit its weights would otherwise fail deep inside diffusers, or build a huge model first.
"""
from __future__ import annotations

import functools
import inspect
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator

from pyrawan.errors import InputError
from pyrawan.models.presets import PRESETS
from pyrawan.recipe import MAX_SEED, fail
from pyrawan.recipe_io import describe_errors

COMPONENTS_SCHEMA = "pyrawan.components/1"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
MAX_LAYERS = 1000          # Wan2.1 14B has 40 blocks; far above any real model, far below a typo's 100000

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _plain_name(value: str) -> str:
    """A subfolder of a model folder: one plain name, never a path that leaves it."""
    if not re.fullmatch(r"[\w.-]{1,255}", value) or value in (".", ".."):
        raise fail(f"{value!r} is not a plain subfolder name (letters, digits, '_', '-', '.'); a component is "
                   "read only from inside its model folder")
    return value


class SavedRef(_Strict):
    """A component stored in the artifact itself, in the subfolder ``saved``."""

    saved: str

    @field_validator("saved")
    @classmethod
    def _inside(cls, value: str) -> str:
        return _plain_name(value)


class PresetRef(_Strict):
    """A component of a pyrawan preset, rebuilt from its seed and checked by its state-dict hash."""

    preset: Literal[PRESETS]
    seed: int = Field(ge=0, le=MAX_SEED)
    sha256: Sha256


class FolderRef(_Strict):
    """A component in a local diffusers folder, checked by the hash of every file under its subfolder."""

    path: str = Field(min_length=1, max_length=4096)
    subfolder: str
    files: dict[Annotated[str, Field(max_length=4096)], Sha256] = Field(min_length=1, max_length=100_000)

    @field_validator("subfolder")
    @classmethod
    def _inside(cls, value: str) -> str:
        return _plain_name(value)


class HubRef(FolderRef):
    """A component in a Hugging Face Hub snapshot (repo and commit), checked like a local folder."""

    path: None = None
    repo_id: str = Field(pattern=r"^[A-Za-z0-9][\w.-]*/[\w.-]+$", max_length=200)
    revision: str = Field(pattern=r"^[\w./-]+$", max_length=200)


def _ref_kind(value: Any) -> str | None:
    """The union member of a reference, by the key it holds (its tag is left out of error messages)."""
    kind = next((k for k in ("saved", "preset", "repo_id", "path") if isinstance(value, dict) and k in value), None)
    return kind and f"<{kind}>"


Reference = Annotated[
    Union[Annotated[SavedRef, Tag("<saved>")], Annotated[PresetRef, Tag("<preset>")], Annotated[HubRef, Tag("<repo_id>")],
          Annotated[FolderRef, Tag("<path>")]],
    Discriminator(_ref_kind, custom_error_type="reference",
                  custom_error_message="not a component reference: it needs one of the keys saved, preset, repo_id "
                                       "or path (with their other keys)"),
]


class Components(_Strict):
    """Where each component of a model comes from."""

    tokenizer: Reference
    text_encoder: Reference
    vae: Reference
    transformer: Reference


class ComponentsFile(_Strict):
    """The content of ``components.json``."""

    schema_: Literal["pyrawan.components/1"] = Field(alias="schema")
    components: Components

    def entries(self) -> dict[str, dict[str, Any]]:
        """``{name: entry}`` as plain dicts (the reference's own keys only)."""
        return {name: getattr(self.components, name).model_dump(exclude_none=True) for name in Components.model_fields}


def parse_components(data: Any, source: str) -> dict[str, dict[str, Any]]:
    """The validated entries of a parsed ``components.json``; InputError naming ``source``, key and value."""
    try:
        return ComponentsFile.model_validate(data).entries()
    except ValidationError as err:
        raise InputError(f"{source} is not a valid {COMPONENTS_SCHEMA} file: {describe_errors(err)}. The file was "
                         "changed, damaged or written by another tool; re-create the artifact with the command "
                         "that made it.") from None


def parse_reference(entry: Any, source: str, name: str) -> dict[str, Any]:
    """One validated ``components.json`` entry (also used where the entries travel in a file's header)."""
    return parse_components({"schema": COMPONENTS_SCHEMA, "components": {
        n: entry if n == name else {"saved": n} for n in Components.model_fields}}, source)[name]


# ---- the transformer's config.json -------------------------------------------------------------------

Dim = Annotated[int, Field(ge=1, le=1_000_000)]


class TransformerConfig(BaseModel):
    """The keys of a ``WanTransformer3DModel`` config that size the model (others pass through unchecked)."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    patch_size: tuple[Annotated[int, Field(ge=1, le=64)], Annotated[int, Field(ge=1, le=64)],
                      Annotated[int, Field(ge=1, le=64)]]
    num_attention_heads: int = Field(ge=1, le=1024)
    attention_head_dim: int = Field(ge=2, le=4096)
    in_channels: int = Field(ge=1, le=4096)
    out_channels: int | None = Field(ge=1, le=4096)
    text_dim: Dim
    freq_dim: Dim
    ffn_dim: Dim
    num_layers: int = Field(ge=1, le=MAX_LAYERS)
    eps: float = Field(gt=0, le=1)
    rope_max_seq_len: Dim
    cross_attn_norm: bool
    qk_norm: str | None = Field(max_length=100)
    image_dim: Dim | None
    added_kv_proj_dim: Dim | None
    pos_embed_seq_len: Dim | None

    @field_validator("attention_head_dim")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise fail(f"must be even (the rotary embedding splits each head into pairs); got {value}")
        return value

    @property
    def inner(self) -> int:
        return self.num_attention_heads * self.attention_head_dim


@functools.cache
def _defaults() -> dict[str, Any]:
    """The constructor defaults of diffusers' ``WanTransformer3DModel`` (a config may leave keys out)."""
    from diffusers import WanTransformer3DModel

    params = inspect.signature(WanTransformer3DModel.__init__).parameters
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


def check_transformer_config(config: Any, source: str) -> TransformerConfig:
    """The validated config (a parsed ``config.json``); InputError naming ``source``, the key, value and fix."""
    if not isinstance(config, dict):
        raise InputError(f"{source} is not a JSON object; re-create or re-download that model folder.")
    try:
        return TransformerConfig.model_validate({**_defaults(), **config})
    except ValidationError as err:
        raise InputError(f"{source} is not a valid transformer config: {describe_errors(err)}. Restore the config "
                         "that came with the weights (re-create or re-download the model folder).") from None


def _weight_files(folder: Path) -> list[Path] | None:
    """The safetensors files of a diffusers component folder (one file, or the shards of its index)."""
    single, index = folder / WEIGHTS_FILE, folder / f"{WEIGHTS_FILE}.index.json"
    if single.is_file():
        return [single]
    try:
        shards = json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    names = sorted({str(s) for s in shards})
    return [folder / n for n in names] if all(Path(n).name == n for n in names) else None


def header_shapes(files: list[Path]) -> dict[str, list[int]] | None:
    """``{tensor name: shape}`` from the safetensors headers of ``files`` (no tensor is read); None if unreadable."""
    from safetensors import SafetensorError, safe_open

    shapes = {}
    try:
        for file in files:
            with safe_open(str(file), framework="pt") as f:
                shapes.update({key: list(f.get_slice(key).get_shape()) for key in f.keys()})
    except (OSError, SafetensorError, ValueError, RuntimeError):
        return None                             # the loader reports a damaged file by name
    return shapes


def expected_shapes(c: TransformerConfig) -> dict[str, tuple[list[int], str]]:
    """Tensor -> (shape, the config keys that give it) for the tensors that show every size of the config."""
    out_channels = c.out_channels or c.in_channels
    heads = "num_attention_heads x attention_head_dim"
    return {
        "patch_embedding.weight": ([c.inner, c.in_channels, *c.patch_size], f"{heads}, in_channels, patch_size"),
        "condition_embedder.text_embedder.linear_1.weight": ([c.inner, c.text_dim], f"{heads}, text_dim"),
        "condition_embedder.time_embedder.linear_1.weight": ([c.inner, c.freq_dim], f"{heads}, freq_dim"),
        "blocks.0.attn1.to_q.weight": ([c.inner, c.inner], heads),
        "blocks.0.ffn.net.0.proj.weight": ([c.ffn_dim, c.inner], f"ffn_dim, {heads}"),
        "proj_out.weight": ([out_channels * math.prod(c.patch_size), c.inner], f"out_channels x patch_size, {heads}"),
    }


def shape_problems(c: TransformerConfig, shapes: dict[str, list[int]]) -> list[str]:
    """Where the config and the weights' tensor shapes disagree (block count first: it sizes the model)."""
    blocks = {int(m.group(1)) for key in shapes if (m := re.match(r"blocks\.(\d+)\.", key))}
    problems = []
    if blocks != set(range(c.num_layers)):
        problems.append(f"num_layers = {c.num_layers} but the weights hold {len(blocks)} blocks"
                        + ("" if blocks == set(range(len(blocks))) else f" (numbered {sorted(blocks)[:8]}...)"))
    for key, (wanted, keys) in expected_shapes(c).items():
        if key in shapes and shapes[key] != wanted:
            problems.append(f"{key} is {shapes[key]} in the weights but the config ({keys}) gives {wanted}")
    return problems


def check_transformer_folder(folder: Path) -> None:
    """Check ``folder/config.json`` against the header of its weights before the transformer is built.

    An unreadable config or weights file is left to the loader, which names it.
    """
    check_transformer_files(read_json_or_none(folder / "config.json"), folder / "config.json", _weight_files(folder))


def read_json_or_none(path: Path) -> Any:
    """The parsed JSON file, or None when it cannot be read (its loader reports that by name)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def check_transformer_files(raw: Any, source: Path, files: list[Path] | None) -> None:
    """The config ``raw`` (read from ``source``; None: unreadable, left to the loader) is valid and fits the
    tensors of ``files``."""
    if raw is None:
        return
    config = check_transformer_config(raw, str(source))
    shapes = header_shapes(files) if files else None
    problems = shape_problems(config, shapes) if shapes is not None else []
    if problems:
        where = files[0] if len(files) == 1 else files[0].parent
        raise InputError(f"{source} does not fit the weights in {where}: {'; '.join(problems)}. The config was "
                         "changed or belongs to another model; restore the config.json that came with the weights.")


@functools.cache
def adaptable_modules() -> frozenset[str]:
    """Names of the layers of a Wan2.1 transformer that LoRA can adapt (one block; built on the meta device)."""
    import torch
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        model = WanTransformer3DModel(num_attention_heads=1, attention_head_dim=8, ffn_dim=8, num_layers=1,
                                      text_dim=8, freq_dim=8, rope_max_seq_len=8)
    kinds = (torch.nn.Linear, torch.nn.Conv3d, torch.nn.Embedding)
    return frozenset(name for name, module in model.named_modules() if isinstance(module, kinds))


def unknown_lora_targets(targets: tuple[str, ...]) -> list[str]:
    """The targets that name no adaptable layer of a Wan2.1 transformer (peft's rule: the name or a dotted suffix)."""
    names = adaptable_modules()
    block0 = [re.sub(r"^blocks\.\d+\.", "blocks.0.", t) for t in targets]
    return [t for t, b in zip(targets, block0) if not any(n == b or n.endswith("." + b) for n in names)]
