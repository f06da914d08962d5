"""Check a Glance multi-store configuration before Glance reads it.

Glance 33 with glance_store 5.7.0 enforces only a few of the rules of
multi-store configuration: it refuses to start on an ``os_glance_``
store id and on a ``default_backend`` it cannot find.  The rest, two
stores in one directory, a staging area inside a store, a store without
its section, a store type it cannot load, it accepts, at best with a
warning in its log.  :func:`check` reports each such problem with where
it is, why it matters and how to fix it.

Pure apart from reading the files named (:func:`read`) and resolving
paths as the filesystem does (:func:`resolve_path`, passed to
:func:`check` so tests can stand in for it).

Files are read as Glance reads them, with oslo.config's own parser: a
later file wins over an earlier one, a config dir's ``*.conf`` files come
in sorted order, a multi-valued option collects its values from every
file, section names other than ``DEFAULT`` are case-insensitive, and
``[DEFAULT]`` is a section like any other (not inherited by the others,
as :mod:`configparser` would do).
"""

from __future__ import annotations

import dataclasses
import glob
import io
import os
import stat
import string
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from oslo_config import cfg, iniparser, types

__all__ = [
    "BROKEN_API",
    "DATA_LOSS",
    "FALLBACK",
    "IMPACTS",
    "MAX_FILE_BYTES",
    "MAX_VALUE",
    "REFUSAL",
    "RESERVED_STORES",
    "STORE_TYPES",
    "UNSUPPORTED",
    "ConfigReadError",
    "Finding",
    "GlanceConfig",
    "check",
    "config_dir_files",
    "is_multistore",
    "read",
    "resolve_path",
]

#: images are lost or overwritten
DATA_LOSS = "data loss"
#: Glance does not start
REFUSAL = "refusal to start"
#: Glance starts, but an API call fails for everyone
BROKEN_API = "broken API"
#: Glance starts, but does something else than the file says
FALLBACK = "silent fallback"
#: upstream says it does not support it; the failure is not specified
UNSUPPORTED = "unsupported"
#: the impacts, worst first (findings are sorted by this order)
IMPACTS = (DATA_LOSS, REFUSAL, BROKEN_API, FALLBACK, UNSUPPORTED)

#: the stores Glance adds itself (glance/common/wsgi_app.py)
RESERVED_STORES = ("os_glance_staging_store", "os_glance_tasks_store")
RESERVED_PREFIX = "os_glance_"
#: glance_store 5.7.0's ``glance_store.drivers`` entry points, without
#: its test fake ``no_conf``
STORE_TYPES = frozenset(
    {
        "cinder",
        "file",
        "http",
        "rbd",
        "s3",
        "swift",
        "vmware",
        "glance.store.cinder.Store",
        "glance.store.filesystem.Store",
        "glance.store.http.Store",
        "glance.store.rbd.Store",
        "glance.store.s3.Store",
        "glance.store.swift.Store",
        "glance.store.vmware_datastore.Store",
    }
)
_SHORT_TYPES = ", ".join(sorted(t for t in STORE_TYPES if "." not in t))
_FILE_TYPES = frozenset({"file", "glance.store.filesystem.Store"})
_HTTP_TYPES = frozenset({"http", "glance.store.http.Store"})
#: where a store's options fall back to when its section lacks them
#: (glance_store.driver.BackendGroupConfiguration)
SHARED_GROUP = "backend_defaults"
#: glance_store's default of filesystem_store_datadir in the shared group;
#: reserved stores get it too, since their own default is reset to None
DEFAULT_DATADIR = "/var/lib/glance/images"
DATADIR = "filesystem_store_datadir"
#: what a store whose configure_add failed looks like (measured)
_READ_ONLY = (
    "Glance logs an error, still lists the store as writable, and "
    "answers every upload to it with 410"
)
DATADIRS = "filesystem_store_datadirs"


#: bytes of one configuration file read at most (Glance's sample
#: glance-api.conf, every comment included, is about 250 KB)
MAX_FILE_BYTES = 4 * 1024 * 1024
#: characters of one option's value after $ substitution
MAX_VALUE = 64 * 1024


class ConfigReadError(Exception):
    """A file or directory could not be read, is not valid ini, or holds
    a value oslo.config would refuse.
    """


@dataclasses.dataclass(frozen=True)
class Finding:
    """One problem of a configuration.

    :ivar rule: a stable id, e.g. ``shared-datadir``.
    :ivar section: the section where it is (or should be).
    :ivar option: the option, or ``""`` for a missing section.
    :ivar impact: one of :data:`IMPACTS`.
    :ivar message: what is wrong and why it matters.
    :ivar fix: how to fix it.
    :ivar file: the file that set the value, or ``""``.
    """

    rule: str
    section: str
    option: str
    impact: str
    message: str
    fix: str
    file: str = ""

    def as_dict(self) -> dict[str, str]:
        """The finding as JSON-ready data."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class _Value:
    text: str
    file: str


class GlanceConfig:
    """The merged contents of Glance's configuration files.

    :param parsed: per file, in reading order, its file name and its
        sections (normalised names) as oslo.config's parser fills them:
        ``{section: {option: [value, ...]}}``.
    """

    def __init__(
        self, parsed: Sequence[tuple[str, Mapping[str, Mapping[str, Any]]]]
    ) -> None:
        self.files = [name for name, _ in parsed]
        self._parsed = list(parsed)
        # (group, option) -> its substituted value: each is worked out
        # once, so $a1$a1 chains cost one step per option, not 2**n
        self._done: dict[tuple[str, str], str] = {}

    def has_section(self, section: str) -> bool:
        """Whether any file has ``[section]``."""
        group = _normal_group(section)
        return any(group in sections for _, sections in self._parsed)

    def sections(self) -> set[str]:
        """Every section name (normalised) in any file."""
        return {group for _, sections in self._parsed for group in sections}

    def get(self, section: str, option: str) -> _Value | None:
        """The value oslo.config would use: the last one of the last file
        that sets it; ``$name`` and ``${group.name}`` substituted.

        :raises ConfigReadError: a substitution oslo.config refuses (a
            cycle, ``${DEFAULT.name}``) or one that grows past
            :data:`MAX_VALUE` characters.
        """
        found = self._raw(section, option)
        if found is None:
            return None
        return _Value(self._substitute(found.text, ()), found.file)

    def _raw(self, section: str, option: str) -> _Value | None:
        group = _normal_group(section)
        for name, sections in reversed(self._parsed):
            values = sections.get(group, {}).get(option)
            if values:
                return _Value(values[-1], name)
        return None

    def get_multi(self, section: str, option: str) -> list[_Value]:
        """Every value of a multi-valued option, in reading order."""
        group = _normal_group(section)
        return [
            _Value(self._substitute(text, ()), name)
            for name, sections in self._parsed
            for text in sections.get(group, {}).get(option, [])
        ]

    def _substitute(self, text: str, seen: tuple[tuple[str, str], ...]) -> str:
        # oslo.config substitutes $opt and ${group.opt} in string values;
        # a reference to an option no file sets is left as written
        if "$" not in text:
            return text

        outer = self

        class _Lookup(Mapping[str, str]):
            def __getitem__(self, key: str) -> str:
                group, _, name = key.rpartition(".")
                if group.upper() == "DEFAULT":
                    raise ConfigReadError(
                        f"${{{key}}}: oslo.config, and so Glance, refuses a "
                        f"[DEFAULT] option named with its group; write "
                        f"${name}"
                    )
                ident = (_normal_group(group or "DEFAULT"), name)
                if ident in seen:
                    chain = " -> ".join(f"${'.'.join(i)}" for i in seen)
                    raise ConfigReadError(
                        f"${key} refers to itself ({chain} -> ${key}): "
                        "oslo.config, and so Glance, refuses such a value"
                    )
                if ident in outer._done:
                    return outer._done[ident]
                found = outer._raw(*ident)
                if found is None:
                    raise KeyError(key)
                value = outer._substitute(found.text, (*seen, ident))
                outer._done[ident] = value
                return value

            def __iter__(self) -> Iterator[str]:
                return iter(())

            def __len__(self) -> int:
                return 0

        value = _Template(text.replace(r"\$", "$$")).safe_substitute(_Lookup())
        if len(value) > MAX_VALUE:
            raise ConfigReadError(
                f"a value grows past {MAX_VALUE} characters through $ "
                f"substitutions ({text[:60]!r}...): not a configuration "
                "Glance could use"
            )
        return value


class _Template(string.Template):
    # as oslo.config's: names may carry a group, ${group.opt}
    idpattern = r"[_a-z][\._a-z0-9]*"


def _normal_group(name: str) -> str:
    # oslo.config: every section name but DEFAULT is case-insensitive
    return name if name == "DEFAULT" else name.lower()


def config_dir_files(path: str) -> list[str]:
    """The files oslo.config reads for ``--config-dir path``: its
    ``*.conf``, sorted.

    :raises ConfigReadError: ``path`` is not a directory.
    """
    if not os.path.isdir(path):
        raise ConfigReadError(f"config dir {path!r} is not a directory")
    return sorted(glob.glob(os.path.join(path, "*.conf")))


def read(
    paths: Sequence[str], config_dirs: Sequence[str] = ()
) -> GlanceConfig:
    """Read ``paths`` in order, then each config dir's files, as Glance
    (oslo.config) reads ``--config-file`` and ``--config-dir``.

    :raises ConfigReadError: a file cannot be read or is not valid ini.
    """
    files = list(paths)
    for directory in config_dirs:
        files += config_dir_files(directory)
    parsed = []
    for name in files:
        sections: dict[str, dict[str, list[str]]] = {}
        normalized: dict[str, dict[str, list[str]]] = {}
        parser = cfg.ConfigParser(name, sections)
        parser._add_normalized(normalized)
        try:
            text = _read_bounded(name)
            # oslo.config's parser on the text read, not on the file
            iniparser.BaseParser.parse(parser, io.StringIO(text))
        except iniparser.ParseError as exc:
            raise ConfigReadError(f"{name}: not valid ini: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigReadError(f"{name}: not text: {exc}") from exc
        except OSError as exc:
            raise ConfigReadError(
                f"cannot read {name!r}: {exc.strerror}"
            ) from exc
        parsed.append((name, normalized))
    return GlanceConfig(parsed)


def _read_bounded(name: str) -> str:
    """A regular file's text, at most :data:`MAX_FILE_BYTES`."""
    if "\0" in name:
        raise ConfigReadError(f"{name!r}: a path cannot hold a NUL")
    fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigReadError(f"{name!r}: not a regular file")
        data = file.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ConfigReadError(
            f"{name!r}: longer than {MAX_FILE_BYTES} bytes; not a Glance "
            "configuration file"
        )
    return data.decode("utf-8")


def resolve_path(path: str) -> str:
    """``path`` as the filesystem sees it: symlinks, ``..`` and trailing
    slashes resolved (the only I/O of the checks).

    :raises ConfigReadError: the path holds a NUL.
    """
    if "\0" in path:
        raise ConfigReadError(
            f"path {path!r} holds a NUL character: no file system can name "
            "it, so Glance cannot use it"
        )
    return os.path.realpath(path)


@dataclasses.dataclass(frozen=True)
class _Dir:
    """One directory a file store writes to."""

    store: str
    path: str
    resolved: str
    option: str
    section: str
    file: str

    @property
    def reserved(self) -> bool:
        return self.store in RESERVED_STORES


def is_multistore(conf: GlanceConfig) -> bool:
    """Whether Glance runs multi-store: ``enabled_backends`` is set and
    not empty (Glance tests the parsed dict's truth).
    """
    raw = conf.get("DEFAULT", "enabled_backends")
    return raw is not None and raw.text.strip() != ""


def check(
    conf: GlanceConfig, resolve: Callable[[str], str] = resolve_path
) -> list[Finding]:
    """Every problem of the multi-store configuration ``conf``, worst
    first.  Without ``enabled_backends`` Glance runs one store, and there
    is nothing to check: the result is empty.

    :param resolve: maps a path to what the filesystem makes of it.
    """
    raw = conf.get("DEFAULT", "enabled_backends")
    if raw is None or not is_multistore(conf):
        return []
    try:
        backends: dict[str, str] = {
            str(k): str(v).strip() for k, v in types.Dict()(raw.text).items()
        }
    except ValueError as exc:
        return [
            Finding(
                "bad-enabled-backends",
                "DEFAULT",
                "enabled_backends",
                REFUSAL,
                f"enabled_backends = {raw.text!r} is not a list of "
                f"store_id:type pairs ({exc}); Glance cannot read it",
                "write it as id:type pairs separated by commas, e.g. "
                "'fast:file, cheap:file', each id once",
                raw.file,
            )
        ]
    found: list[Finding] = []
    found += _check_ids(backends, raw.file)
    found += _check_default(conf, backends)
    found += _check_sections(conf, backends)
    dirs, dir_findings = _datadirs(conf, backends)
    found += dir_findings
    found += _check_overlaps(dirs, resolve)
    found += _check_http(backends, raw.file)
    found += _check_deprecated(conf)
    return sorted(found, key=lambda f: IMPACTS.index(f.impact))


def _check_ids(backends: Mapping[str, str], file: str) -> Iterator[Finding]:
    for store, kind in backends.items():
        if store.startswith(RESERVED_PREFIX):
            yield Finding(
                "reserved-prefix",
                "DEFAULT",
                "enabled_backends",
                REFUSAL,
                f"store id {store!r} starts with {RESERVED_PREFIX!r}, "
                "which is reserved for Glance's own stores "
                f"({', '.join(RESERVED_STORES)}); Glance refuses to start",
                f"rename the store and its section; configure "
                f"{' and '.join(RESERVED_STORES)} in their sections only, "
                "never in enabled_backends",
                file,
            )
        if kind not in STORE_TYPES:
            yield Finding(
                "unknown-store-type",
                "DEFAULT",
                "enabled_backends",
                BROKEN_API,
                f"store {store!r} has type {kind!r}, which is no "
                "glance_store driver: Glance logs a warning, runs without "
                "the store, and answers every GET /v2/info/stores with "
                "500 (the store list Cinder and this tool rely on)",
                f"use one of {_SHORT_TYPES}",
                file,
            )


def _check_default(
    conf: GlanceConfig, backends: Mapping[str, str]
) -> Iterator[Finding]:
    value = conf.get("glance_store", "default_backend")
    ids = ", ".join(backends) or "(none)"
    if value is None or not value.text:
        yield Finding(
            "no-default-backend",
            "glance_store",
            "default_backend",
            REFUSAL,
            "default_backend is not set; Glance refuses to start",
            f"set it to one of the enabled stores: {ids}",
        )
        return
    kind = backends.get(value.text)
    if kind is None or value.text.startswith(RESERVED_PREFIX):
        yield Finding(
            "default-backend-not-enabled",
            "glance_store",
            "default_backend",
            REFUSAL,
            f"default_backend = {value.text!r} is not an enabled store "
            f"({ids}); Glance refuses to start",
            "name a store of enabled_backends, or enable this one",
            value.file,
        )
    elif kind not in STORE_TYPES:
        yield Finding(
            "default-backend-not-enabled",
            "glance_store",
            "default_backend",
            REFUSAL,
            f"default_backend = {value.text!r} has the unknown type "
            f"{kind!r}: Glance cannot load it and refuses to start",
            "fix the store's type, or name another store",
            value.file,
        )


def _check_sections(
    conf: GlanceConfig, backends: Mapping[str, str]
) -> Iterator[Finding]:
    for store, kind in backends.items():
        if store.startswith(RESERVED_PREFIX) or conf.has_section(store):
            continue
        if kind in _FILE_TYPES:
            why = (
                "its filesystem_store_datadir falls back to "
                f"[{SHARED_GROUP}] (default {DEFAULT_DATADIR}), a "
                "directory other stores may use too"
            )
        else:
            why = (
                f"its options fall back to [{SHARED_GROUP}] and the "
                "driver's defaults, and it has no store_description"
            )
        yield Finding(
            "missing-section",
            store,
            "",
            FALLBACK,
            f"enabled store {store!r} has no [{store}] section: {why}",
            f"add a [{store}] section with the store's options",
        )
    for store in RESERVED_STORES:
        if conf.get(store, DATADIR) is None:
            yield Finding(
                "reserved-datadir-missing",
                store,
                DATADIR,
                FALLBACK,
                f"[{store}] {DATADIR} is not set: the store falls back "
                f"to [{SHARED_GROUP}] (default {DEFAULT_DATADIR}), "
                "glance_store resets its own default",
                f"set [{store}] {DATADIR} to a directory of its own",
            )


def _datadirs(
    conf: GlanceConfig, backends: Mapping[str, str]
) -> tuple[list[_Dir], list[Finding]]:
    """The directories of every file store, as glance_store computes
    them, and what makes glance_store disable a store's writes.
    """
    dirs: list[_Dir] = []
    found: list[Finding] = []
    stores = [
        s
        for s, kind in backends.items()
        if kind in _FILE_TYPES and not s.startswith(RESERVED_PREFIX)
    ]
    for store in [*stores, *RESERVED_STORES]:
        # per option: the store's own section, else [backend_defaults]
        own = conf.get(store, DATADIR)
        datadir = own or conf.get(SHARED_GROUP, DATADIR)
        section = store if own else SHARED_GROUP
        if datadir is None:
            datadir = _Value(DEFAULT_DATADIR, "")
        multi = conf.get_multi(store, DATADIRS)
        multi_section = store
        if not multi:
            multi = conf.get_multi(SHARED_GROUP, DATADIRS)
            multi_section = SHARED_GROUP
        if datadir.text and multi:
            inherited = "" if own else f" (from [{section}] or its default)"
            found.append(
                Finding(
                    "datadir-and-datadirs",
                    store,
                    DATADIRS,
                    FALLBACK,
                    f"store {store!r} has both {DATADIR} = "
                    f"{datadir.text!r}{inherited} and {DATADIRS}: "
                    f"glance_store disables writes to it: {_READ_ONLY}",
                    f"set only one; to use {DATADIRS}, add "
                    f"'{DATADIR} =' (empty) to [{store}]",
                    multi[0].file,
                )
            )
            continue
        if datadir.text:
            dirs.append(
                _Dir(store, datadir.text, "", DATADIR, section, datadir.file)
            )
            continue
        if not multi:
            found.append(
                Finding(
                    "missing-datadir",
                    store,
                    DATADIR,
                    FALLBACK,
                    f"store {store!r} has an empty {DATADIR} and no "
                    f"{DATADIRS}: glance_store disables writes to it: "
                    f"{_READ_ONLY}",
                    f"set [{store}] {DATADIR}",
                    own.file if own else "",
                )
            )
            continue
        entries, bad = _parse_datadirs(store, multi, multi_section)
        found += bad
        if not bad:
            dirs += entries
    return dirs, found


def _parse_datadirs(
    store: str, values: Sequence[_Value], section: str
) -> tuple[list[_Dir], list[Finding]]:
    """``path:priority`` entries, parsed as glance_store does."""
    entries: list[_Dir] = []
    priorities: dict[str, int] = {}
    found: list[Finding] = []
    for value in values:
        path, sep, prio_text = value.text.rpartition(":")
        if not sep:
            path, prio_text = value.text, ""
        path, prio_text = path.strip(), prio_text.strip()
        try:
            priority = int(prio_text) if prio_text else 0
        except ValueError:
            priority = None
        if priority is None or not path:
            why = (
                "no directory"
                if priority is not None
                else f"priority {prio_text!r} is not an integer"
            )
            found.append(
                Finding(
                    "bad-datadirs",
                    section,
                    DATADIRS,
                    FALLBACK,
                    f"store {store!r}: {DATADIRS} entry {value.text!r}: "
                    f"{why}; glance_store disables writes to the store: "
                    f"{_READ_ONLY}",
                    "write each entry as /path or /path:priority",
                    value.file,
                )
            )
            continue
        if path in priorities and priorities[path] != priority:
            found.append(
                Finding(
                    "bad-datadirs",
                    section,
                    DATADIRS,
                    FALLBACK,
                    f"store {store!r}: {path!r} is listed twice in "
                    f"{DATADIRS} with different priorities; glance_store "
                    f"disables writes to the store: {_READ_ONLY}",
                    "list each directory once",
                    value.file,
                )
            )
            continue
        if path in priorities:
            continue  # the same entry twice: glance_store only warns
        priorities[path] = priority
        entries.append(_Dir(store, path, "", DATADIRS, section, value.file))
    return entries, found


def _check_overlaps(
    dirs: Sequence[_Dir], resolve: Callable[[str], str]
) -> Iterator[Finding]:
    resolved = [dataclasses.replace(d, resolved=resolve(d.path)) for d in dirs]
    for i, a in enumerate(resolved):
        for b in resolved[i + 1 :]:
            if a.store == b.store and a.resolved == b.resolved:
                continue  # one store's datadirs, one dir: glance_store's
            if a.reserved and b.reserved:
                # staging and tasks hold no image data of a store; no
                # known harm when they share a directory
                continue
            if a.resolved == b.resolved:
                how = "the same directory"
            elif _inside(a.resolved, b.resolved) or _inside(
                b.resolved, a.resolved
            ):
                how = "nested directories"
            else:
                continue
            yield _overlap(a, b, how)


def _inside(child: str, parent: str) -> bool:
    return os.path.commonpath([child, parent]) == parent


def _overlap(a: _Dir, b: _Dir, how: str) -> Finding:
    same = how == "the same directory"
    if "os_glance_tasks_store" in (a.store, b.store):
        rule = "reserved-datadir-shared"
        why = (
            "Glance's tasks write an image's temporary files there under "
            "the image's id and delete them when the task ends, the name "
            "of the image's file in the store"
        )
    elif a.reserved or b.reserved:
        rule = "reserved-datadir-shared"
        why = (
            "Glance deletes an image's file in its staging directory after "
            "an import or a copy, and at every start for images it does "
            "not know; that file has the name of the image's file in the "
            "store (measured: a copy-image out of a store that is the "
            "staging directory deletes the image's file there)"
        )
    elif same:
        rule = "shared-datadir"
        why = (
            "the two stores' images are one set of files, so a copy-image "
            "from one to the other fails ('already exists'); upstream "
            'calls it "unsupported and may lead to data loss"'
        )
    else:
        rule = "nested-datadir"
        why = (
            "whoever empties or removes the outer store's directory also "
            "removes the inner store's images; upstream calls stores "
            'sharing space "unsupported and may lead to data loss"'
        )
    shown_b = (
        b.path
        if same or b.path == b.resolved
        else (f"{b.path} = {b.resolved}")
    )
    shown_a = a.path if a.path == a.resolved else f"{a.path} = {a.resolved}"
    return Finding(
        rule,
        b.section,
        b.option,
        DATA_LOSS,
        f"stores {a.store!r} ({shown_a}) and {b.store!r} ({shown_b}) use "
        f"{how}: {why}",
        "give every file store, and each reserved store, a directory of "
        "its own, none inside another",
        b.file,
    )


def _check_http(backends: Mapping[str, str], file: str) -> Iterator[Finding]:
    http = [s for s, kind in backends.items() if kind in _HTTP_TYPES]
    if len(http) > 1:
        yield Finding(
            "multiple-http",
            "DEFAULT",
            "enabled_backends",
            UNSUPPORTED,
            f"{len(http)} http stores ({', '.join(http)}): upstream does "
            "not support more than one; Glance starts without a word",
            "keep one http store",
            file,
        )


def _check_deprecated(conf: GlanceConfig) -> Iterator[Finding]:
    for section, option, instead in (
        ("task", "work_dir", "os_glance_tasks_store"),
        ("DEFAULT", "node_staging_uri", "os_glance_staging_store"),
    ):
        value = conf.get(section, option)
        if value is not None:
            yield Finding(
                f"deprecated-{option.replace('_', '-')}",
                section,
                option,
                FALLBACK,
                f"{option} = {value.text!r} is ignored with "
                f"enabled_backends: Glance uses [{instead}] {DATADIR}",
                f"remove {option}; set [{instead}] {DATADIR}",
                value.file,
            )
