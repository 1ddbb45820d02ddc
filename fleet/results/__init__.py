"""What operations return: pure values that the façade hands up and the CLI, the TUI and the watcher render."""

from fleet.results.run import Event, Outcome, PlanView, RunResult

__all__ = ["Event", "Outcome", "PlanView", "RunResult"]
