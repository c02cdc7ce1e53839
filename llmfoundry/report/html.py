"""One self-contained HTML page: the PNGs inlined as base64 data URLs, tables and config as escaped text.

No script, no stylesheet or font from elsewhere: the page opens offline, from a mail attachment or a
copied folder, exactly as written.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1320px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; } td, th { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #f3f3f3; text-align: left; } td { font-variant-numeric: tabular-nums; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; } figure { margin: 0; } img { max-width: 100%; }
figcaption { font-size: 0.8em; color: #555; } pre { background: #f8f8f8; padding: 8px; overflow-x: auto; }
.muted { color: #666; font-size: 0.9em; }
"""


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def image(name: str, data: bytes, caption: str) -> str:
    encoded = base64.b64encode(data).decode()
    return (f"<figure><img alt=\"{html.escape(name)}\" src=\"data:image/png;base64,{encoded}\">"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def page(title: str, sections: Sequence[tuple[str, str]], note: str) -> str:
    """The document: a title, a note under it, then (heading, already-escaped html) sections."""
    parts = [f"<h2>{html.escape(heading)}</h2>\n{body}" for heading, body in sections]
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<link rel=\"icon\" href=\"data:,\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            f"<h1>{html.escape(title)}</h1>\n<p class=\"muted\">{html.escape(note)}</p>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def escape(text: str) -> str:
    return html.escape(text)


def pre(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"
