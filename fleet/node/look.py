"""A node's facts and its container listing in one command: what `fleet watch` reads from every node each round.

One SSH session per node per round instead of two (a session costs the controller about as much as parsing
what it brings). The script is the facts script (fleet.node.facts), then, when the facts it just gathered say
containerd can answer, the listing of the node's runtime (the driver's own list script, in a subshell). Its
output is split back into the two results the two commands gave, so each goes to its own parser unchanged:

    <the facts script's output>
    @@fleet-list RUNTIME        absent when the facts say containerd cannot answer: nothing is listed
    <the list script's output>
    @@fleet-list-rc N           the list script's exit status

The facts part's stderr is dropped (its parser never reads it), so the command's stderr is the listing's. A
line starting with `@@fleet-list` cannot come from the facts part (its lines are markers starting with one `@`,
`df`'s table and `path:line`) nor from a listing (JSON, a task table, numbers), so the markers split safely.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from fleet.core.model import CommandResult
from fleet.core.shell import Script
from fleet.node.facts import FACTS_SCRIPT

_FACTS_END = "exit 0\n"
assert FACTS_SCRIPT.endswith(_FACTS_END), "the facts script must end with `exit 0` (it is run inline here)"

LIST_MARK = "@@fleet-list "
RC_MARK = "@@fleet-list-rc "

# Whether the facts just gathered say containerd can answer: the same verdict as fleet.engine.nodes.runtime_problem
# (a runtime installed, its socket there, something listening on it, not stopped or exited, not timed out on the
# probe), from the facts script's own variables: $RT, $S (containerd's socket), $CP (its PID, `?` or empty), $st
# (its state letter), $rc (the probe's exit status; 124: timed out). A node it refuses is not listed: a listing
# would hang on a containerd that cannot answer.
GATE = r"""fleet_lists() {
  [ -n "$1" ] && [ -S "$S" ] || return 1
  case $2 in '') return 1;; esac
  case $3 in T|t|Z|X) return 1;; esac
  [ "$4" != 124 ]
}
"""


def look_script(facts: Script, listings: Mapping[str, Script]) -> Script:
    """The joined script: `facts` (the facts command for the node), then the listing of whichever runtime it
    finds (`listings`: runtime name -> that driver's list script, whose variables must agree with the facts'
    own: both read $NS). Named as the facts command, so a node that does not answer is reported in its words."""
    clash = {k: (v, facts.env[k]) for k, listing in listings.items() for k, v in listing.env.items()
             if k in facts.env and facts.env[k] != v}
    if clash:
        raise ValueError(f"the facts and list scripts disagree on variables: {clash}")
    env = {k: v for listing in listings.values() for k, v in listing.env.items()} | dict(facts.env)
    cases = "".join(f"    {name}) (\n{listing.text}\n    ) ;;\n" for name, listing in listings.items())
    text = (GATE + "{\n" + facts.text.removesuffix(_FACTS_END) + "} 2>/dev/null\n"
            'if fleet_lists "$RT" "$CP" "${st:-}" "${rc:-}"; then\n'
            f'  echo "{LIST_MARK}$RT"\n'
            f"  case $RT in\n{cases}  esac\n"
            f"  printf '\\n{RC_MARK}%s\\n' \"$?\"\n"
            "fi\n")
    return Script(text, env, facts.args, name=facts.name)


@dataclass(frozen=True)
class Parts:
    """The joined command's result as the two commands would have returned it. `listing` None: nothing was
    listed (the facts say containerd cannot answer, or the command ended before); `runtime`: whose listing."""

    facts: CommandResult
    listing: CommandResult | None = None
    runtime: str | None = None


def split(result: CommandResult) -> Parts:
    """Split the joined command's result (complete, or partial after a deadline or a lost connection).

    The facts part reached its end when the listing's marker is there: it is then a complete facts result
    (status 0, as the facts script ends with `exit 0`), whatever happened to the listing after, which carries
    the listing's own status, or the transport's error when the command did not finish. Without the marker,
    the result is the facts command's alone, as it came."""
    text = "\n" + result.stdout
    at = text.find("\n" + LIST_MARK)
    if at < 0:
        return Parts(result)
    facts_out = text[1:at + 1]
    head, _, body = text[at + 1 + len(LIST_MARK):].partition("\n")
    facts = CommandResult(result.node, 0, facts_out, "", result.duration)
    before, found, rc = ("\n" + body).rpartition("\n" + RC_MARK)
    if found and result.error is None:
        status = int(rc.strip()) if rc.strip().isdigit() else result.exit_status
        listing = replace(result, exit_status=status, stdout=before[1:])
    else:  # ended before the list script did: its output so far, with the command's status or error
        listing = replace(result, stdout=body)
    return Parts(facts, listing, head.strip() or None)
