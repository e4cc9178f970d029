"""``sqltrack show``: one run as a report (header, params, metrics, links, env), or JSON."""

from __future__ import annotations

import shlex
import textwrap
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import click

from ..lineage import describe_evidence
from ._base import cli, errors, open_tracker, url_option
from ._output import cell, dumps, styled, terminal_width
from ._table import ELLIPSIS, Column, Kind, Layout, fit_text, layout, note, printable

INDENT = "  "


@cli.command()
@url_option
@click.argument("run")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: a report that fits the terminal; json: everything stored, values whole.",
)
@errors
def show(url: str | None, run: str, fmt: str) -> None:
    """Show one run (by id or UUID): status and times, params, metrics, links and env."""
    tracker = open_tracker(url)
    info = tracker.run_info(run)
    if fmt == "json":
        click.echo(dumps(info))
        return
    bold: Callable[[str], str] = (lambda t: click.style(t, bold=True)) if styled() else str
    lines = report(info, tracker.lineage(info["id"]), terminal_width(), bold)
    click.echo("\n".join(lines))


def report(
    info: dict[str, Any], lineage: Any, width: int | None, bold: Callable[[str], str] = str
) -> list[str]:
    """The lines of `show`'s report for `info` (`Tracker.run_info`) within `width` cells."""
    params = {k[len("params.") :]: v for k, v in info.items() if k.startswith("params.")}
    unset = [k for k, v in params.items() if not cell(v)]
    sections = [
        (None, _header(info)),
        (f"params ({len(params)})", [[k, cell(v)] for k, v in params.items() if k not in unset]),
        (f"metrics ({len(info['metrics'])})", _metrics(info["metrics"])),
        ("links", _links(lineage)),
        ("env", _env(info.get("env") or {})),
    ]
    title = f"run {info['id']}  {_label(info)}  {info['status']}"
    lines = [bold(fit_text(printable(title), width or len(title)))]
    cut = False
    for name, rows in sections:
        if name is not None:
            lines += ["", bold(name)]
        if name == "links" and rows:
            lines += _wrapped([r[0] for r in rows], width)
        elif rows:
            fitted = _table(rows, width, bold if name and name.startswith("metrics") else None)
            lines += fitted.lines
            cut = cut or fitted.cut
        if name and name.startswith("params") and unset:
            lines += _wrapped([_nulls(unset, width)], width)
        elif not rows:
            lines.append(f"{INDENT}(none)")
    if cut:
        lines += [
            "",
            f"Values ending in {ELLIPSIS} are cut short to fit; --format json prints all.",
        ]
    return lines


def _nulls(keys: list[str], width: int | None) -> str:
    """The params set to null, named as far as about two lines hold."""
    room = None if width is None else 2 * width - 40
    named = keys[:1]
    for key in keys[1:]:
        if room is not None and len(", ".join([*named, key])) > room:
            break
        named.append(key)
    more = f" and {len(keys) - len(named)} more" if len(named) < len(keys) else ""
    return f"null: {', '.join(named)}{more}"


def _label(info: dict[str, Any]) -> str:
    return f"{info['experiment']}/{info['name']}" if info.get("name") else str(info["experiment"])


def _header(info: dict[str, Any]) -> list[list[str]]:
    """The head block: what identifies the run, when it ran, who ran it."""
    rows = [["uuid", str(info["uuid"])], ["started", cell(info.get("started_at"))]]
    ended = info.get("ended_at")
    if cell(ended):
        took = _duration(info.get("started_at"), ended)
        rows.append(["ended", cell(ended) + (f"  ({took})" if took else "")])
    if info["status"] in ("running", "crashed"):
        rows.append(["heartbeat", cell(info.get("heartbeat_at"))])
    for field in ("owner", "comment"):
        if cell(info.get(field)):
            rows.append([field, cell(info.get(field))])
    if info.get("tags"):
        rows.append(["tags", ", ".join(map(str, info["tags"]))])
    return rows


def _duration(start: Any, end: Any) -> str | None:
    """How long a run took, in the two largest units (``54.4 s``, ``3 h 02 min``)."""
    try:
        seconds = float((end - start).total_seconds())
    except (TypeError, AttributeError, ValueError):
        return None
    if seconds != seconds or seconds < 0:  # NaT
        return None
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, second = divmod(int(seconds), 60)
    hours, minute = divmod(minutes, 60)
    days, hour = divmod(hours, 24)
    if days:
        return f"{days} d {hour:02d} h"
    return f"{hours} h {minute:02d} min" if hours else f"{minutes} min {second:02d} s"


def _metrics(summary: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = [["key", "last", "at step", "min", "max", "count"]]
    for key, entry in summary.items():
        values = [entry.get(k) for k in ("last", "last_step", "min", "max", "count")]
        rows.append([key, *(cell(v) for v in values)])
    return rows if len(rows) > 1 else []


def _links(lineage: Any) -> list[list[str]]:
    """The run's own links in words, from `Tracker.lineage` (its depth-1 rows)."""
    rows = []
    for link in lineage[lineage["depth"] == 1].itertuples(index=False):
        other = f"run {link.run_id} ({link.experiment}/{link.name})"
        how = describe_evidence(link.evidence)
        if link.relation == "ancestor":
            rows.append([f"{link.kind} {other}, {how}"])
        else:
            rows.append([f"{other} {link.kind} this run, {how}"])
    return rows


def _env(env: dict[str, Any]) -> list[list[str]]:
    """Where the run ran, one line per topic; `show --format json` has all of it."""
    git = env.get("git") or {}
    packages = env.get("packages") or {}
    gpus = Counter(
        f"{d.get('name')} ({d.get('memory_bytes', 0) / 2**30:.0f} GiB)"
        for d in env.get("cuda_devices") or []
    )
    rows = [
        ["host", ", ".join(filter(None, [env.get("hostname"), _user(env)]))],
        ["python", " on ".join(filter(None, [_python(env), env.get("platform")]))],
        ["command", shlex.join(map(str, env.get("argv") or []))],
        ["cwd", env.get("cwd") or ""],
        ["git", _git(git)],
        ["packages", ", ".join(f"{name} {version}" for name, version in packages.items())],
        ["gpus", ", ".join(f"{n} x {name}" for name, n in gpus.items())],
    ]
    return [row for row in rows if row[1]]


def _user(env: dict[str, Any]) -> str | None:
    return f"user {env['user']}" if env.get("user") else None


def _python(env: dict[str, Any]) -> str | None:
    if not env.get("python"):
        return None
    return f"{env.get('python_implementation') or 'Python'} {env['python']}"


def _git(git: dict[str, Any]) -> str:
    if not git.get("commit"):
        return ""
    branch = f" on {git['branch']}" if git.get("branch") else ""
    return f"{str(git['commit'])[:12]}{branch}{' (dirty)' if git.get('dirty') else ''}"


def _table(
    rows: Sequence[Sequence[str]], width: int | None, bold: Callable[[str], str] | None
) -> Layout:
    """`rows` as aligned columns without borders, indented; the first row is a header when
    `bold` is given; numbers right-aligned. Hidden columns are named under the table."""
    header = rows[0] if bold else [""] * len(rows[0])
    body = rows[1:] if bold else rows
    kinds: list[Kind] = ["text", *(_kind(body, i) for i in range(1, len(header)))]
    columns = [
        Column(name, [r[i] for r in body], kind)
        for i, (name, kind) in enumerate(zip(header, kinds, strict=True))
    ]
    inner = None if width is None else width - len(INDENT)
    fitted = layout(
        columns, inner, boxed=False, header=bold is not None, transpose=False, bold=bold or str
    )
    if fitted.hidden:
        fitted.lines += note(Layout([], fitted.hidden, False), inner, "--format json shows all")
    fitted.lines = [f"{INDENT}{line}".rstrip() for line in fitted.lines]
    return fitted


def _kind(rows: Sequence[Sequence[str]], i: int) -> Kind:
    """ "number" when column `i` holds numbers only (empty cells aside), else "text"."""
    for row in rows:
        try:
            float(row[i] or 0)
        except ValueError:
            return "text"
    return "number"


def _wrapped(lines: list[str], width: int | None) -> list[str]:
    """Sentences indented, wrapped within `width` with a deeper indent for the rest."""
    out = []
    for line in map(printable, lines):
        if width is None:
            out.append(INDENT + line)
            continue
        out += textwrap.wrap(line, width, initial_indent=INDENT, subsequent_indent=INDENT * 2)
    return out
