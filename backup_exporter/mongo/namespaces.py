"""Namespace patterns, one matcher for the whole project: the dump filters (`include`/`exclude`) and
restore's --ns-include/--ns-from/--ns-to, on both restore engines.

Hand-written because no library speaks mongorestore's pattern language, and the native restore must mean
exactly what mongorestore 100.8.0 means (``mongorestore/ns/ns.go``):
- `*` matches any text, dots included; every other character is literal (no `?` or `[...]` as in shell
  globs); `\\*` is a literal asterisk and `\\\\` a literal backslash.
- A rename without `$` pairs the asterisks of --ns-from and --ns-to by position (their counts must agree).
- A rename with `$name$` variables captures by name; a variable may appear once in --ns-from (twice is an
  error) and any number of times in --ns-to; in that form `*` is literal.
- When several renames match a namespace, the LAST one given wins.
- Include/exclude patterns may not contain `$`.
Every malformed pattern is a UsageError naming it (never a regex error).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from backup_exporter.core.errors import UsageError

_VARIABLE = re.compile(r"\$([^$]*)\$(.*)\Z", re.DOTALL)
_WILDCARD = re.compile(r"(|.*[^\\])\*(.*)\Z", re.DOTALL)
_ESCAPES = {"\\\\": "\\", "\\*": "*", "\\": ""}
_ESCAPE = re.compile(r"\\\\|\\\*|\\")


@dataclass(frozen=True)
class _Rename:
    regex: re.Pattern[str]
    template: tuple[str | int, ...]  # literal text, or the number of a captured group

    def apply(self, ns: str) -> str | None:
        match = self.regex.fullmatch(ns)
        if match is None:
            return None
        return "".join(part if isinstance(part, str) else match.group(part) for part in self.template)


def _unescape(text: str) -> str:
    return _ESCAPE.sub(lambda m: _ESCAPES[m.group(0)], text)


def _wildcards_to_variables(text: str) -> str:
    """Turn each unescaped `*` into a numbered variable (numbered from the right, as mongorestore does:
    `from` and `to` are numbered alike, so they still pair by position)."""
    count = 1
    while (match := _WILDCARD.match(text)) is not None:
        text = f"{match.group(1)}${count}${match.group(2)}"
        count += 1
    return _unescape(text)


def _asterisks(text: str) -> int:
    return text.count("*") - text.count("\\*")


@lru_cache(maxsize=256)
def _compile(source: str, target: str, what: str) -> _Rename:
    """Return the compiled rename `source` -> `target`; raises UsageError naming a malformed pattern."""
    def refuse(reason: str) -> UsageError:
        shown = f"{source!r}" if source == target else f"{source!r} -> {target!r}"
        return UsageError(f"invalid {what} {shown}: {reason}")

    if "$" in source:
        if source.count("$") % 2 or target.count("$") % 2:
            raise refuse("odd number of '$' (variables are written $name$)")
    else:
        if _asterisks(source) != _asterisks(target):
            raise refuse("different numbers of '*' in --ns-from and --ns-to")
        source, target = _wildcards_to_variables(source), _wildcards_to_variables(target)
    groups: dict[str, int] = {}
    regex = ""
    rest = source
    while rest:
        variable = _VARIABLE.match(rest)
        if variable is not None:
            name = variable.group(1)
            if name in groups:
                raise refuse(f"variable ${name}$ is used more than once in the pattern it matches with")
            groups[name] = len(groups) + 1
            regex += "(.*?)"
            rest = variable.group(2)
            continue
        if rest[0] == "$":
            raise refuse("a '$' that does not start a $name$ variable")
        regex += re.escape(rest[0])
        rest = rest[1:]
    template: list[str | int] = []
    rest = target
    while rest:
        variable = _VARIABLE.match(rest)
        if variable is not None:
            name = variable.group(1)
            if name not in groups:
                raise refuse(f"variable ${name}$ of --ns-to is not in --ns-from")
            template.append(groups[name])
            rest = variable.group(2)
            continue
        if rest[0] == "$":
            raise refuse("a '$' that does not start a $name$ variable")
        template.append(rest[0])
        rest = rest[1:]
    return _Rename(re.compile(regex, re.DOTALL), tuple(template))


def _matcher(pattern: str) -> re.Pattern[str]:
    if "$" in pattern:
        raise UsageError(f"invalid namespace filter {pattern!r}: '$' is not allowed in include/exclude patterns")
    return _compile(pattern, pattern, "namespace filter").regex


def pattern_matches(pattern: str, ns: str) -> bool:
    """Return whether "db.collection" matches an include/exclude pattern (`*` = any text).
    Raises UsageError for a pattern holding `$`."""
    return _matcher(pattern).fullmatch(ns) is not None


def ns_selected(ns: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """Return whether "db.collection" passes the filters (no include = everything; exclude wins)."""
    if include and not any(pattern_matches(p, ns) for p in include):
        return False
    return not any(pattern_matches(p, ns) for p in exclude)


def check_patterns(include: Sequence[str] = (), exclude: Sequence[str] = (), ns_from: Sequence[str] = (),
                   ns_to: Sequence[str] = ()) -> None:
    """Raise UsageError for the first malformed pattern or an unpaired --ns-from/--ns-to."""
    if len(ns_from) != len(ns_to):
        raise UsageError(f"ns_from has {len(ns_from)} patterns but ns_to has {len(ns_to)}: "
                         f"they pair up one to one")
    for pattern in (*include, *exclude):
        _matcher(pattern)
    for source, target in zip(ns_from, ns_to, strict=True):
        _compile(source, target, "rename")


def target_namespace(ns: str, ns_from: Sequence[str], ns_to: Sequence[str]) -> str:
    """Return where mongorestore puts source namespace `ns` given --nsFrom/--nsTo pairs (the last
    matching pair wins; none matching leaves it unchanged). Raises UsageError for a malformed pair."""
    check_patterns(ns_from=ns_from, ns_to=ns_to)
    for source, target in reversed(list(zip(ns_from, ns_to, strict=True))):
        renamed = _compile(source, target, "rename").apply(ns)
        if renamed is not None:
            return renamed
    return ns


@dataclass(frozen=True)
class NamespaceMap:
    """Source filters (--nsInclude/--nsExclude) and renames (--nsFrom/--nsTo, `*` and `$var$`)."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    ns_from: tuple[str, ...] = ()
    ns_to: tuple[str, ...] = ()

    @classmethod
    def build(cls, include: Sequence[str] = (), exclude: Sequence[str] = (),
              ns_from: Sequence[str] = (), ns_to: Sequence[str] = ()) -> NamespaceMap:
        """Return the map; raises UsageError for a malformed pattern or unpaired nsFrom/nsTo."""
        check_patterns(include, exclude, ns_from, ns_to)
        return cls(tuple(include), tuple(exclude), tuple(ns_from), tuple(ns_to))

    def selected(self, ns: str) -> bool:
        return ns_selected(ns, self.include, self.exclude)

    def target(self, ns: str) -> tuple[str, str]:
        """Return (db, collection) the source namespace restores into.

        Raises UsageError when a rename produces no "db.collection".
        """
        result = target_namespace(ns, self.ns_from, self.ns_to)
        db, dot, coll = result.partition(".")
        if not db or not dot or not coll:
            raise UsageError(f"namespace {ns} renames to {result!r}, which is not 'db.collection'")
        return db, coll
