"""Every key of `fleet ui`, by view: what `?` shows and what the README's key table lists (a test checks that
each binding of the app is here)."""

from __future__ import annotations

KEYS: tuple[tuple[str, str, str], ...] = (
    ("everywhere", "?", "help: this list of keys"),
    ("everywhere", "/", "filter the table (log view: search the lines); esc clears"),
    ("everywhere", "esc", "back to the previous view (or clear the filter)"),
    ("everywhere", "ctrl+p", "command palette: every view and action by name"),
    ("everywhere", "e", "events: what the controller did and when"),
    ("everywhere", "v", "volumes on the workers and storage nodes (as `fleet volume ls`)"),
    ("everywhere", "i", "images on every node (as `fleet image ls`)"),
    ("everywhere", "k", "the fleet's lease on each record node (as `fleet lock status`)"),
    ("everywhere", "J", "the job runs the fleet recorded, newest first (as `fleet job ls`)"),
    ("everywhere", "r", "refresh now (describe: read again)"),
    ("everywhere", "tab / shift+tab", "next / previous pane"),
    ("everywhere", "q", "quit"),
    ("tables", "o", "sort by the next column (after the last: the original order)"),
    ("tables", "O", "reverse the sort"),
    ("nodes", "d", "describe the node: facts, marks, containers (as `fleet describe`)"),
    ("nodes", "c", "cordon the node (no new replicas placed on it)"),
    ("nodes", "u", "uncordon the node"),
    ("nodes", "R", "drain the node (cordon, then move its replicas away)"),
    ("services", "d", "describe the service: spec, replicas, health, revisions (as `fleet describe`)"),
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


# Where fleet ui's keys differ from k9s's, for people who have k9s in their fingers.
K9S: tuple[tuple[str, str, str], ...] = (
    ("describe", "d", "d (services, nodes)"),
    ("drain a node", "r", "R (r refreshes)"),
    ("refresh", "ctrl+r", "r"),
    ("delete", "ctrl+d", "D destroys a service (asks first)"),
    ("kill a pod", "ctrl+k", "R restarts a replica (asks first)"),
    ("shell", "s", "x runs one command (a shell: `fleet exec -it`)"),
    ("scale", "s (deployments)", "s"),
    ("sort by a column", "shift+column letter", "o next column, O reverse"),
    ("yaml", "y", "d: the spec at the accepted revision"),
    ("command mode", ":", "ctrl+p palette"),
    ("list jobs", ":jobs", "J: the job runs (shift: j moves down in k9s)"),
)


def key_table_markdown() -> str:
    """KEYS as the README's Markdown table."""
    lines = ["| View | Key | What it does |", "|---|---|---|"]
    lines += [f"| {view} | `{key}` | {what} |" for view, key, what in KEYS]
    return "\n".join(lines)


def k9s_table_markdown() -> str:
    """K9S as a Markdown table, for the docs."""
    lines = ["| To | k9s | fleet ui |", "|---|---|---|"]
    lines += [f"| {what} | `{k9s}` | {ours} |" for what, k9s, ours in K9S]
    return "\n".join(lines)
