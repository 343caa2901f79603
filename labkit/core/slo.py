"""Service-level objective and the definition of "recovered", shared by alerts and results.

An event (one finished request) is *bad* when it did not complete, or completed slower than the
SLO's latency threshold. The error budget of a stretch of traffic is ``(1 - target)`` of its
events; the *burn rate* over a window is the bad fraction divided by that allowance, so a burn
rate of 1 spends the budget exactly as fast as the SLO allows (SRE workbook, ch. 5).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SloConfig:
    """``target`` of requests must complete within ``latency_ms``."""

    latency_ms: float = 500.0
    target: float = 0.999

    def __post_init__(self) -> None:
        if self.latency_ms <= 0:
            raise ValueError("SLO latency_ms must be > 0")
        if not 0 < self.target < 1:
            raise ValueError("SLO target must be strictly between 0 and 1")

    @property
    def allowance(self) -> float:
        """The fraction of events allowed to be bad."""
        return 1.0 - self.target

    def burn_rate(self, bad: float, total: float) -> float:
        """Bad fraction over the allowance; 0 when there was no traffic."""
        if total <= 0:
            return 0.0
        return (bad / total) / self.allowance


@dataclass(frozen=True, slots=True)
class RecoveryConfig:
    """When an incident counts as over.

    The baseline is the ``baseline_s`` of measured traffic before a fault starts. The service has
    *recovered* once, for ``hold_s`` consecutive bins of ``bin_s``, p99 is at most
    ``baseline_p99 * (1 + p99_tolerance) + p99_slack_ms`` and the error rate at most
    ``baseline_error_rate + error_rate_tolerance``. The slack keeps a near-zero baseline p99 (an
    idle fleet) from making every wobble count as an incident.
    """

    baseline_s: float = 30.0
    p99_tolerance: float = 0.25
    p99_slack_ms: float = 5.0
    error_rate_tolerance: float = 0.01
    hold_s: float = 3.0
    bin_s: float = 1.0
