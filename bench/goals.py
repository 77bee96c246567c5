"""The one output format every benchmark ends with: ``GOAL <name> measured=<v> target=<v> PASS|FAIL``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Goal:
    name: str
    measured: float
    target: float
    higher_is_better: bool = True

    @property
    def passed(self) -> bool:
        return self.measured >= self.target if self.higher_is_better else self.measured <= self.target

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return f"GOAL {self.name} measured={self.measured:.3g} target={self.target:g} {verdict}"


def report(*goals: Goal) -> int:
    """Print each goal; the exit code says whether all passed."""
    for goal in goals:
        print(goal.line(), flush=True)
    return 0 if all(g.passed for g in goals) else 1
