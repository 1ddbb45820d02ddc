"""How listings are printed (`-o`): on a terminal a table whose cells wrap, turned into one block per row when
even wrapped it would not fit, so no column is ever dropped or cut; on a pipe the same rows as tab-separated full
values; `json`, `yaml`, and `name` (one `kind/name` per line) as kubectl users expect."""

from __future__ import annotations

import difflib
import enum
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from fleet.cli import common


class Output(enum.StrEnum):
    json = "json"
    yaml = "yaml"
    wide = "wide"
    name = "name"


OutputOpt = Annotated[
    Output | None,
    typer.Option("-o", "--output", show_default=False,
                 help="json, yaml, wide (more columns) or name (kind/name); default: a table, tab-separated full "
                      "values on a pipe."),
]


def chosen(output: Output | None, json_flag: bool) -> str:
    """The format asked for: `--json` is `-o json`; both with different formats is a usage error."""
    if json_flag and output not in (None, Output.json):
        common.fail(f"--json and -o {output}: choose one")
    return "json" if json_flag else (output.value if output is not None else "table")


@dataclass(frozen=True)
class Column:
    header: str
    justify: str = "left"  # "left" or "right"
    wide: bool = False  # shown with -o wide only


Cell = str | Text


@dataclass
class Listing:
    """Rows under columns; a cell is plain text or a styled rich Text (never markup read from data)."""

    columns: Sequence[Column]
    rows: list[Sequence[Cell]] = field(default_factory=list)
    keys: int = 1  # the leading columns that name a row, repeated in each part of a cut table (`parts`)

    def add(self, *cells: Cell) -> None:
        assert len(cells) == len(self.columns), (len(cells), [c.header for c in self.columns])
        self.rows.append(cells)

    def shown(self, wide: bool) -> tuple[list[Column], list[list[Cell]]]:
        keep = [i for i, c in enumerate(self.columns) if wide or not c.wide]
        return [self.columns[i] for i in keep], [[row[i] for i in keep] for row in self.rows]


def plain(cell: Cell) -> str:
    """A cell's full text on one line (a tab or newline in a value would break a tab-separated row)."""
    text = cell.plain if isinstance(cell, Text) else cell
    return " ".join(text.split()) if any(c in text for c in "\t\n\r") else text


def as_text(cell: Cell) -> Text:
    return cell if isinstance(cell, Text) else Text(cell)


def tsv(listing: Listing, wide: bool = False) -> str:
    columns, rows = listing.shown(wide)
    lines = ["\t".join(c.header for c in columns), *("\t".join(plain(c) or "-" for c in row) for row in rows)]
    return "\n".join(lines) + "\n"


def table(listing: Listing, wide: bool = False, widths: Sequence[int] | None = None) -> Table:
    """The rich table; every cell may wrap (at `widths`, from `fit`, no word is cut), none is cut short."""
    columns, rows = listing.shown(wide)
    t = Table(box=None, pad_edge=False, header_style="bold", padding=(0, 1))
    for i, c in enumerate(columns):
        t.add_column(c.header, justify=c.justify, overflow="fold",  # type: ignore[arg-type]
                     width=widths[i] if widths else None)
    for row in rows:
        t.add_row(*row)
    return t


def blocks(listing: Listing, wide: bool = False) -> list[Table]:
    """The narrow layout: one block per row, a `HEADER value` line per column, values wrapping."""
    columns, rows = listing.shown(wide)
    out = []
    for row in rows:
        g = Table.grid(padding=(0, 2))
        g.add_column(style="bold", no_wrap=True)
        g.add_column(overflow="fold")
        for c, cell in zip(columns, row, strict=True):
            g.add_row(c.header, cell)
        out.append(g)
    return out


def measure(out: Console, listing: Listing, wide: bool = False) -> tuple[list[int], list[int]]:
    """Each shown column's narrowest width (its longest word, header included) and its one-line width."""
    columns, rows = listing.shown(wide)
    options = out.options.update_width(1 << 16)  # unbounded: rich caps a measurement at the width it is given
    mins, maxs = [], []
    for i, c in enumerate(columns):
        sizes = [Measurement.get(out, options, Text(c.header)),
                 *(Measurement.get(out, options, as_text(row[i])) for row in rows)]
        mins.append(max(m.minimum for m in sizes))
        maxs.append(max(m.maximum for m in sizes))
    return mins, maxs


def fit(out: Console, listing: Listing, wide: bool = False) -> list[int] | None:
    """Column widths that fit `out`: each column at least as wide as its longest word (so wrapping never cuts a
    word), the room left shared out in proportion to what each column would need to be on one line; None when
    even the narrowest layout does not fit. (Rich's own shrinking may cut words: it narrows the widest first.)"""
    mins, maxs = measure(out, listing, wide)
    room = out.width - 2 * (len(mins) - 1)  # one space of padding each side between columns
    if sum(mins) > room:
        return None
    if sum(maxs) <= room:
        return maxs
    spare, wants = room - sum(mins), [mx - mn for mn, mx in zip(mins, maxs, strict=True)]
    return [mn + spare * want // max(sum(wants), 1) for mn, want in zip(mins, wants, strict=True)]


MAX_PARTS = 3  # a listing cut into more tables than this reads better as blocks


def parts(out: Console, listing: Listing, wide: bool = False) -> list[Listing] | None:
    """The listing as a few narrower listings, each the key columns (what names a row) and as many of the next
    columns as fit `out`: every column kept, a row's name on each of its lines. None when that takes more than
    MAX_PARTS."""
    columns, rows = listing.shown(wide)
    mins, maxs = measure(out, listing, wide)
    # Cells on one line when that takes no more parts; else as narrow as their words allow.
    groups = _pack(maxs, listing.keys, out.width) or _pack(mins, listing.keys, out.width)
    if groups is None:
        return None
    k = listing.keys
    return [Listing([*columns[:k], *(columns[i] for i in g)], [[*row[:k], *(row[i] for i in g)] for row in rows],
                    keys=k) for g in groups]


def _pack(widths: list[int], k: int, width: int) -> list[list[int]] | None:
    """The columns after the first `k`, in order, in groups that fit `width` beside the first `k`."""
    key = sum(widths[:k]) + 2 * (k - 1)
    groups: list[list[int]] = [[]]
    used = key
    for i in range(k, len(widths)):
        if used + 2 + widths[i] > width:
            if not groups[-1] or key + 2 + widths[i] > width:
                return None
            groups.append([])
            used = key
        groups[-1].append(i)
        used += 2 + widths[i]
    return groups if len(groups) <= MAX_PARTS else None


def renderable(listing: Listing, out: Console, wide: bool = False) -> RenderableType:
    """The table when it fits `out`; else the table cut into a few narrower ones, each led by the name column;
    else one block per row. Never a column dropped, never a word cut."""
    widths = fit(out, listing, wide)
    if widths is not None:
        return table(listing, wide, widths)
    pieces: list[RenderableType] = []
    for piece in parts(out, listing, wide) or []:
        pieces += [*([Text("")] if pieces else []), table(piece, True, fit(out, piece, True))]
    if pieces:
        return Group(*pieces)
    for block in blocks(listing, wide):
        pieces += [*([Text("")] if pieces else []), block]
    return Group(*pieces)


def print_listing(listing: Listing, wide: bool = False, out: Console | None = None) -> None:
    """On a terminal: the table, or blocks when it cannot fit; on a pipe: tab-separated full values."""
    out = out or common.console()
    if not out.is_terminal:
        out.file.write(tsv(listing, wide))
        out.file.flush()
        return
    out.print(renderable(listing, out, wide))


def plain_data(doc: Any) -> Any:
    """JSON-able data (times, paths and other values as strings), for YAML as for JSON."""
    return json.loads(json.dumps(doc, default=str))


def print_doc(doc: Any, fmt: str) -> None:
    if fmt == "yaml":
        common.console().file.write(yaml.safe_dump(plain_data(doc), sort_keys=False, default_flow_style=False))
    else:
        common.print_json(doc)


def print_names(names: Iterable[str]) -> None:
    out = common.console().file
    for name in names:
        out.write(name + "\n")


def show(fmt: str, doc: Any, listing: Listing, names: Iterable[str]) -> None:
    """Print in `fmt` (see `chosen`): the document, the names, or the listing."""
    if fmt in ("json", "yaml"):
        print_doc(doc, fmt)
    elif fmt == "name":
        print_names(names)
    else:
        print_listing(listing, wide=fmt == "wide")


def warn(text: str) -> None:
    """A warning or a per-node failure: on stderr, so stdout keeps only what was asked for."""
    common.console(stderr=True).print(text, highlight=False, soft_wrap=True)


# --- selection --------------------------------------------------------------------------------------------------
def unknown(kind: str, name: str, known: Iterable[str]) -> str:
    """`no service 'wbe' (did you mean 'web'?)`, or the list of what there is when nothing is close."""
    names = sorted(set(known))
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)  # 0.5: `n4` finds `n1`
    if close:
        hint = " or ".join(repr(c) for c in close)
        return f"no {kind} {name!r} (did you mean {hint}?)"
    return f"no {kind} {name!r}" + (f" (there are: {', '.join(names)})" if names else f" (there is no {kind})")


def check_names(kind: str, asked: Sequence[str], known: Iterable[str]) -> None:
    """Exit 2 naming the first asked name that is not known, with a suggestion."""
    known = set(known)
    for name in asked:
        if name not in known:
            common.fail(unknown(kind, name, known))


def parse_selector(values: Sequence[str]) -> dict[str, str]:
    """`--selector zone=eu,disk=ssd` (repeatable) as {key: value}; exit 2 for a term that is not key=value."""
    wanted: dict[str, str] = {}
    for value in values:
        for term in filter(None, (t.strip() for t in value.split(","))):
            key, sep, val = term.partition("=")
            if not sep or not key:
                common.fail(f"--selector: expected key=value, got {term!r}")
            wanted[key.strip()] = val.strip()
    return wanted


def matches(labels: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())


NodeOpt = Annotated[list[str] | None, typer.Option("--node", metavar="NODE", show_default=False,
                                                   help="Only what runs on this node (repeatable).")]
SelectorOpt = Annotated[list[str] | None, typer.Option(
    "--selector", "-l", metavar="KEY=VALUE", show_default=False,
    help="Only nodes with these labels (the inventory's and `fleet node label`'s), e.g. zone=eu; repeatable.")]


def age(seconds: float) -> str:
    """A duration as its largest whole unit: 42s, 5m, 3h, 2d."""
    s = int(max(seconds, 0))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"
