"""Namespace patterns: the dump filters and mongorestore's --nsInclude/--nsFrom/--nsTo, one matcher for all."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from backup_exporter.core.errors import UsageError


def ns_selected(ns: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """Return whether "db.collection" passes the glob filters (no include = everything; exclude wins)."""
    if include and not any(fnmatch.fnmatchcase(ns, pattern) for pattern in include):
        return False
    return not any(fnmatch.fnmatchcase(ns, pattern) for pattern in exclude)


@dataclass(frozen=True)
class NamespaceMap:
    """Source filters (--nsInclude/--nsExclude globs) and renames (--nsFrom/--nsTo, `*` and `$var$`)."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    ns_from: tuple[str, ...] = ()
    ns_to: tuple[str, ...] = ()

    @classmethod
    def build(cls, include: Sequence[str] = (), exclude: Sequence[str] = (),
              ns_from: Sequence[str] = (), ns_to: Sequence[str] = ()) -> NamespaceMap:
        """Return the map; raises UsageError when nsFrom/nsTo do not pair up."""
        if len(ns_from) != len(ns_to):
            raise UsageError(f"ns_from has {len(ns_from)} patterns but ns_to has {len(ns_to)}: "
                             f"they pair up one to one")
        for source, target in zip(ns_from, ns_to, strict=True):
            if source.count("*") != target.count("*"):
                raise UsageError(f"nsFrom {source!r} and nsTo {target!r} have different numbers of '*'")
        return cls(tuple(include), tuple(exclude), tuple(ns_from), tuple(ns_to))

    def selected(self, ns: str) -> bool:
        if self.include and not any(fnmatch.fnmatchcase(ns, p) for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(ns, p) for p in self.exclude)

    def target(self, ns: str) -> tuple[str, str]:
        """Return (db, collection) the source namespace restores into; the first matching rename wins.

        Raises UsageError when a rename produces no "db.collection".
        """
        result = target_namespace(ns, self.ns_from, self.ns_to)
        db, dot, coll = result.partition(".")
        if not db or not dot or not coll:
            raise UsageError(f"namespace {ns} renames to {result!r}, which is not 'db.collection'")
        return db, coll


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """Return a regex for a mongorestore namespace pattern: `*` and `$name$` match any text."""
    parts = re.split(r"(\*|\$[A-Za-z0-9_]+\$)", pattern)
    regex = ""
    for part in parts:
        if part == "*":
            regex += "(.*?)"
        elif part.startswith("$") and part.endswith("$") and len(part) > 2:
            regex += f"(?P<{part[1:-1]}>.*?)"
        else:
            regex += re.escape(part)
    return re.compile(regex, re.DOTALL)


def target_namespace(ns: str, ns_from: Sequence[str], ns_to: Sequence[str]) -> str:
    """Return where mongorestore puts source namespace `ns` given --nsFrom/--nsTo pairs (first match wins).

    Both mongorestore forms are understood: `*` wildcards (by position) and `$name$` variables (by name).
    """
    for source, target in zip(ns_from, ns_to, strict=True):
        match = pattern_regex(source).fullmatch(ns)
        if not match:
            continue
        positional = iter(g for i, g in enumerate(match.groups(), 1)
                          if i not in match.re.groupindex.values())
        named = match.groupdict()

        def substitute(token: re.Match[str], positional: Iterator[str] = positional,
                       named: dict[str, str] = named) -> str:
            text = token.group(0)
            if text == "*":
                return next(positional, "")
            return named.get(text[1:-1], text)

        return re.sub(r"\*|\$[A-Za-z0-9_]+\$", substitute, target)
    return ns



# ------------------------------------------------------------------------------------------ restore
