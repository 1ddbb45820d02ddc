"""Every key of `fleet ui`, by view: what `?` shows and what the README's key table lists (a test checks that
each binding of the app is here)."""

from __future__ import annotations

KEYS: tuple[tuple[str, str, str], ...] = (
    ("everywhere", "?", "help: this list of keys"),
    ("everywhere", "/", "filter the table (log view: search the lines); esc clears"),
    ("everywhere", "esc", "back to the previous view (or clear the filter)"),
    ("everywhere", "ctrl+p", "command palette: every view and action by name"),
    ("everywhere", "e", "events: what the controller did and when"),
    ("everywhere", "r", "refresh now"),
    ("everywhere", "tab / shift+tab", "next / previous pane"),
    ("everywhere", "q", "quit"),
    ("nodes", "c", "cordon the node (no new replicas placed on it)"),
    ("nodes", "u", "uncordon the node"),
    ("nodes", "d", "drain the node (cordon, then move its replicas away)"),
    ("services", "h", "revision history of the service"),
    ("services", "l", "live logs of every replica of the service"),
    ("services", "s", "scale: asks for the replica count"),
    ("services", "b", "roll back to the last good revision"),
    ("services", "p", "promote the waiting canary"),
    ("services", "a", "abort the waiting canary"),
    ("services", "D", "destroy the service"),
    ("replicas", "l", "live logs of the replica"),
    ("replicas", "R", "restart the replica (stop it; reconcile starts a new one)"),
    ("replicas", "x", "exec a shell command in the replica"),
    ("history", "b / enter", "roll back to the highlighted revision"),
    ("logs", "space", "pause / resume following"),
    ("logs", "f", "follow: jump to the newest line"),
    ("confirmation", "y / n", "confirm / cancel (the dialog names what will happen)"),
)


def key_table_markdown() -> str:
    """KEYS as the README's Markdown table."""
    lines = ["| View | Key | What it does |", "|---|---|---|"]
    lines += [f"| {view} | `{key}` | {what} |" for view, key, what in KEYS]
    return "\n".join(lines)
