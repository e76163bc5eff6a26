"""Which language the page opens in: the browser's Accept-Language, else the site's."""

from __future__ import annotations

LANGUAGES = ("zh", "en")


def pick_language(accept_language: str | None, default: str) -> str:
    """The first of LANGUAGES the header names, by its q-values (`zh-CN,zh;q=0.9,en;q=0.8`
    is zh); `default` (web.language) when it names neither or is absent."""
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        primary = tag.strip().split("-")[0].lower()
        if primary in LANGUAGES and quality > 0:
            ranked.append((-quality, index, primary))
    return min(ranked)[2] if ranked else default
