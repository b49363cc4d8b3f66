"""Render every stored run into ``report.md`` and a static ``report.html``.

Per experiment and setting (scale and config): the claim and paper, the
config, each metric's mean and spread over seeds, each check with its
threshold and verdict over seeds, the figures of the first seed and links to
those of the other seeds. The report reads only the store, so it can be
rendered again at any time.
"""

from __future__ import annotations

import html
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lemmata.experiments.registry import get
from lemmata.experiments.store import Store, StoredRun, code_version

__all__ = ["Section", "sections", "write_report"]

_SCALE_ORDER = {"quick": 0, "full": 1}


@dataclass
class Section:
    """The runs of one experiment at one setting (scale, config, root seed)."""

    experiment: str
    scale: str
    runs: list[StoredRun]

    @property
    def first(self) -> dict[str, Any]:
        return self.runs[0].record

    @property
    def stale(self) -> bool:
        try:
            current = code_version(get(self.experiment).fn.__module__)
        except ValueError:  # no longer registered: compare with the whole package
            current = code_version()
        return any(r.record.get("code_version") != current for r in self.runs)

    def metric_rows(self) -> list[tuple[str, float, float, int]]:
        """(name, mean, sd, n) per metric; sd is 0 for one seed."""
        values: dict[str, list[float]] = defaultdict(list)
        for r in self.runs:
            for k, v in r.record["metrics"].items():
                values[k].append(v)
        return [(k, *_mean_sd(v), len(v)) for k, v in values.items()]

    def check_rows(self) -> list[dict[str, Any]]:
        """Per check: mean and sd of the value, threshold, passes over seeds."""
        grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in self.runs:
            for c in r.record["checks"]:
                grouped[c["name"]].append(c)
        rows = []
        for name, checks in grouped.items():
            mean, sd = _mean_sd([c["value"] for c in checks])
            passed = sum(bool(c["passed"]) for c in checks)
            rows.append(
                {
                    "name": name,
                    "mean": mean,
                    "sd": sd,
                    "op": checks[0]["op"],
                    "threshold": checks[0]["threshold"],
                    "passed": passed,
                    "n": len(checks),
                }
            )
        return rows

    @property
    def all_passed(self) -> bool:
        return all(row["passed"] == row["n"] for row in self.check_rows())


def _mean_sd(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    if arr.size == 0 or np.isnan(arr).all():
        return math.nan, math.nan
    sd = float(np.nanstd(arr, ddof=1)) if np.sum(~np.isnan(arr)) > 1 else 0.0
    return float(np.nanmean(arr)), sd


def sections(store: Store) -> list[Section]:
    """Stored runs grouped by experiment, scale and setting."""
    grouped: dict[tuple[str, str, str], list[StoredRun]] = defaultdict(list)
    for r in store.runs():
        grouped[(r.experiment, r.scale, r.record["group"])].append(r)
    out = [Section(exp, scale, runs) for (exp, scale, _), runs in grouped.items()]
    out.sort(
        key=lambda s: (s.experiment, _SCALE_ORDER.get(s.scale, 9), s.first["group"])
    )
    return out


def _fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    if x == 0 or 1e-3 <= abs(x) < 1e4:
        return f"{x:.4g}"
    return f"{x:.3e}"


def _value(row: dict[str, Any]) -> str:
    if row["n"] > 1:
        return f"{_fmt(row['mean'])} ± {_fmt(row['sd'])}"
    return _fmt(row["mean"])


def _verdict(row: dict[str, Any]) -> str:
    word = "PASS" if row["passed"] == row["n"] else "FAIL"
    return f"{word} ({row['passed']}/{row['n']} seeds)" if row["n"] > 1 else word


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def _markdown(secs: list[Section], root: Path) -> str:
    lines = ["# lemmata reproduction report", ""]
    lines += _overview(secs, markdown=True)
    for s in secs:
        rec = s.first
        lines += [
            "",
            f"## {s.experiment} ({s.scale}, {len(s.runs)} seed(s))",
            "",
            f"**Claim** (arXiv:{rec['paper']}): {rec['claim']}",
            "",
        ]
        if s.stale:
            lines += ["*Made by an older version of the code.*", ""]
        lines += ["| check | measured | threshold | verdict |", "|---|---|---|---|"]
        for row in s.check_rows():
            threshold = f"{row['op']} {_fmt(row['threshold'])}"
            lines.append(
                f"| {row['name']} | {_value(row)} | {threshold} | {_verdict(row)} |"
            )
        lines += ["", "| metric | mean | sd | seeds |", "|---|---|---|---|"]
        for name, mean, sd, n in s.metric_rows():
            lines.append(f"| {name} | {_fmt(mean)} | {_fmt(sd)} | {n} |")
        config = ", ".join(f"`{k}={v}`" for k, v in rec["config"].items())
        lines += ["", f"Setting: {config}; root seed {rec['root_seed']}.", ""]
        for name, path in s.runs[0].figures.items():
            lines.append(f"![{name}]({_rel(path, root)})")
        others = [
            f"seed {r.seed_index}: "
            + ", ".join(f"[{n}]({_rel(p, root)})" for n, p in r.figures.items())
            for r in s.runs[1:]
            if r.figures
        ]
        if others:
            lines += ["", "Figures of the other seeds: " + "; ".join(others) + "."]
    return "\n".join(lines) + "\n"


def _overview(secs: list[Section], markdown: bool) -> list[str]:
    rows = []
    for s in secs:
        checks = s.check_rows()
        ok = sum(r["passed"] == r["n"] for r in checks)
        rows.append((s.experiment, s.scale, len(s.runs), ok, len(checks)))
    if markdown:
        out = ["| experiment | scale | seeds | checks passed |", "|---|---|---|---|"]
        out += [f"| {e} | {sc} | {n} | {ok}/{t} |" for e, sc, n, ok, t in rows]
        return out
    out = [
        "<table><tr><th>experiment</th><th>scale</th><th>seeds</th>"
        "<th>checks passed</th></tr>"
    ]
    for e, sc, n, ok, t in rows:
        cls = "pass" if ok == t else "fail"
        out.append(
            f"<tr><td><a href='#{e}-{sc}'>{e}</a></td><td>{sc}</td><td>{n}</td>"
            f"<td class='{cls}'>{ok}/{t}</td></tr>"
        )
    out.append("</table>")
    return out


_CSS = """
body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;
color:#222}
table{border-collapse:collapse;margin:.8em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:.92em}
th{background:#f3f3f3}.pass{color:#16702e;font-weight:600}
.fail{color:#b00020;font-weight:600}img{max-width:100%;border:1px solid #eee}
.claim{background:#f7f7fb;padding:.6em;border-left:4px solid #88a}
code{font-size:.9em}
"""


def _html(secs: list[Section], root: Path) -> str:
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>lemmata reproduction report</title><style>{_CSS}</style></head><body>",
        "<h1>lemmata reproduction report</h1>",
        *_overview(secs, markdown=False),
    ]
    for s in secs:
        rec = s.first
        parts.append(
            f"<h2 id='{esc(s.experiment)}-{esc(s.scale)}'>{esc(s.experiment)} "
            f"<small>({esc(s.scale)}, {len(s.runs)} seed(s))</small></h2>"
        )
        parts.append(
            f"<p class='claim'><b>Claim</b> (arXiv:{esc(rec['paper'])}): "
            f"{esc(rec['claim'])}</p>"
        )
        if s.stale:
            parts.append("<p><i>Made by an older version of the code.</i></p>")
        parts.append(
            "<table><tr><th>check</th><th>measured</th><th>threshold</th>"
            "<th>verdict</th></tr>"
        )
        for row in s.check_rows():
            cls = "pass" if row["passed"] == row["n"] else "fail"
            parts.append(
                f"<tr><td>{esc(row['name'])}</td><td>{esc(_value(row))}</td>"
                f"<td>{esc(row['op'])} {_fmt(row['threshold'])}</td>"
                f"<td class='{cls}'>{esc(_verdict(row))}</td></tr>"
            )
        parts.append("</table><details><summary>metrics</summary><table>")
        parts.append("<tr><th>metric</th><th>mean</th><th>sd</th><th>seeds</th></tr>")
        for name, mean, sd, n in s.metric_rows():
            parts.append(
                f"<tr><td>{esc(name)}</td><td>{_fmt(mean)}</td><td>{_fmt(sd)}</td>"
                f"<td>{n}</td></tr>"
            )
        parts.append("</table></details>")
        config = ", ".join(
            f"<code>{esc(k)}={esc(str(v))}</code>" for k, v in rec["config"].items()
        )
        parts.append(f"<p>Setting: {config}; root seed {rec['root_seed']}.</p>")
        for name, path in s.runs[0].figures.items():
            parts.append(
                f"<figure><img src='{esc(_rel(path, root))}' alt='{esc(name)}'>"
                f"<figcaption>{esc(name)} (seed {s.runs[0].seed_index})</figcaption>"
                "</figure>"
            )
        others = [
            f"seed {r.seed_index}: "
            + ", ".join(
                f"<a href='{esc(_rel(p, root))}'>{esc(n)}</a>"
                for n, p in r.figures.items()
            )
            for r in s.runs[1:]
            if r.figures
        ]
        if others:
            parts.append(f"<p>Figures of the other seeds: {'; '.join(others)}.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(out: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``out`` from its stored runs."""
    root = Path(out)
    secs = sections(Store(root))
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in (
        ("report.md", _markdown(secs, root)),
        ("report.html", _html(secs, root)),
    ):
        path = root / name
        tmp = root / f".{name}.tmp-{os.getpid()}"
        tmp.write_text(text)
        tmp.replace(path)
        paths.append(path)
    return paths[0], paths[1]
