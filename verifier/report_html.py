"""The page a person reads beside a signed report (docs/design.md §15): one self-contained HTML
file, no network (a Content-Security-Policy of `default-src 'none'`), no script, no external
font or image; charts are inline SVG. Every value from the store is escaped. Pure: the signed
statement in, text out. The page is a reading aid: the signed JSON is what verifies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

_CSP = "default-src 'none'; style-src 'unsafe-inline'"
_STYLE = """
body{font-family:sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #bbb;padding:.2em .5em;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#176317}.bad{color:#a01010}
svg{display:block;margin:.5em 0 1.5em;background:#fafafa}
pre{background:#f4f4f4;padding:.5em;overflow-x:auto}
"""


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _n(value: object) -> str:
    return "—" if value is None else f"{value:,}" if isinstance(value, int) else _e(value)


def _table(head: Sequence[str], rows: Iterable[Sequence[object]], numeric: set[int]) -> str:
    out = ["<table><tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr>"]
    for row in rows:
        out.append("<tr>")
        for i, cell in enumerate(row):
            out.append(f'<td class="n">{_n(cell)}</td>' if i in numeric else f"<td>{_e(cell)}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _pci(model: Mapping[str, Any]) -> str:
    device, subsystem = model["pci_device_id"], model["pci_subsystem_id"]
    if not isinstance(device, int):
        return "unreadable"
    return f"0x{device:08x}" + (f" / 0x{subsystem:08x}" if isinstance(subsystem, int) else "")


def _bars(countries: Sequence[Mapping[str, Any]]) -> str:
    """TPP per country (bar) against its cap and the authorized TPP (marks)."""
    width, row_h, left = 640, 34, 60
    values = [
        v for c in countries for v in (c["controlled_tpp"], c["cap_tpp"], c["authorized_tpp"]) if v
    ]
    top = max(values, default=1) or 1
    height = max(1, len(countries)) * row_h + 30
    parts = [
        (
            f'<svg id="chart-countries" role="img" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
        ),
        "<title>Controlled TPP per country against caps and authorizations</title>",
    ]
    span = width - left - 20
    for i, c in enumerate(countries):
        y = 10 + i * row_h
        length = span * int(c["controlled_tpp"]) // top
        parts.append(f'<text x="4" y="{y + 16}" font-size="12">{_e(c["country"])}</text>')
        parts.append(
            f'<rect x="{left}" y="{y}" width="{max(length, 1)}" height="20" fill="#4a78b0">'
            f"<title>{_e(c['country'])}: {_n(c['controlled_tpp'])} TPP</title></rect>"
        )
        for key, colour in (("cap_tpp", "#a01010"), ("authorized_tpp", "#176317")):
            if c[key]:
                x = left + span * int(c[key]) // top
                parts.append(
                    f'<line x1="{x}" x2="{x}" y1="{y - 3}" y2="{y + 23}" stroke="{colour}" '
                    f'stroke-width="3"><title>{key}: {_n(c[key])}</title></line>'
                )
    parts.append(
        f'<text x="{left}" y="{height - 6}" font-size="11">bar: controlled TPP; red: country '
        "cap; green: authorized TPP</text></svg>"
    )
    return "".join(parts)


def _coverage(points: Sequence[Mapping[str, Any]]) -> str:
    """Share of held GPUs attested on each sampled day of the period."""
    width, height, pad = 640, 200, 30
    parts = [
        (
            f'<svg id="chart-coverage" role="img" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
        ),
        "<title>Share of GPUs attested, over the period</title>",
        (
            f'<line x1="{pad}" y1="{height - pad}" x2="{width - 10}" y2="{height - pad}" '
            'stroke="#888"/>'
        ),
        f'<text x="2" y="{pad}" font-size="11">100%</text>',
        f'<text x="2" y="{height - pad}" font-size="11">0%</text>',
    ]
    step = (width - pad - 20) / max(1, len(points))
    for i, p in enumerate(points):
        held, fresh = int(p["held"]), int(p["attested"])
        share = fresh / held if held else 0.0
        bar = (height - 2 * pad) * share
        x = pad + 4 + i * step
        parts.append(
            f'<rect x="{x:.1f}" y="{height - pad - bar:.1f}" width="{max(step - 6, 2):.1f}" '
            f'height="{max(bar, 1):.1f}" fill="#4a78b0"><title>{_e(p["day"])}: {fresh:,} of '
            f"{held:,} GPUs attested that day</title></rect>"
        )
        parts.append(
            f'<text x="{x:.1f}" y="{height - 10}" font-size="9">{_e(str(p["day"])[5:])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _summary(p: Mapping[str, Any]) -> str:
    s = p["summary"]
    verdict = (
        '<p class="ok"><strong>Within limits</strong> at the end of the period.</p>'
        if s["within_limits"]
        else '<p class="bad"><strong>Not within limits</strong> at the end of the period.</p>'
    )
    fresh = s["attested_last_day"]
    items = "".join(f"<li>{_e(r)}</li>" for r in s["reasons"])
    review = "".join(f"<li>{_e(r)}</li>" for r in s["review"])
    return (
        f"{verdict}<ul>{items}</ul>"
        + (f"<p>For review:</p><ul>{review}</ul>" if review else "")
        + f"<p>{_n(s['units'])} GPUs, {_n(s['tpp'])} TPP; {_n(fresh['gpus'])} of "
        f"{_n(fresh['of'])} GPUs attested on the last day.</p>"
    )


def render_html(statement: Mapping[str, Any]) -> str:
    """The page of a report statement (as `verifier.report.build_statement` returns it)."""
    p = statement["predicate"]
    period, entity, pack, log = p["period"], p["entity"], p["policy_pack"], p["log"]
    sites = p["sites"]
    site_rows = [
        (
            s["id"], s["country"], s["tier"], s["units"], s["tpp"], s["controlled_tpp"],
            s["first_received"], (f"{s['attested_last_day']['gpus']:,} / "
            f"{s['attested_last_day']['of']:,}"), s["location"]["status"],
        )
        for s in sites
    ]  # fmt: skip
    model_rows = [
        (s["id"], m["model"], _pci(m), m["units"], m["tpp_each"], m["tpp"])
        for s in sites
        for m in s["models"]
    ]
    auth_rows = [
        (
            a["id"],
            a["kind"],
            a["state"],
            a["used_units"],
            a["max_units"],
            a["used_tpp"],
            a["max_tpp"],
        )
        for a in p["authorizations"]
    ]
    finding_rows = [
        (f["rule"], f["severity"], f["subject"], f.get("state", "raised"), f["message"])
        for f in [*p["findings_at_period_end"], *p["findings"]]
    ]
    sample_rows = [(s["site"], s["agent_id"], s["log_index"]) for s in p["samples"]]
    title = f"GPU holdings report: {entity['id']} {period['label']}"
    body = [
        f"<h1>{_e(title)}</h1>",
        (
            f"<p>{_e(entity['name'])} ({_e(entity['hq_country'])}, VEU {_e(entity['veu'])}), "
            f"{_e(period['from'])} to {_e(period['to'])}, holdings as of the end of "
            f"{_e(period['as_of'])}; policy pack {_e(pack['id'])} ({_e(pack['title'])}, sha256 "
            f"{_e(pack['sha256'])}); generated {_e(p['generated_at'])}.</p>"
        ),
        "<h2>Summary</h2>",
        _summary(p),
        "<h2>TPP per country</h2>",
        _bars(p["countries"]),
        "<h2>Coverage over the period</h2>",
        _coverage(p["coverage"]),
        "<h2>Sites</h2>",
        _table(
            [
                "site",
                "country",
                "tier",
                "GPUs",
                "TPP",
                "controlled TPP",
                "first received",
                "attested last day",
                "location",
            ],
            site_rows,
            {2, 3, 4, 5},
        ),
        "<p>Location is a bound on distance from landmarks, never a position.</p><ul>"
        + "".join(
            f"<li>{_e(s['id'])}: {_e(s['location']['status'])}: {_e(s['location']['reason'])}</li>"
            for s in sites
        )
        + "</ul>",
        "<h2>Models per site</h2>",
        _table(["site", "model", "PCI ids", "GPUs", "TPP each", "TPP"], model_rows, {3, 4, 5}),
        "<h2>Authorizations</h2>",
        _table(
            ["id", "kind", "state", "units used", "units allowed", "TPP used", "TPP allowed"],
            auth_rows,
            {3, 4, 5, 6},
        ),
        "<h2>Findings</h2>",
        _table(["rule", "severity", "subject", "state", "message"], finding_rows, set())
        if finding_rows
        else "<p>No finding concerned this entity during the period.</p>",
        "<h2>Transparency log</h2>",
        f"<pre>{_e(log['checkpoint'])}</pre>",
        _table(["site", "agent", "log index"], sample_rows, {2}),
        "<h2>Trust model</h2>",
        "".join(f"<p>{_e(t)}</p>" for t in p["trust_model"]),
        "<p>Verify the signed JSON, not this page: <code>gpu-attest-report verify</code>.</p>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )
