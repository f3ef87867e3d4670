"""Stage geometry, sigma <-> natural maps, boundaries and schedule parsing."""
import pytest
import torch

from pyrawan.errors import InputError
from pyrawan.pyramid.config import PyramidConfig
from pyrawan.pyramid.geometry import check_sizes, stage_shapes
from pyrawan.pyramid.schedule import (
    jump_level,
    natural_to_sigma,
    parse_schedule,
    rho_grid,
    sigma_to_natural,
    stage_levels,
)


def test_paper_stage_shapes():
    assert stage_shapes((21, 56, 104), 3) == [(21, 56, 104), (11, 28, 52), (6, 14, 26)]
    assert stage_shapes((21, 56, 104), 3, keep_time=True) == [(21, 56, 104), (21, 28, 52), (21, 14, 26)]


@pytest.mark.parametrize("shape,dim,stage,near", [
    ((21, 60, 104), "height", 2, "56 or 64"),
    ((20, 56, 104), "frames", 1, "17 or 21"),
    ((21, 56, 100), "width", 2, "96 or 104"),
])
def test_shapes_that_do_not_divide_name_dimension_stage_and_nearest_sizes(shape, dim, stage, near):
    with pytest.raises(InputError) as err:
        stage_shapes(shape, 3)
    msg = str(err.value)
    assert f"{dim} = " in msg and f"stage {stage}" in msg and near in msg


def test_pixel_sizes_are_checked_with_the_vae_factors():
    check_sizes({"frames": 81, "height": 448, "width": 832}, 3, frame_unit=4, space_unit=8)
    with pytest.raises(InputError, match="height = 480.*448 or 512"):
        check_sizes({"frames": 81, "height": 480, "width": 832}, 3, frame_unit=4, space_unit=8, what="pixel")
    with pytest.raises(InputError, match="frames = 79"):
        check_sizes({"frames": 79, "height": 448, "width": 832}, 3, frame_unit=4, space_unit=8, what="pixel")


@pytest.mark.parametrize("keep_time", [False, True])
def test_natural_map_inverts_and_commutes_with_the_jump(keep_time):
    sigma = torch.linspace(0.01, 0.99, 17, dtype=torch.float64)
    for stage in (1, 2):
        for b in sigma:
            nat = sigma_to_natural(b, stage, 5, keep_time)
            assert torch.allclose(natural_to_sigma(nat, stage, keep_time), b.expand(5), atol=1e-12)
            m = torch.tensor([4.0] + [4.0 if keep_time else 8.0] * 4, dtype=torch.float64)
            assert torch.allclose(jump_level(nat, m), sigma_to_natural(b, stage - 1, 5, keep_time), atol=1e-12)
    assert jump_level(0.5, 4) == pytest.approx(2 * 0.5 / 1.5)  # Pyramid Flow's 2s / (1 + s)


def test_stage_levels_span_the_pyramid():
    b = (0.3, 0.7)
    sc0, sn0 = stage_levels(b, 0, 5)
    _, sn2 = stage_levels(b, 2, 2)
    assert torch.all(sc0 == 0) and torch.all(sn2 == 1)
    assert torch.allclose(sn0, torch.full((5,), 0.3, dtype=torch.float64))   # stage 0 is natural already
    _, top = stage_levels(b, 1, 3, top=True)
    assert torch.all(top == 1)
    sc1, sn1 = stage_levels(b, 1, 3)
    assert torch.all(sc1 < sn1) and sc1[0] > sc1[1]  # frame 0 (m = 4) is amplified less than later frames


@pytest.mark.parametrize("b,match", [((0.5,), "needs 2"), ((0.6, 0.4), "strictly increasing"), ((0.0, 0.5), "strictly increasing"), ((0.5, 1.0), "strictly increasing")])
def test_bad_boundaries(b, match):
    with pytest.raises(InputError, match=match):
        PyramidConfig(num_stages=3, boundaries=b)


def test_schedules():
    assert parse_schedule("20-20-10", 3) == (20, 20, 10)
    assert parse_schedule("0-0-50", 3) == (0, 0, 50)
    assert parse_schedule("50") == (50,)
    for text, match in [("2-0-1", "skips a stage"), ("20-20", "has 2 stages but the model has 3"),
                        ("0-0-0", "no steps"), ("2x2", "not a schedule")]:
        with pytest.raises(InputError, match=match):
            parse_schedule(text, 3)


def test_rho_grid_is_wan_shift():
    grid = rho_grid(5, 3.0)
    expected = torch.tensor([1.0, 0.9231, 0.8182, 0.6667, 0.4286, 0.0], dtype=torch.float64)
    assert torch.allclose(grid, expected, atol=1e-4)


def test_config_round_trips_through_a_dict():
    cfg = PyramidConfig(num_stages=3, boundaries=(0.2, 0.5), resizer="db4", keep_time=True, extra={"stage_data": 2})
    again = PyramidConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.extra == {"stage_data": 2}
    assert PyramidConfig(num_stages=3).boundaries == pytest.approx((1 / 3, 2 / 3), abs=1e-5)
