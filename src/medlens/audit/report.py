"""A self-contained ``audit.html``: inline CSS, plots and thumbnails as base64 PNGs."""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medlens.audit.stats import FEATURES

if TYPE_CHECKING:
    from medlens.audit.result import AuditResult
    from medlens.data.records import DatasetIndex

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;
font-size:.9em;text-align:left;vertical-align:top}th{background:#f4f4f4}
.block{background:#fde2e2;border-left:5px solid #c00;padding:.5em 1em;margin:.3em 0}
.warn{background:#fff4d6;border-left:5px solid #d90;padding:.5em 1em;margin:.3em 0}
.ok{background:#e3f6e3;border-left:5px solid #393;padding:.5em 1em}
.thumbs img{width:64px;height:64px;object-fit:contain;border:1px solid #ccc;margin:2px;
image-rendering:pixelated}code{font-size:.85em}
"""


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(b64: str, alt: str = "", title: str = "") -> str:
    return f'<img alt="{html.escape(alt)}" title="{html.escape(title)}" src="data:image/png;base64,{b64}">'


def _esc(x: Any) -> str:
    return html.escape(str(x))


def distribution_plots(result: AuditResult) -> dict[str, str]:
    """Per-class histograms (size, brightness, sharpness, file size) and colour histograms."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    table, labels = result.table, result.labels
    classes = result.summary["classes"]
    if table is None or labels is None or not len(table):
        return out
    panels = [("width", "width (px)", False), ("brightness", "mean grey level", False),
              ("sharpness", "sharpness (var. of Laplacian, log10)", True), ("file_kb", "file size (KiB)", False)]  # fmt: skip
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
    any_data = False
    for ax, (col, title, log) in zip(axes, panels, strict=True):
        v_all = table[:, FEATURES.index(col)]
        for k, name in enumerate(classes):
            v = v_all[labels == k]
            v = v[np.isfinite(v)]
            if log:
                v = np.log10(v[v > 0])
            if v.size:
                any_data = True
                ax.hist(v, bins=40, alpha=0.5, density=True, label=f"{name} (n={v.size})")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=8)
    if any_data:
        out["distributions"] = _png(fig)
    else:
        plt.close(fig)
    hist = result.histograms
    if hist is not None and hist.hist.sum() > 0:
        fig, axes = plt.subplots(1, 4, figsize=(16, 3.0))
        for ch, (ax, cname) in enumerate(zip(axes, ("red", "green", "blue", "grey"), strict=True)):
            for k, name in enumerate(classes):
                h = hist.normalised(k)[ch]
                if h.sum() > 0:
                    ax.plot(np.arange(256), h, label=name)
            ax.set_title(f"{cname} histogram", fontsize=10)
        axes[0].legend(fontsize=8)
        out["colour"] = _png(fig)
    counts = result.summary["class_counts"]
    if counts:
        fig, ax = plt.subplots(figsize=(max(3, 0.8 * len(counts)), 2.6))
        ax.bar(list(counts), list(counts.values()), color="#4a7ab5")
        ax.set_title("images per class", fontsize=10)
        ax.tick_params(axis="x", rotation=45 if len(counts) > 4 else 0)
        out["balance"] = _png(fig)
    return out


def make_thumbnails(index: DatasetIndex, result: AuditResult, *, max_thumbnails: int = 24) -> dict[str, str]:
    """64-px PNG thumbnails (base64) of flagged files only, re-read at the end: bounded."""
    from PIL import Image

    from medlens.audit.files import probe_record, to_uint8

    wanted: list[str] = [o["path"] for o in result.outliers.get("items", [])[: max_thumbnails // 2]]
    for kind in ("exact", "near"):
        for g in result.duplicates.get(kind, {}).get("groups", []):
            wanted += g["paths"][:3]
    by_path = {r.path: r for r in index.records}
    out: dict[str, str] = {}
    for p in dict.fromkeys(wanted):
        if len(out) >= max_thumbnails:
            break
        rec = by_path.get(p)
        if rec is None:
            continue
        pr = probe_record(index, rec, max_side=128)
        if not pr.ok or pr.array is None:
            continue
        arr = to_uint8(pr.array)
        im = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
        im.thumbnail((64, 64))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        out[p] = base64.b64encode(buf.getvalue()).decode("ascii")
    return out


def colour_table_html(colour: dict[str, Any] | None, *, splits: dict[str, str] | None = None) -> str:
    """Per-patient tissue colour (mean ± SD of R, G, B, H, E) with each mean's robust z; flagged
    patients (stain unlike the others') first and highlighted. ``splits``: patient → split column."""
    if not colour or not colour.get("patients"):
        return f"<p>{_esc((colour or {}).get('reason', 'No patient ids or no RGB tissue pixels.'))}</p>"
    rows = colour["patients"]
    ch = colour["channels"]
    order = sorted(rows, key=lambda p: (not rows[p]["flagged"], -rows[p]["max_z"], p))
    head = "<tr><th>patient</th>" + ("<th>split</th>" if splits else "") + "<th>images</th>" + "".join(
        f"<th>{_esc(c)} mean ± SD</th>" for c in ch) + "<th>largest |z|</th></tr>"
    body = []
    for p in order:
        r = rows[p]
        cells = "".join(f"<td>{_num(r['mean'][c], c)} ± {_num(r['sd'][c], c)}"
                        f"<br><small>z {r['z'][c]:+.1f}</small></td>" for c in ch)
        style = " style='background:#fde2e2'" if r["flagged"] else ""
        split = f"<td>{_esc(splits.get(p, ''))}</td>" if splits else ""
        body.append(f"<tr{style}><td>{_esc(p)}</td>{split}<td>{r['n_images']}</td>{cells}"
                    f"<td>{r['max_z']:.1f} ({_esc(r['worst_channel'])})</td></tr>")
    flagged = colour.get("flagged") or []
    note = (f"<p>{len(flagged)} patient(s) flagged (robust z &gt; {colour['z_threshold']:g} on a mean): "
            f"{_esc(', '.join(flagged))}.</p>" if flagged else
            f"<p>No patient's stain lies far from the others ({_esc(colour.get('status', ''))}).</p>")
    return (f"{note}<p><small>Tissue: {_esc(colour.get('tissue', ''))}; H, E: {_esc(colour.get('h_e', ''))}; "
            "z: robust (median, MAD) against all patients.</small></p>"
            f"<table>{head}{''.join(body)}</table>")


def _num(v: float, channel: str) -> str:
    """RGB on 0–255 with one decimal; optical-density H and E with three."""
    return f"{v:.1f}" if channel in ("R", "G", "B") else f"{v:.3f}"


def _kv_table(d: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in d.items())
    return f"<table>{rows}</table>"


def _groups_html(section: dict[str, Any], thumbs: dict[str, str], title: str) -> str:
    if not section:
        return ""
    head = (f"<h3>{_esc(title)}</h3><p>{section['n_groups']} group(s), {section['n_files']} file(s); "
            f"by kind: {_esc(section['by_kind'])}</p>")  # fmt: skip
    parts = [head]
    rows = []
    for g in section["groups"][:50]:
        imgs = "".join(_img(thumbs[p], p, p) for p in g["paths"] if p in thumbs)
        paths = "<br>".join(f"<code>{_esc(p)}</code>" for p in g["paths"][:6])
        more = f"<br>… {len(g['paths']) - 6} more" if len(g["paths"]) > 6 else ""
        rows.append(f"<tr><td class='thumbs'>{imgs}</td><td>{paths}{more}</td><td>{_esc(', '.join(g['kinds']))}"
                    f"</td><td>{_esc(sorted(set(map(str, g['labels']))))}</td></tr>")  # fmt: skip
    if rows:
        parts.append("<table><tr><th></th><th>files</th><th>kinds</th><th>labels</th></tr>" + "".join(rows) + "</table>")
    return "".join(parts)


def render_html(result: AuditResult) -> str:
    """The whole report as one HTML string (no external files or network)."""
    s = result.summary
    plots = distribution_plots(result)
    thumbs = result.thumbnails
    head = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>medlens audit</title>"
            f"<style>{_CSS}</style></head><body><h1>Data audit: {_esc(s['root'])}</h1>")  # fmt: skip
    h: list[str] = [head]
    h.append(f"<p>{s['n_records']} image(s), layout <b>{_esc(s['layout'])}</b>, {s['n_readable']} readable.</p>")
    h.append("<h2>Verdict</h2>")
    if result.blocking:
        h += [f"<div class='block'><b>Blocking:</b> {_esc(b)}</div>" for b in result.blocking]
    else:
        h.append("<div class='ok'>No blocking problem: training may proceed.</div>")
    h += [f"<div class='warn'>{_esc(w)}</div>" for w in result.warnings]
    h.append("<h2>Files</h2>")
    h.append(_kv_table({k: s[k] for k in ("formats", "modes", "bit_depths", "channels", "n_volumes", "n_near_blank")}))
    for key, title in (("unreadable", "Unreadable files"), ("extension_mismatch", "Extension ≠ content")):
        items = result.files.get(key, [])
        if items:
            rows = "".join(f"<tr><td><code>{_esc(u['path'])}</code></td><td>{_esc(u['reason'])}</td></tr>" for u in items[:200])
            h.append(f"<h3>{title} ({len(items)})</h3><table>{rows}</table>")
    h.append("<h2>Class balance</h2>" + _kv_table(s["class_counts"]))
    if "balance" in plots:
        h.append(_img(plots["balance"], "class balance"))
    h.append("<h2>Duplicates</h2>")
    h.append(_groups_html(result.duplicates.get("exact", {}), thumbs, "Exact duplicates (same pixels)"))
    h.append(_groups_html(result.duplicates.get("near", {}), thumbs, "Near duplicates (perceptual hash)"))
    h.append("<h2>Patient confounding</h2>")
    conf = result.confounding
    if conf.get("has_patients"):
        rows = "".join(f"<tr><td>{_esc(c)}</td><td>{v['n_patients']}</td><td>{v['fraction_of_patients']:.0%}</td>"
                       f"<td>{v['n_images']}</td><td>{v['largest_patient_share']:.0%}</td></tr>"
                       for c, v in conf["per_class"].items())  # fmt: skip
        h.append(f"<p>{conf['n_patients']} patients; {conf['single_class_patients']} with a single class.</p>"
                 "<table><tr><th>class</th><th>patients</th><th>of all</th><th>images</th>"
                 f"<th>largest patient's share</th></tr>{rows}</table>")  # fmt: skip
    else:
        h.append(f"<p>{_esc(conf.get('note', ''))}</p>")
    if conf.get("colour_by_patient") is not None:
        h.append("<h2>Colour by patient (stain)</h2>" + colour_table_html(conf["colour_by_patient"]))
    h.append("<h2>Shortcut test (metadata only)</h2>")
    sc = result.shortcut
    if sc.get("status") == "ok":
        rows = "".join(f"<tr><td>{_esc(g)}</td><td>{v['auc']:.3f}</td><td>{_esc(v.get('model') or '')}</td></tr>"
                       for g, v in sc["groups"].items())  # fmt: skip
        feats = "".join(f"<tr><td>{_esc(f['feature'])}</td><td>{f['auc']:.3f}</td></tr>" for f in sc["top_features"])
        h.append(f"<p>Cross-validated ROC-AUC ({sc['folds']} folds, "
                 f"{'grouped by patient' if sc['grouped_by_patient'] else 'not grouped'}, n={sc['n_samples']}); "
                 f"warning at ≥ {sc['threshold']:.2f}.</p><table><tr><th>features</th><th>AUC</th><th>model</th></tr>"
                 f"{rows}</table><h3>Single features</h3><table><tr><th>feature</th><th>AUC alone</th></tr>"
                 f"{feats}</table>")  # fmt: skip
    else:
        h.append(f"<p>Skipped: {_esc(sc.get('reason', ''))}</p>")
    h.append("<h2>Per-class statistics</h2>")
    if "distributions" in plots:
        h.append(_img(plots["distributions"], "per-class distributions"))
    if "colour" in plots:
        h.append(_img(plots["colour"], "colour histograms"))
    for cname, st in result.stats.items():
        rows = "".join(f"<tr><td>{_esc(f)}</td>" + "".join(
            f"<td>{'' if v[q] is None else f'{v[q]:.4g}'}</td>" for q in ("min", "q1", "median", "q3", "max")) + "</tr>"
            for f, v in st.items() if isinstance(v, dict))  # fmt: skip
        h.append(f"<h3>{_esc(cname)} ({st['count']})</h3><table><tr><th></th><th>min</th><th>q1</th>"
                 f"<th>median</th><th>q3</th><th>max</th></tr>{rows}</table>")  # fmt: skip
    h.append("<h2>Outliers</h2>")
    out = result.outliers
    if out.get("items"):
        rows = "".join(f"<tr><td class='thumbs'>{_img(thumbs[o['path']]) if o['path'] in thumbs else ''}</td>"
                       f"<td><code>{_esc(o['path'])}</code></td><td>{_esc('; '.join(o['reasons']))}</td></tr>"
                       for o in out["items"])  # fmt: skip
        h.append(f"<p>{out['n_outliers']} outlier(s) (robust z ≥ {out['z_threshold']}).</p><table>{rows}</table>")
    else:
        h.append("<p>None found.</p>")
    h.append(f"<h2>Exclude list</h2><p>{len(result.exclude)} file(s) advised to leave out "
             "(unreadable, later copies of exact duplicates, every copy of a label conflict). "
             "The audit never moves or deletes a file.</p>")  # fmt: skip
    h.append(f"<p><small>timings: {_esc({k: round(v, 2) for k, v in result.timings.items()})}</small></p></body></html>")
    return "".join(h)


def write_report(result: AuditResult, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``audit.json`` and ``audit.html`` into ``out_dir`` (atomically); their paths."""
    from medlens.io.atomic import atomic_write_text

    out = Path(out_dir)
    return {
        "json": atomic_write_text(out / "audit.json", result.dumps() + "\n"),
        "html": atomic_write_text(out / "audit.html", render_html(result)),
    }
