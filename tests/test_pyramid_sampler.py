"""Samplers: the one-stage case is Wan's Euler sampler; with an exact velocity every stage lands exactly."""
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from pyrawan.errors import InputError
from pyrawan.pyramid.config import PyramidConfig
from pyrawan.pyramid.process import per_frame
from pyrawan.pyramid.sampler import default_fewstep_levels, sample_fewstep, sample_multistep

NAMES = ["haar", "dct", "db4"]


def toy_velocity(x, sigma_nat):
    """A smooth nonlinear stand-in for a network: depends on x and on the per-frame level."""
    s = per_frame(sigma_nat, x)
    return torch.tanh(x) * (1 + s) - 0.3 * x.roll(1, dims=-1) * s


@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0])
@pytest.mark.parametrize("steps", [1, 4, 10])
def test_one_stage_equals_diffusers_flow_match_euler(steps, shift):
    noise = torch.randn(2, 4, 3, 6, 6, generator=torch.Generator().manual_seed(steps))
    ours = sample_multistep(toy_velocity, noise, PyramidConfig(num_stages=1), [steps], shift=shift)

    sched = FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(sigmas=torch.linspace(1, 0, steps + 1)[:-1].numpy())
    x = noise.clone()
    for t in sched.timesteps:
        sigma = torch.full((x.shape[2],), float(t) / 1000)
        x = sched.step(toy_velocity(x, sigma), t, x, return_dict=False)[0]
    assert torch.allclose(ours, x, atol=1e-5), (ours - x).abs().max()


def oracle(pyramid, shapes, x0_stages, first_stage):
    """The exact velocity when the data is the single point x0 (Definition 1 stage data).

    From x and its level, recover the noise of the straight path it lies on, then return (y_n - y_c)/d.
    """
    resize = pyramid.resize

    def velocity(x, sigma_nat):
        stage = shapes.index(tuple(x.shape[-3:]))
        sc, sn = pyramid.levels(stage, x.shape[-3], top=stage == first_stage)
        rho = float(((sigma_nat - sc) / (sn - sc))[0])
        x0 = x0_stages[stage]
        x0_up = None if stage == first_stage else resize.up(x0_stages[stage + 1])
        c, n = (per_frame(v, x) for v in (sc, sn))
        signal = (1 - rho) * (1 - c) * x0 + (0 if x0_up is None else rho * (1 - n) * x0_up)
        eps = (x - signal) / per_frame(sigma_nat, x)
        y_c = (1 - c) * x0 + c * eps
        y_n = eps if x0_up is None else (1 - n) * x0_up + n * eps
        return (y_n - y_c) / (n - c)

    return velocity


def three_stage_problem(name, keep_time=False, seed=0):
    pyramid = PyramidConfig(num_stages=3, boundaries=(0.25, 0.6), resizer=name, keep_time=keep_time)
    shapes = pyramid.shapes((5, 8, 8))
    x0 = torch.randn(2, 2, *shapes[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x0_stages = [x0]
    for _ in range(2):
        x0_stages.append(pyramid.resize.down(x0_stages[-1]))
    return pyramid, shapes, x0_stages


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("keep_time", [False, True])
@pytest.mark.parametrize("schedule,shift", [((3, 2, 2), 1.0), ((2, 3, 4), [2.0, 1.0, 3.0]), ((0, 2, 3), 1.0), ((0, 0, 4), 3.0)])
def test_multistep_with_exact_velocity_lands_on_the_data(name, keep_time, schedule, shift):
    pyramid, shapes, x0_stages = three_stage_problem(name, keep_time)
    first = next(2 - k for k, n in enumerate(schedule) if n)
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(2, 2, *shapes[first], generator=g, dtype=torch.float64)
    out = sample_multistep(oracle(pyramid, shapes, x0_stages, first), noise, pyramid, schedule, shift, generator=g)
    assert out.shape == x0_stages[0].shape
    assert torch.allclose(out, x0_stages[0], atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("schedule", [(2, 2, 1), (1, 1, 1), (0, 0, 2), (0, 3, 1)])
def test_fewstep_with_exact_velocity_lands_on_the_data(name, schedule):
    pyramid, shapes, x0_stages = three_stage_problem(name)
    first = next(2 - k for k, n in enumerate(schedule) if n)
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(2, 2, *shapes[first], generator=g, dtype=torch.float64)
    levels = default_fewstep_levels(schedule)
    out = sample_fewstep(oracle(pyramid, shapes, x0_stages, first), noise, pyramid, levels, generator=g)
    assert torch.allclose(out, x0_stages[0], atol=1e-8)


def test_same_seed_same_video_and_different_seed_differs():
    pyramid = PyramidConfig(num_stages=3, resizer="dct")
    def run(seed):
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(1, 2, 2, 2, 2, generator=g)
        return sample_multistep(toy_velocity, noise, pyramid, (2, 2, 2), generator=g)
    assert torch.equal(run(0), run(0)) and not torch.allclose(run(0), run(1))


def test_fewstep_must_start_from_pure_noise():
    pyramid = PyramidConfig(num_stages=2)
    with pytest.raises(InputError, match="rho = 1.0"):
        sample_fewstep(toy_velocity, torch.zeros(1, 1, 3, 4, 4), pyramid, [[0.5], [1.0]])


def test_per_stage_shift_length_is_checked():
    with pytest.raises(InputError, match="one per stage"):
        sample_multistep(toy_velocity, torch.zeros(1, 1, 1, 2, 2), PyramidConfig(num_stages=3), (1, 1, 1), shift=[1.0, 2.0])
