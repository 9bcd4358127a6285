"""The look every medlens HTML page shares (run report, segmentation report, probe page).

One stylesheet, one page shell with the "not for clinical use" banner, cells that print
counts as integers and values with their units, and a Markdown renderer for model cards.
Pages are self-contained (inline CSS, images as data URIs, no scripts), so they can be
mailed or archived. Text from the user or the data is always HTML-escaped; section bodies
passed to :func:`page` are HTML made by medlens and inserted as given.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from medlens.evaluate.model_card import NOT_FOR_CLINICAL_USE

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;
color:#1d2733;background:#f6f7f9;line-height:1.45}
main{max-width:1100px;margin:0 auto;padding:1.2em 1.5em 3em}
h1{margin:.4em 0 .2em}h2{border-bottom:2px solid #d8dde3;padding-bottom:.2em;margin-top:1.8em}
section{background:#fff;border:1px solid #e1e5ea;border-radius:6px;padding:.2em 1.2em 1em;
margin:1em 0}
.warn{background:#fdecea;border:2px solid #c0392b;color:#7b1e14;font-weight:700;
padding:.8em 1em;border-radius:6px;margin:1em 0}
.cards{display:flex;flex-wrap:wrap;gap:.8em}
.card{background:#eef3f9;border-radius:6px;padding:.6em 1em;min-width:150px}
.card .v{font-size:1.5em;font-weight:700}.card .ci{color:#56606b;font-size:.85em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #d8dde3;padding:.25em .6em;text-align:left}
th{background:#eef1f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.bad td{background:#fff3f1}img{max-width:100%;height:auto}.muted{color:#6b7580}
nav a{margin-right:.8em;color:#1f5fa8}
figure{display:inline-block;margin:4px;vertical-align:top}
figcaption{font-size:small;text-align:center;max-width:260px}
.legend span{padding:2px 6px;margin-right:6px;color:#fff}
.modelcard blockquote{margin:.6em 0;padding:.4em 1em;border-left:4px solid #c0392b;background:#fdf3f1}
"""

#: Words that make a column/row name a count: printed as an integer even when stored as
#: a float (``patients 2``, not ``2.000``).
COUNT_WORDS = frozenset({"patients", "slices", "images", "volumes", "lesions", "detected", "components",
                         "problems", "support", "epoch", "folds", "members", "n", "count", "total"})


def e(value: Any) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value), quote=True)


def banner() -> str:
    """The "not for clinical use" banner every page carries under its title."""
    return f'<div class="warn">{e(NOT_FOR_CLINICAL_USE)}</div>'


def is_count(key: str) -> bool:
    """Whether a column/row name denotes a count: ``n_test``, ``undefined_hd95``,
    ``patients``, ``false_positive_components`` (but not a mean or a rate of them)."""
    words = re.split(r"[^a-z0-9]+", str(key).lower())
    if words[0] in ("mean", "median", "std") or any(w in ("rate", "fraction", "dice") for w in words):
        return False
    return words[0] in ("n", "undefined") or any(w in COUNT_WORDS for w in words)


def fmt(value: Any, *, unit: str | None = None, count: bool = False, digits: int = 3) -> str:
    """A value as text: ``n/a`` for missing/NaN, counts as integers with thousands
    separators, other numbers with ``digits`` decimals, ``unit`` appended when given."""
    if value is None:
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str)
    if isinstance(value, (int, np.integer)) or (
        count and isinstance(value, (float, np.floating)) and math.isfinite(value)
        and float(value).is_integer()
    ):
        text = f"{int(value):,}"
    elif isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return "n/a"
        text = f"{float(value):.{digits}f}"
    else:
        return str(value)
    return f"{text} {unit}" if unit else text


def cell(value: Any, *, unit: str | None = None, count: bool = False, digits: int = 3) -> str:
    """One ``<td>``; numbers right-aligned."""
    numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )
    cls = ' class="n"' if numeric else ""
    return f"<td{cls}>{e(fmt(value, unit=unit, count=count, digits=digits))}</td>"


def table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    units: Mapping[str, str] | None = None,
    row_class: Callable[[Mapping[str, Any]], str] | None = None,
) -> str:
    """Rows of dicts as a table; count columns (see :func:`is_count`) print as integers,
    ``units`` adds a unit to a column's header."""
    if not rows:
        return '<p class="muted">No rows.</p>'
    cols = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
    units = units or {}
    names = headers or {}

    def head(c: str) -> str:
        label = names.get(c, c)
        return f"<th>{e(label)}" + (f" ({e(units[c])})" if units.get(c) else "") + "</th>"

    body = []
    for r in rows:
        cls = row_class(r) if row_class else ""
        attr = f' class="{e(cls)}"' if cls else ""
        body.append(f"<tr{attr}>" + "".join(cell(r.get(c), count=is_count(c)) for c in cols) + "</tr>")
    return f"<table><thead><tr>{''.join(head(c) for c in cols)}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def kv_table(data: Mapping[str, Any] | None, *, units: Mapping[str, str] | None = None,
             labels: Mapping[str, str] | None = None) -> str:
    """A two-column table ``name | value``; counts as integers, values with their units."""
    if not data:
        return '<p class="muted">Not provided.</p>'
    units, labels = units or {}, labels or {}
    rows = "".join(
        f"<tr><th>{e(labels.get(k, k))}</th>{cell(v, unit=units.get(k), count=is_count(k))}</tr>"
        for k, v in data.items()
    )
    return f"<table><tbody>{rows}</tbody></table>"


def img(png: bytes | str | None, alt: str, *, width: int | None = None) -> str:
    """An embedded PNG (bytes, or an existing ``data:`` URI); a muted note when missing."""
    if not png:
        return f'<p class="muted">{e(alt)}: not available for this run.</p>'
    src = png if isinstance(png, str) else "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    w = f' width="{int(width)}"' if width else ""
    return f'<img src="{e(src)}" alt="{e(alt)}"{w}>'


def figure(png: bytes | str | None, caption: str, *, width: int | None = None) -> str:
    """An image with its caption underneath."""
    return f"<figure>{img(png, caption, width=width)}<figcaption>{e(caption)}</figcaption></figure>"


def markdown_html(text: str) -> str:
    """Render a model card's Markdown as HTML, safely.

    Raw HTML in the text is shown as text (the HTML block and inline-HTML rules are
    switched off, so the serializer escapes it) and links/images are switched off, so a
    class name or path from the data can neither inject markup nor a ``javascript:``
    link. Tables (the card's metrics) are kept.
    """
    import markdown

    md = markdown.Markdown(extensions=["tables", "sane_lists"], output_format="html")
    md.preprocessors.deregister("html_block")
    for name in ("link", "image_link", "image_reference", "reference", "short_reference",
                 "short_image_ref", "autolink", "automail", "html"):
        if name in md.inlinePatterns:
            md.inlinePatterns.deregister(name)
    return f'<div class="modelcard">{md.convert(str(text))}</div>'


def page(title: str, sections: Sequence[tuple[str, str]], *, intro: str = "", nav: bool = True) -> str:
    """A whole page: title, banner, optional navigation, then one ``<section>`` per
    ``(title, body html)``. Section titles are escaped; bodies are trusted medlens HTML."""
    anchors = [f"s{i}" for i in range(len(sections))]
    links = "".join(f'<a href="#{a}">{e(t)}</a>' for a, (t, _) in zip(anchors, sections))
    content = "".join(
        f'<section id="{a}"><h2>{e(t)}</h2>{body}</section>' for a, (t, body) in zip(anchors, sections)
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(title)}</title><style>{CSS}</style></head><body><main>"
        f"<h1>{e(title)}</h1>{banner()}{intro}"
        + (f"<nav>{links}</nav>" if nav and len(sections) > 1 else "")
        + f"{content}</main></body></html>\n"
    )
