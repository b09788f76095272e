"""The console's page, script and styles, shipped in the cems package (no CDN: the console works
offline and loads nothing from elsewhere), and the headers they are served with."""

from __future__ import annotations

from importlib import resources

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "application/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


def _load() -> dict[str, tuple[str, str]]:
    folder = resources.files("cems.console").joinpath("static")
    assets = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if suffix in _TYPES:
            assets[entry.name] = (_TYPES[suffix], entry.read_text(encoding="utf-8"))
    return assets


# name -> (content type, text). Only these names are served: a path is looked up, never joined.
CONSOLE_ASSETS: dict[str, tuple[str, str]] = _load()

# The page runs only its own script and styles and talks only to its own origin; it may not be
# framed (clickjacking an operator into unmasking or erasing).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
