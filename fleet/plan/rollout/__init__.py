"""Rollout planning: the pure strategy (rolling steps, canary weights and verdicts, resuming after a crash)."""

from fleet.plan.rollout.strategy import (
    ReplicaState,
    Resume,
    Step,
    Verdict,
    WeightStep,
    canary_verdict,
    canary_weights,
    effective_limits,
    plan_rolling,
    resume_plan,
)

__all__ = [
    "ReplicaState",
    "Resume",
    "Step",
    "Verdict",
    "WeightStep",
    "canary_verdict",
    "canary_weights",
    "effective_limits",
    "plan_rolling",
    "resume_plan",
]
