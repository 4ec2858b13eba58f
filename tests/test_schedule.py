import pytest

from fineprune.errors import UsageError
from fineprune.pruning.schedule import cubic_schedule, resolve_steps

# initial 1.0 -> final 0.1, 10 warm-up and 20 cool-down steps in a run of 110: the cubic spans steps 10..90.
ARGS = {"total_steps": 110, "initial": 1.0, "final": 0.1, "warmup_steps": 10, "cooldown_steps": 20}


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 1.0),  # start
        (9, 1.0),  # last warm-up step
        (10, 1.0),  # cubic starts at the initial value
        (30, 0.1 + 0.9 * 0.75**3),  # a quarter of the span: (1 - 20/80)^3 = 0.421875 -> 0.4796875
        (50, 0.2125),  # the midpoint: 0.1 + 0.9 * 0.5^3
        (89, 0.1 + 0.9 * (1 / 80) ** 3),
        (90, 0.1),  # cool-down
        (109, 0.1),
        (500, 0.1),  # past the end
    ],
)
def test_cubic_values(step, expected):
    assert cubic_schedule(step, **ARGS) == pytest.approx(expected, abs=1e-12)


def test_threshold_schedule_rises():
    # soft movement: tau from 0 to 0.1; midpoint 0.1 + (0 - 0.1) * 0.125 = 0.0875
    args = dict(ARGS, initial=0.0, final=0.1)
    assert cubic_schedule(50, **args) == pytest.approx(0.0875)


@pytest.mark.parametrize(("total", "warmup", "cooldown"), [(30, 10, 20), (20, 10, 20), (5, 0, 5)])
def test_run_too_short_is_an_error(total, warmup, cooldown):
    with pytest.raises(UsageError, match=f"has {total} optimizer steps"):
        cubic_schedule(0, total, 1.0, 0.1, warmup, cooldown)


def test_resolve_steps():
    assert resolve_steps(0.1, 1000, "w") == 100
    assert resolve_steps(25, 1000, "w") == 25
    assert resolve_steps(0, 1000, "w") == 0
    with pytest.raises(UsageError, match="pruning.warmup_steps"):
        resolve_steps(-3, 1000, "pruning.warmup_steps")


def test_fractions_of_the_run_round_half_up():
    """Halves go up, as users expect (round() would give 0.05 of 10 steps -> 0 and 0.25 of 10 -> 2), on the
    decimal written: 0.29 of 50 is 14.5 -> 15, though 0.29 * 50 is 14.499999999999998 in binary."""
    assert resolve_steps(0.05, 10, "w") == 1
    assert resolve_steps(0.25, 10, "w") == 3
    assert resolve_steps(0.29, 50, "w") == 15
    assert resolve_steps(0.24, 10, "w") == 2
    assert resolve_steps(0.26, 10, "w") == 3
