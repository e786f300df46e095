"""How long a governed table keeps its old versions, and when a version a model was trained on falls out (pure).

Delta keeps an old version readable while two things survive: its log entry, removed by log cleanup once older than
`delta.logRetentionDuration` (default 30 days), and its data files, which VACUUM may delete once a later commit
removed them longer ago than `delta.deletedFileRetentionDuration` (default 7 days).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Mapping

LOG_RETENTION = "delta.logRetentionDuration"
DELETED_FILE_RETENTION = "delta.deletedFileRetentionDuration"
DELTA_DEFAULTS = {LOG_RETENTION: "interval 30 days", DELETED_FILE_RETENTION: "interval 1 weeks"}
# Ten years: the EU AI Act (Art. 18) keeps a high-risk system's technical documentation, which names its training
# data, for ten years after the system is placed on the market; no model version needs its data longer.
DEFAULT_RETENTION_DAYS = 3650
DEFAULT_WARN_WITHIN_DAYS = 30
_UNITS = {"nanosecond": 1e-9, "microsecond": 1e-6, "millisecond": 1e-3, "second": 1, "minute": 60, "hour": 3600,
          "day": 86400, "week": 7 * 86400}
_INTERVAL = re.compile(r"^\s*(?:interval\s+)?(\d+)\s*([a-z]+?)s?\s*$", re.IGNORECASE)


class RetentionError(ValueError):
    """A retention setting or table property cannot be read."""


def table_properties(days: int) -> dict[str, str]:
    """The Delta properties that keep every version's log entry and data files for this many days."""
    if days < 1:
        raise RetentionError(f"a table retention of {days} days keeps no version; use at least 1")
    return {LOG_RETENTION: f"interval {days} days", DELETED_FILE_RETENTION: f"interval {days} days"}


def interval(text: str) -> dt.timedelta:
    """A Delta calendar interval such as `interval 30 days` or `interval 1 weeks`."""
    match = _INTERVAL.match(text or "")
    if not match or match.group(2).lower() not in _UNITS:
        raise RetentionError(f"{text!r} is not a Delta interval such as 'interval 30 days'")
    return dt.timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2).lower()])


def retention(configuration: Mapping[str, str] | None) -> tuple[dt.timedelta, dt.timedelta]:
    """(log retention, deleted-file retention) of a table, Delta's defaults where the table sets none."""
    configured = {**DELTA_DEFAULTS, **{k: v for k, v in (configuration or {}).items() if v}}
    return interval(configured[LOG_RETENTION]), interval(configured[DELETED_FILE_RETENTION])


@dataclass(frozen=True)
class VersionRetention:
    """When one version of a table may stop being readable, and why."""

    table: str
    version: int
    latest: int
    expires: dt.datetime | None
    reason: str

    def days_left(self, now: dt.datetime) -> float | None:
        return None if self.expires is None else (self.expires - now).total_seconds() / 86400


def version_retention(table: str, version: int, commit_times: Mapping[int, dt.datetime],
                      configuration: Mapping[str, str] | None) -> VersionRetention:
    """The earliest moment VACUUM or log cleanup may take the version away (None while it is the latest)."""
    latest = max(commit_times)
    log_keep, files_keep = retention(configuration)
    if version > latest:
        raise RetentionError(f"{table} has no version {version}; its latest is {latest}")
    if version == latest:
        return VersionRetention(table, version, latest, None, "the latest version: nothing removes it")
    if version < min(commit_times):
        return VersionRetention(table, version, latest, dt.datetime.min.replace(tzinfo=dt.timezone.utc),
                                f"its log entry is gone (the log starts at version {min(commit_times)})")
    candidates = []
    if version in commit_times:
        candidates.append((commit_times[version] + log_keep, f"its log entry passes {configuration_text(log_keep)}"))
    later = min(v for v in commit_times if v > version)
    candidates.append((commit_times[later] + files_keep,
                       f"its data files, replaced at version {later}, pass {configuration_text(files_keep)}"))
    expires, reason = min(candidates)
    return VersionRetention(table, version, latest, expires, reason)


def configuration_text(delta: dt.timedelta) -> str:
    days = delta.total_seconds() / 86400
    return f"{days:g} days of retention" if days >= 1 else f"{delta.total_seconds():g} s of retention"


__all__ = ["DEFAULT_RETENTION_DAYS", "DEFAULT_WARN_WITHIN_DAYS", "DELETED_FILE_RETENTION", "DELTA_DEFAULTS",
           "LOG_RETENTION", "RetentionError", "VersionRetention", "interval", "retention", "table_properties",
           "version_retention"]
