"""`fleet watch`: the long-running controller (fleet.watch.controller), its grace for lost nodes (grace), the
container event streams that wake it (events), the local socket that lends its warm connections to one-shot
commands (server, client) and systemd's readiness message (notify). Above the façade: it uses `Fleet` like the
CLI does, and only the CLI and the TUI import it."""
