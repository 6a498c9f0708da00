"""The server's own folders, hidden from what the API returns.

API callers see a file as they would name it — relative to the data folder, `uploads/...` for an upload,
relative to Poise's home for its own files — never the server's absolute layout (`/root/.poise/...`).
`hide_paths` rewrites every string inside a value (error details, job and check views); `shown_path`
is one path as a caller sees it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipelines.settings import Settings


def _roots(settings: Settings, extra: Iterable[str | Path] = ()) -> list[tuple[str, str, str]]:
    """(absolute folder, what its files are shown relative to, how the folder itself is named), longest first."""
    roots = {str(settings.data_folder): ("", "the data folder"),
             str(settings.uploads_folder): ("uploads/", "uploads"),
             str(settings.home): ("", "Poise's home folder")}
    for folder in extra:
        roots.setdefault(str(folder), ("", "its folder"))
    return sorted(((folder, *shown) for folder, shown in roots.items() if folder not in ("", "/")),
                  key=lambda item: len(item[0]), reverse=True)


def _hide(text: str, roots: list[tuple[str, str, str]]) -> str:
    for folder, prefix, name in roots:
        if folder in text:
            text = text.replace(folder + "/", prefix).replace(folder, name)
    return text


def hide_paths(value: Any, settings: Settings, extra: Iterable[str | Path] = ()) -> Any:
    """`value` with the data folder, uploads and home (and any `extra` folder) taken out of every string in it
    (dicts, lists and tuples are walked; other values are returned as they are)."""
    roots = _roots(settings, extra)

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            return _hide(item, roots)
        if isinstance(item, dict):
            return {key: walk(inner) for key, inner in item.items()}
        if isinstance(item, list | tuple):
            return type(item)(walk(inner) for inner in item)
        return item

    return walk(value)


def shown_path(path: str | Path, settings: Settings) -> str:
    """A file as an API caller names it: relative to the data folder, `uploads/...`, relative to Poise's home,
    else its name alone."""
    resolved = Path(path).expanduser().resolve()
    for folder, prefix in ((settings.uploads_folder, "uploads/"), (settings.data_folder, ""), (settings.home, "")):
        if resolved.is_relative_to(folder):
            return prefix + str(resolved.relative_to(folder))
    return resolved.name
