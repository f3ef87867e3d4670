"""Property-based fuzzing (hypothesis) of the recipe loader and of dataset metadata: whatever the input,
the answer is a valid object or an ``InputError`` (never another exception), and nothing outside the
dataset folder is ever listed."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from pyrawan.data.config import Data
from pyrawan.data.datasets import scan_dataset
from pyrawan.errors import InputError
from pyrawan.recipe import RECIPE_KINDS, RecipeBase, load_recipe

# 150 examples a property; the fast tier (make test-fast) sets PYRAWAN_FUZZ_EXAMPLES=30.
FUZZ = settings(max_examples=int(os.environ.get("PYRAWAN_FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def key_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key a recipe model accepts (sections and their fields)."""
    paths = []
    for name, field in model.model_fields.items():
        paths.append(prefix + name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            paths += key_paths(field.annotation, f"{prefix}{name}.")
    return paths


KEYS = sorted({p for cls in RECIPE_KINDS.values() for p in key_paths(cls)})
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=20))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)


def outcome(call) -> object:
    """The result of ``call()``, or the InputError it raised; any other exception fails the test."""
    try:
        result = call()
    except InputError as err:
        assert str(err).strip(), "an empty error message"
        result = err
    event(type(result).__name__)   # shown by --hypothesis-show-statistics: both outcomes must occur
    return result


@FUZZ
@given(st.dictionaries(st.sampled_from(KEYS + ["schema_version", "kind", "junk"]), VALUES, max_size=8),
       st.sampled_from(sorted(RECIPE_KINDS)))
@example(data={}, kind="finetune")
@example(data={"seed": 3, "video": {"frames": 17, "height": 64, "width": 64}}, kind="convert")
def test_recipe_files_load_or_fail_with_an_input_error(data, kind):
    body = {"schema_version": 1, "kind": kind, "base": "tiny", **data}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "r.yaml"
        path.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
        result = outcome(lambda: load_recipe(path))
    assert isinstance(result, (RecipeBase, InputError))
    if data in ({}, {"seed": 3, "video": {"frames": 17, "height": 64, "width": 64}}):   # the valid examples load
        assert isinstance(result, RecipeBase) and result.kind == kind and result.seed == data.get("seed", 0)


OVERRIDE_TEXT = st.one_of(st.text(max_size=30), st.integers(-5, 100).map(str), st.floats(0, 10).map(repr),
                         st.sampled_from([".inf", ".nan", "-1", "1e400", "[0.5]", "[0.3, 0.6]", "true", "null",
                                          "2-2-1", "99999999999999999999", "[1, 2, 3]", "cpu", "dct"]))


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(KEYS), OVERRIDE_TEXT), max_size=3))
@example(pairs=[])
@example(pairs=[("seed", "7"), ("pyramid.resizer", "dct")])
def test_overrides_load_or_fail_with_an_input_error(pairs):
    tokens = [f"{key}={text}" for key, text in pairs]
    result = outcome(lambda: load_recipe("tiny", tokens))
    assert isinstance(result, (RecipeBase, InputError))
    if pairs in ([], [("seed", "7"), ("pyramid.resizer", "dct")]):     # the valid examples load and apply
        assert isinstance(result, RecipeBase) and result.seed == (7 if pairs else 0)
        assert result.pyramid.resizer == ("dct" if pairs else load_recipe("tiny").pyramid.resizer)
    if isinstance(result, RecipeBase):             # what loads is finite and within the caps
        assert result.video.height <= 8192 and result.pyramid.stages <= 8 and result.sampling.guidance <= 100


@FUZZ
@given(st.binary(max_size=400))
def test_any_bytes_as_a_recipe_file_load_or_fail_with_an_input_error(raw):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "r.yaml"
        path.write_bytes(raw)
        assert isinstance(outcome(lambda: load_recipe(path)), (RecipeBase, InputError))


ROW_VALUES = st.one_of(st.none(), st.integers(), st.text(max_size=25),
                       st.sampled_from(["clip.mp4", "../out.mp4", "/etc/passwd", "sub/../clip.mp4", "a\x00b.mp4",
                                        "link.mp4", "", " "]))
ROWS = st.lists(st.dictionaries(st.sampled_from(["video", "caption", "file_name", "prompt", "x"]), ROW_VALUES,
                                max_size=3), max_size=6)


def _metadata(layout: str, rows: list[dict], junk: str) -> str:
    if layout == "metadata.jsonl":
        return "".join(json.dumps(r) + "\n" for r in rows) + junk
    if layout == "metadata.json":
        return json.dumps(rows) if not junk else junk
    header = ["video", "caption"]
    lines = [",".join(header)] + [",".join(json.dumps(str(r.get(k, ""))) for k in header) for r in rows]
    return "\n".join(lines) + "\n" + junk


def _all_valid(layout: str, rows: list[dict], junk: str) -> bool:
    """Rows that must all be listed: clean JSON, each naming the one video with a printable caption."""
    return layout != "metadata.csv" and junk == "" and bool(rows) and all(
        set(r) == {"video", "caption"} and r["video"] == "clip.mp4" and isinstance(r["caption"], str)
        and r["caption"].strip() and r["caption"].isprintable() for r in rows)


@FUZZ
@given(st.sampled_from(["metadata.jsonl", "metadata.json", "metadata.csv"]), ROWS, st.text(max_size=40))
@example(layout="metadata.jsonl", rows=[{"video": "clip.mp4", "caption": "a red ball"}] * 2, junk="")
@example(layout="metadata.json", rows=[{"video": "clip.mp4", "caption": "a blue sky"}], junk="")
def test_dataset_metadata_scans_or_fails_with_an_input_error(layout, rows, junk):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "data"
        root.mkdir()
        (root / "clip.mp4").write_bytes(b"not really a video")
        (Path(folder) / "out.mp4").write_bytes(b"outside")
        (root / "link.mp4").symlink_to(Path(folder) / "out.mp4")
        (root / layout).write_text(_metadata(layout, rows, junk), encoding="utf-8")
        result = outcome(lambda: scan_dataset(root, Data()))
        if _all_valid(layout, rows, junk):                # each distinct row listed once, a repeat is bad
            distinct = {(r["video"], r["caption"].strip()) for r in rows}
            assert not isinstance(result, InputError) and len(result.records) == len(distinct), result
            assert [b.reason for b in result.bad] == ["duplicate"] * (len(rows) - len(distinct)), result
        if isinstance(result, InputError):
            return
        resolved = root.resolve()
        for record in result.records:                # only files inside the folder are ever listed
            assert record.path.resolve().is_relative_to(resolved) and record.caption
        assert result.entries == len(result.records) + len(result.bad)
