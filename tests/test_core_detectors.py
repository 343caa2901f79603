"""Tests for ``labkit.core.detectors``: the phi-accrual detector and the detector factory."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.core.detectors import DETECTORS, PhiAccrualDetector, make_detector
from labkit.core.registry import Health, Registry, TimeoutDetector

SETTINGS = settings(derandomize=True, deadline=None, max_examples=150)

LOG10_E = math.log10(math.e)


def akka_phi(dt: float, mean: float, std: float) -> float:
    """φ exactly as Akka's PhiAccrualFailureDetector writes it (both branches)."""
    y = (dt - mean) / std
    e = math.exp(-y * (1.5976 + 0.070566 * y * y))
    if dt > mean:
        return -math.log10(e / (1.0 + e))
    return -math.log10(1.0 - 1.0 / (1.0 + e))


def periodic(detector: PhiAccrualDetector, beats: int, period: float = 1.0, start: float = 0.0):
    """Heartbeats at start, start + period, ...; returns the time of the last one."""
    t = start
    for i in range(beats):
        t = start + i * period
        detector.heartbeat("w", t)
    return t


def first_time(detector: PhiAccrualDetector, last: float, health: Health, step: float) -> float:
    """The first check time (a multiple of ``step`` after ``last``) at which ``health`` holds."""
    for k in range(1, 100_000):
        t = last + k * step
        if detector.health("w", t) is health:
            return t - last
    raise AssertionError("never reached")


# -- construction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"threshold": 0.0}, "threshold"),
        ({"threshold": -1.0}, "threshold"),
        ({"threshold": math.inf}, "threshold"),
        ({"threshold": math.nan}, "threshold"),
        ({"suspect_threshold": 0.0}, "suspect_threshold"),
        ({"threshold": 4.0, "suspect_threshold": 5.0}, "suspect_threshold"),
        ({"window": 0}, "window"),
        ({"window": 2.5}, "window"),
        ({"window": True}, "window"),
        ({"min_std_s": 0.0}, "min_std_s"),
        ({"acceptable_pause_s": -0.1}, "acceptable_pause_s"),
        ({"first_interval_s": 0.0}, "first_interval_s"),
        ({"model": "weibull"}, "model"),
    ],
)
def test_phi_rejects_bad_parameters(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        PhiAccrualDetector(**kwargs)  # type: ignore[arg-type]


def test_phi_defaults() -> None:
    d = PhiAccrualDetector()
    assert (d.threshold, d.suspect_threshold, d.window) == (8.0, 4.0, 100)
    assert (d.min_std_s, d.acceptable_pause_s, d.first_interval_s, d.model) == (
        0.1,
        0.0,
        1.0,
        "normal",
    )
    assert PhiAccrualDetector(threshold=6.0).suspect_threshold == 3.0
    assert PhiAccrualDetector(window=100.0).window == 100  # an integral float is accepted


# -- hand-computed values ---------------------------------------------------------------------


def test_unknown_worker_is_healthy_with_zero_phi() -> None:
    d = PhiAccrualDetector()
    assert d.phi("nobody", 1e6) == 0.0
    assert d.health("nobody", 1e6) is Health.HEALTHY


def test_bootstrap_uses_first_interval_and_a_quarter_of_it() -> None:
    d = PhiAccrualDetector(first_interval_s=2.0)
    d.heartbeat("w", 10.0)
    assert d.stats("w") == (2.0, 0.5, 0)
    # Δt = 3: y = (3 − 2)/0.5 = 2
    assert d.phi("w", 13.0) == pytest.approx(akka_phi(3.0, 2.0, 0.5), abs=1e-12)
    # the bootstrap std is clamped too: 1.0/4 = 0.25 < min_std 0.4
    d = PhiAccrualDetector(first_interval_s=1.0, min_std_s=0.4)
    d.heartbeat("w", 0.0)
    assert d.stats("w") == (1.0, 0.4, 0)


def test_periodic_heartbeats_clamp_std_and_give_the_hand_computed_phi() -> None:
    d = PhiAccrualDetector()
    last = periodic(d, 11)  # 10 intervals of exactly 1 s
    assert last == 10.0
    assert d.stats("w") == (1.0, 0.1, 10)  # std 0 clamps to min_std_s
    # Δt = 1.5: y = (1.5 − 1.0)/0.1 = 5, z = 5·(1.5976 + 0.070566·25) = 16.80875,
    # φ = −log10(e^−z / (1 + e^−z)) = z·log10(e) + log10(1 + e^−z) = 7.2999474
    z = 5 * (1.5976 + 0.070566 * 25)
    assert z == pytest.approx(16.80875, abs=1e-12)
    expected = z * LOG10_E + math.log10(1 + math.exp(-z))
    assert expected == pytest.approx(7.2999474, abs=1e-7)
    assert d.phi("w", 11.5) == pytest.approx(expected, abs=1e-6)
    assert d.phi("w", 11.5) == pytest.approx(akka_phi(1.5, 1.0, 0.1), abs=1e-9)
    # at the mean the approximation gives F = 1/2: φ = log10 2
    assert d.phi("w", 11.0) == pytest.approx(math.log10(2), abs=1e-12)


def test_phi_matches_akka_formula_on_both_sides_of_the_mean() -> None:
    d = PhiAccrualDetector()
    rng = random.Random(3)
    t = 0.0
    d.heartbeat("w", t)
    for _ in range(50):
        t += rng.uniform(0.8, 1.2)
        d.heartbeat("w", t)
    mean, std, n = d.stats("w")
    assert n == 50
    for dt in (0.0, 0.3, 0.9, mean, 1.1, 1.4, 2.0):
        assert d.phi("w", t + dt) == pytest.approx(akka_phi(dt, mean, std), rel=1e-9, abs=1e-12)


def test_exponential_model_is_dt_over_mean_times_log10_e() -> None:
    d = PhiAccrualDetector(model="exponential")
    last = periodic(d, 6, period=2.0)  # mean 2 s (5 intervals: the bootstrap seeds are gone)
    assert d.phi("w", last + 3.0) == pytest.approx(3.0 / 2.0 * LOG10_E, abs=1e-12)
    # threshold 8 is crossed at Δt = 8·ln(10)·mean ≈ 36.84 s
    assert d.phi("w", last + 8 * math.log(10) * 2.0) == pytest.approx(8.0, abs=1e-9)
    # the bootstrap mean is first_interval_s
    d.forget("w")
    d.heartbeat("w", 0.0)
    assert d.phi("w", 4.0) == pytest.approx(4.0 * LOG10_E, abs=1e-12)


def test_acceptable_pause_shifts_the_silence() -> None:
    plain = PhiAccrualDetector()
    paused = PhiAccrualDetector(acceptable_pause_s=0.5)
    for d in (plain, paused):
        periodic(d, 11)
    for dt in (0.2, 1.0, 1.3, 1.5):
        assert paused.phi("w", 10.0 + dt + 0.5) == pytest.approx(plain.phi("w", 10.0 + dt))
    exp_plain = PhiAccrualDetector(model="exponential")
    exp_paused = PhiAccrualDetector(model="exponential", acceptable_pause_s=0.5)
    for d in (exp_plain, exp_paused):
        periodic(d, 11)
    assert exp_paused.phi("w", 10.4) == 0.0
    assert exp_paused.phi("w", 13.5) == pytest.approx(exp_plain.phi("w", 13.0))


# -- detection time -----------------------------------------------------------------------------


def test_time_to_cross_threshold_for_periodic_heartbeats() -> None:
    """1 s heartbeats: mean 1, std clamped to 0.1. φ = 8 ⇔ softplus(z) = 8·ln 10 ⇔ y ≈ 5.2260, so
    DOWN after Δt ≈ 1.5226 s; SUSPECT (φ = 4, y ≈ 3.638) after ≈ 1.3638 s. A registry checking
    every 10 ms sees each within one check interval of that."""
    d = PhiAccrualDetector()
    last = periodic(d, 11)
    step = 0.01
    down = first_time(d, last, Health.DOWN, step)
    suspect = first_time(d, last, Health.SUSPECT, step)
    assert 1.5226 <= down < 1.5226 + step
    assert 1.3638 <= suspect < 1.3638 + step
    assert d.phi("w", last + 1.5225) < 8.0 <= d.phi("w", last + 1.5227)


def test_jitter_raises_std_and_delays_detection() -> None:
    steady = PhiAccrualDetector()
    jittery = PhiAccrualDetector()
    periodic(steady, 101)
    rng = random.Random(7)
    t = 0.0
    jittery.heartbeat("w", t)
    for _ in range(100):
        t += rng.uniform(0.5, 1.5)
        jittery.heartbeat("w", t)
    mean, std, _ = jittery.stats("w")
    assert 0.9 < mean < 1.1
    assert 0.2 < std < 0.4  # uniform(0.5, 1.5) has std 1/√12 ≈ 0.29
    t_steady = first_time(steady, 100.0, Health.DOWN, 0.01)
    t_jittery = first_time(jittery, t, Health.DOWN, 0.01)
    assert t_jittery > t_steady + 0.5
    # the crossing follows mean + 5.226·std
    assert t_jittery == pytest.approx(mean + 5.226 * std, abs=0.02)


def test_health_transitions_through_the_registry() -> None:
    registry = Registry(PhiAccrualDetector())
    changes: list[tuple[str, Health, Health, float]] = []
    registry.add_listener(lambda w, old, new, now: changes.append((w, old, new, now)))
    registry.register("w", ["a"], 0.0)
    for i in range(1, 11):
        registry.heartbeat("w", float(i))
    for k in range(1, 301):  # check every 10 ms for 3 s of silence
        registry.evaluate(10.0 + k / 100)
    assert [(old, new) for _, old, new, _ in changes] == [
        (Health.HEALTHY, Health.SUSPECT),
        (Health.SUSPECT, Health.DOWN),
    ]
    assert changes[0][3] == pytest.approx(11.37)
    assert changes[1][3] == pytest.approx(11.53)
    # a heartbeat brings it back
    registry.heartbeat("w", 13.5)
    registry.evaluate(13.5)
    assert changes[-1][1:3] == (Health.DOWN, Health.HEALTHY)


# -- history handling ---------------------------------------------------------------------------


def test_forget_resets_history() -> None:
    d = PhiAccrualDetector()
    periodic(d, 21, period=3.0)
    assert d.stats("w")[0] == pytest.approx(3.0)
    d.forget("w")
    assert d.phi("w", 1000.0) == 0.0
    assert d.health("w", 1000.0) is Health.HEALTHY
    d.heartbeat("w", 1000.0)  # a restart: re-registration beats again
    assert d.stats("w") == (1.0, 0.25, 0)
    d.forget("unknown")  # no error


def test_duplicate_and_out_of_order_heartbeats_are_ignored() -> None:
    d = PhiAccrualDetector()
    d.heartbeat("w", 0.0)
    d.heartbeat("w", 0.0)  # registration and first heartbeat at the same instant
    d.heartbeat("w", 1.0)
    d.heartbeat("w", 0.5)  # late delivery of an older one
    d.heartbeat("w", 2.0)
    # two real intervals of 1 s, plus Akka's bootstrap seeds 0.75 and 1.25 while few are known
    std = math.sqrt((2 * 0.25**2) / 4)
    assert d.stats("w") == (1.0, pytest.approx(std), 2)
    assert d.phi("w", 2.0) == pytest.approx(akka_phi(0.0, 1.0, std))


def test_window_keeps_only_the_latest_intervals() -> None:
    d = PhiAccrualDetector(window=10)
    t = periodic(d, 21, period=1.0)
    for _ in range(10):
        t += 1.2  # φ at 1.2 s with mean 1, std 0.1 is ~2: still learned
        d.heartbeat("w", t)
    mean, std, n = d.stats("w")
    assert n == 10
    assert mean == pytest.approx(1.2)
    assert std == 0.1


def test_heartbeat_after_a_failure_is_not_learned_but_the_first_interval_is() -> None:
    d = PhiAccrualDetector()
    last = periodic(d, 11)
    assert d.health("w", last + 20.0) is Health.DOWN
    d.heartbeat("w", last + 20.0)  # ends a 20 s partition: not a sample of the period (Akka)
    assert d.stats("w") == (1.0, 0.1, 10)
    assert d.health("w", last + 20.5) is Health.HEALTHY
    # a wrong bootstrap estimate does not lock the detector out: the first interval is learned
    d2 = PhiAccrualDetector(first_interval_s=1.0)
    d2.heartbeat("w", 0.0)
    d2.heartbeat("w", 5.0)
    assert d2.stats("w")[0::2] == (pytest.approx((0.75 + 1.25 + 5.0) / 3), 1)
    for k in range(2, 6):
        d2.heartbeat("w", 5.0 * k)
    assert d2.stats("w") == (5.0, 0.1, 5)


def test_running_sums_stay_exact_over_a_long_run() -> None:
    d = PhiAccrualDetector(window=50)
    rng = random.Random(11)
    t = 1e6  # large timestamps: intervals lose low bits, which the recomputation absorbs
    intervals: list[float] = []
    d.heartbeat("w", t)
    for _ in range(20_000):
        nt = t + rng.uniform(0.5, 1.5)
        intervals.append(nt - t)
        t = nt
        d.heartbeat("w", t)
    window = intervals[-50:]
    mean, std, n = d.stats("w")
    assert n == 50
    assert mean == pytest.approx(statistics.fmean(window), rel=1e-12)
    assert std == pytest.approx(statistics.pstdev(window), rel=1e-9)


def test_workers_are_independent() -> None:
    d = PhiAccrualDetector()
    for i in range(11):
        d.heartbeat("a", float(i))
        d.heartbeat("b", 2.0 * i)
    assert d.stats("a")[0] == 1.0
    assert d.stats("b")[0] == 2.0
    assert d.health("a", 12.0) is Health.DOWN
    assert d.health("b", 21.0) is Health.HEALTHY


# -- properties ---------------------------------------------------------------------------------


@SETTINGS
@given(
    intervals=st.lists(st.floats(0.001, 100.0), min_size=0, max_size=40),
    model=st.sampled_from(["normal", "exponential"]),
    pause=st.floats(0.0, 5.0),
    min_std=st.floats(0.001, 1.0),
    a=st.floats(-10.0, 1e4),
    b=st.floats(-10.0, 1e4),
)
def test_phi_is_non_negative_and_non_decreasing_in_silence(
    intervals: list[float], model: str, pause: float, min_std: float, a: float, b: float
) -> None:
    d = PhiAccrualDetector(model=model, acceptable_pause_s=pause, min_std_s=min_std)
    t = 0.0
    d.heartbeat("w", t)
    for x in intervals:
        t += x
        d.heartbeat("w", t)
    lo, hi = sorted((a, b))
    p_lo, p_hi = d.phi("w", t + lo), d.phi("w", t + hi)
    assert p_lo >= 0.0
    assert not math.isnan(p_hi)
    # non-decreasing, up to the last-bit rounding of exp/log1p
    assert p_hi >= p_lo - 1e-12 * max(1.0, p_lo)


# -- factory ------------------------------------------------------------------------------------


def test_make_detector_builds_both_kinds() -> None:
    assert DETECTORS == ("timeout", "phi_accrual")
    t = make_detector("timeout", suspect_after_s=1.0, down_after_s=3.0)
    assert isinstance(t, TimeoutDetector)
    assert (t.suspect_after_s, t.down_after_s) == (1.0, 3.0)
    p = make_detector("phi_accrual", threshold=10.0, window=20, min_std_s=0.05)
    assert isinstance(p, PhiAccrualDetector)
    assert (p.threshold, p.suspect_threshold, p.window, p.min_std_s) == (10.0, 5.0, 20, 0.05)
    assert isinstance(make_detector("phi_accrual"), PhiAccrualDetector)


def test_make_detector_rejects_unknown_kinds_and_parameters() -> None:
    with pytest.raises(ValueError, match="known: timeout, phi_accrual"):
        make_detector("gossip")
    with pytest.raises(ValueError, match="bogus"):
        make_detector("phi_accrual", bogus=1.0)
    with pytest.raises(ValueError, match="_last"):
        make_detector("timeout", suspect_after_s=1.0, down_after_s=2.0, _last={})
    with pytest.raises(ValueError, match="timeout detector"):
        make_detector("timeout", suspect_after_s=1.0)  # down_after_s missing
    with pytest.raises(ValueError, match="window"):
        make_detector("phi_accrual", window=0)


def test_a_short_first_interval_does_not_lock_the_detector_into_suspicion() -> None:
    """Registration just before the first periodic heartbeat gives one short interval; the
    regular 1 s rhythm after it must still be learned (it once looked like a failure forever)."""
    d = PhiAccrualDetector(threshold=8.0, min_std_s=0.1, first_interval_s=1.0)
    beats = [0.0, 0.1] + [0.1 + k for k in range(1, 30)]
    for t in beats:
        d.heartbeat("w", t)
        assert d.health("w", t + 0.5) is Health.HEALTHY
    mean, _, n = d.stats("w")
    assert n == len(beats) - 1
    assert mean == pytest.approx((29 * 1.0 + 0.1) / 30)
    # and a real silence after it is still detected
    assert d.health("w", beats[-1] + 3.0) is Health.DOWN
