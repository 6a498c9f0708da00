"""Who may do what, and which files they may read: the one rule every entry point goes through.

The REST API, the web UI, chat and the LLM planner's tools all admit a caller by API key
(`authorize`, or `caller_by_id` for a UI session made from a key) and check scopes with the same
`check_scope`. Files are read through a `DataAccess`: a remote caller (API, UI, chat through
them) reads only inside the data folder and Poise's own uploads (a folder or glob of Parquet parts only when every
part is inside); the local CLI, run by the
machine's user in their own shell, reads any path (`DataAccess.local()`). What a remote caller is
shown names files as they would (relative to the data folder, `uploads/...`), never by the server's
absolute layout (`hide_paths`, `shown_path`).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poise.agents.data_engineering.loading import is_parquet_set, parquet_files
from poise.agents.errors import NotFound, PoiseError
from poise.pipelines.settings import Settings
from poise.registry.keys import KeyInfo, key_by_id, recently_verified, verify_key

UPLOADS = "uploads"  # how a caller names the folder of its uploads
FAILED_ATTEMPTS = 20  # wrong keys from one address within FAILED_WINDOW seconds before it is told to wait
FAILED_WINDOW = 60.0


class Unauthenticated(PoiseError):
    """No key, or a key that is invalid or revoked."""


class Forbidden(PoiseError):
    """A valid key without the scope the action needs, or a path outside what the caller may read."""


class TooManyAttempts(PoiseError):
    """Too many wrong keys from one address lately: it must wait `retry_after` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"too many invalid API keys from this address; retry in {retry_after} s")
        self.retry_after = retry_after


class PathRefused(Forbidden):
    """A path the caller may not read (outside the data folder and their uploads, a NUL in it): refused as a bad
    request (400) rather than a missing scope (403)."""


class NoSuchFile(NotFound):
    """A path inside what the caller may read, where there is no file."""


def local_user() -> str:
    """Who runs a command on this machine, for the record of what they did (e.g. a promotion by hand)."""
    import getpass
    import os

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container user without a passwd entry)
        return f"uid {os.getuid()}"


def check_scope(info: KeyInfo, *scopes: str) -> KeyInfo:
    """The key, if it holds one of `scopes` (or `admin`)."""
    if not set(scopes) & set(info.scopes) and "admin" not in info.scopes:
        raise Forbidden(f"this key lacks the {' or '.join(repr(scope) for scope in scopes)} scope")
    return info


class _FailedAttempts:
    """Recent wrong keys per (key store, caller address), in this process: guessing keys gets a 429, not unlimited
    tries."""

    def __init__(self):
        self._lock = threading.Lock()
        self._times: dict[tuple[str, str], deque[float]] = defaultdict(deque)

    def check(self, db_url: str, source: str) -> None:
        with self._lock:
            times, now = self._times[(db_url, source)], time.monotonic()
            while times and times[0] < now - FAILED_WINDOW:
                times.popleft()
            if len(times) >= FAILED_ATTEMPTS:
                raise TooManyAttempts(int(times[0] + FAILED_WINDOW - now) + 1)

    def record(self, db_url: str, source: str) -> None:
        with self._lock:
            self._times[(db_url, source)].append(time.monotonic())


failed_attempts = _FailedAttempts()


def authorize(settings: Settings, key: str | None, *scopes: str, source: str = "local") -> KeyInfo:
    """The key's record if it is valid and holds one of `scopes` (or `admin`). `source` is the caller's address:
    after `FAILED_ATTEMPTS` wrong keys from it within `FAILED_WINDOW` seconds, it gets `TooManyAttempts`."""
    if not key:
        raise Unauthenticated("an API key is required (Authorization: Bearer <key> or X-API-Key)")
    failed_attempts.check(settings.db_url, source)
    info = recently_verified(settings.db_url, key) or verify_key(settings.db_url, key)
    if info is None:
        failed_attempts.record(settings.db_url, source)
        raise Unauthenticated("invalid or revoked API key")
    return check_scope(info, *scopes)


def caller_by_id(settings: Settings, key_id: int, *scopes: str) -> KeyInfo:
    """A signed-in UI session's key, read afresh so that a revoked key stops working at once."""
    info = key_by_id(settings.db_url, key_id)
    if info is None or info.revoked:
        raise Unauthenticated("this key was revoked; sign in again")
    return check_scope(info, *scopes)


@dataclass(frozen=True)
class DataAccess:
    """The folders a caller may read tables from; `roots=None` is the local user, who may read any path."""

    roots: tuple[Path, ...] | None

    @classmethod
    def local(cls) -> DataAccess:
        return cls(None)

    @classmethod
    def remote(cls, settings: Settings) -> DataAccess:
        return cls((settings.data_folder, settings.uploads_folder))

    def _inside(self, path: Path) -> bool:
        return any(path.is_relative_to(root) for root in self.roots)

    def resolve(self, raw: str | Path) -> Path:
        """The table `raw` names: a file, or a folder or glob of Parquet parts. For a remote caller: a path relative
        to the data folder, `uploads/...` for an upload, or an absolute path inside either, and for a folder or glob
        every part it holds inside them too; anything else is refused without saying what exists there."""
        text = str(raw)
        if "\x00" in text:
            raise PathRefused("the path contains a NUL character")
        if self.roots is None:
            return Path(text).expanduser()
        data_folder, uploads = self.roots
        parts = Path(text).parts
        base = uploads if parts[:1] == (UPLOADS,) and not (data_folder / text).exists() else data_folder
        candidate = (base / (Path(*parts[1:]) if base is uploads else text)).resolve()  # absolute text replaces base
        if text.startswith("~") or "://" in text or not self._inside(candidate):
            raise PathRefused(f"'{text}' is not inside the data folder or your uploads")
        if is_parquet_set(candidate):  # a folder or glob of Parquet parts: every part, links followed, inside too
            parts = parquet_files(candidate)
            if not parts:
                raise NoSuchFile(f"no Parquet part in '{text}' in the data folder or your uploads")
            if not all(self._inside(part) for part in parts):
                raise PathRefused(f"'{text}' holds parts that are not inside the data folder or your uploads")
            return candidate
        if not candidate.is_file():
            raise NoSuchFile(f"no file '{text}' in the data folder or your uploads")
        return candidate


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
