"""The Glance multi-store configuration check: each rule, each way two
paths can be one directory, the reading order of files, the command.
"""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import pytest
from oslo_config import cfg

from volume_image.cli import main as cli
from volume_image.core import glance_config

GOOD = """\
[DEFAULT]
enabled_backends = fast:file, cheap:file, web:http

[glance_store]
default_backend = fast

[fast]
filesystem_store_datadir = {root}/fast

[cheap]
filesystem_store_datadir = {root}/cheap

[web]
store_description = read-only

[os_glance_staging_store]
filesystem_store_datadir = {root}/staging

[os_glance_tasks_store]
filesystem_store_datadir = {root}/tasks
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def _findings(
    tmp_path: Path, text: str, *extra: str
) -> list[glance_config.Finding]:
    """Check ``GOOD`` (with ``{root}`` in ``tmp_path``) plus ``extra``
    files, each read after it.
    """
    paths = [_write(tmp_path / "glance-api.conf", GOOD.format(root=tmp_path))]
    for i, more in enumerate(extra):
        paths.append(
            _write(tmp_path / f"extra{i}.conf", more.format(root=tmp_path))
        )
    conf = glance_config.read([str(p) for p in paths])
    return glance_config.check(conf)


def _rules(findings: list[glance_config.Finding]) -> list[str]:
    return [f.rule for f in findings]


def test_good_config_is_clean(tmp_path: Path) -> None:
    assert _findings(tmp_path, GOOD) == []


@pytest.mark.parametrize(
    "text",
    [
        "[glance_store]\nstores = file\n",
        # an empty dict: Glance runs single-store, whatever else is set
        "[DEFAULT]\nenabled_backends =\n[glance_store]\ndefault_backend = x\n",
    ],
)
def test_single_store_is_not_checked(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path / "g.conf", text)
    conf = glance_config.read([str(path)])
    assert not glance_config.is_multistore(conf)
    assert glance_config.check(conf) == []


# -- one case per rule: (extra file, rule, impact, section, option) --
RULES = [
    (
        "[DEFAULT]\nenabled_backends = fast:file, cheap\n",
        "bad-enabled-backends",
        glance_config.REFUSAL,
        "DEFAULT",
        "enabled_backends",
    ),
    (
        "[DEFAULT]\nenabled_backends = fast:file, cheap:file, web:http, "
        "os_glance_foo:file\n[os_glance_foo]\n"
        "filesystem_store_datadir = {root}/foo\n",
        "reserved-prefix",
        glance_config.REFUSAL,
        "DEFAULT",
        "enabled_backends",
    ),
    (
        "[DEFAULT]\nenabled_backends = fast:file, cheap:file, web:http, "
        "os_glance_staging_store:file\n",
        "reserved-prefix",
        glance_config.REFUSAL,
        "DEFAULT",
        "enabled_backends",
    ),
    (
        "[glance_store]\ndefault_backend =\n",
        "no-default-backend",
        glance_config.REFUSAL,
        "glance_store",
        "default_backend",
    ),
    (
        "[glance_store]\ndefault_backend = nosuch\n",
        "default-backend-not-enabled",
        glance_config.REFUSAL,
        "glance_store",
        "default_backend",
    ),
    (
        "[cheap]\nfilesystem_store_datadir = {root}/fast\n",
        "shared-datadir",
        glance_config.DATA_LOSS,
        "cheap",
        "filesystem_store_datadir",
    ),
    (
        "[cheap]\nfilesystem_store_datadir = {root}/fast/cheap\n",
        "nested-datadir",
        glance_config.DATA_LOSS,
        "cheap",
        "filesystem_store_datadir",
    ),
    (
        "[os_glance_tasks_store]\nfilesystem_store_datadir = {root}/cheap\n",
        "reserved-datadir-shared",
        glance_config.DATA_LOSS,
        "os_glance_tasks_store",
        "filesystem_store_datadir",
    ),
    (
        "[DEFAULT]\nenabled_backends = fast:file, cheap:file, web:http, "
        "web2:http\n[web2]\nstore_description = x\n",
        "multiple-http",
        glance_config.UNSUPPORTED,
        "DEFAULT",
        "enabled_backends",
    ),
    (
        "[DEFAULT]\nenabled_backends = fast:file, cheap:file, web:http, "
        "odd:filesystem\n[odd]\n",
        "unknown-store-type",
        glance_config.BROKEN_API,
        "DEFAULT",
        "enabled_backends",
    ),
    (
        "[DEFAULT]\nenabled_backends = fast:file, cheap:file, web:http, "
        "more:rbd\n",
        "missing-section",
        glance_config.FALLBACK,
        "more",
        "",
    ),
    (
        "[cheap]\nfilesystem_store_datadir =\n",
        "missing-datadir",
        glance_config.FALLBACK,
        "cheap",
        "filesystem_store_datadir",
    ),
    (
        "[cheap]\nfilesystem_store_datadirs = {root}/c1:100\n",
        "datadir-and-datadirs",
        glance_config.FALLBACK,
        "cheap",
        "filesystem_store_datadirs",
    ),
    (
        "[cheap]\nfilesystem_store_datadir =\n"
        "filesystem_store_datadirs = {root}/c1:high\n",
        "bad-datadirs",
        glance_config.FALLBACK,
        "cheap",
        "filesystem_store_datadirs",
    ),
    (
        "[cheap]\nfilesystem_store_datadir =\n"
        "filesystem_store_datadirs = {root}/c1:1\n"
        "filesystem_store_datadirs = {root}/c1:2\n",
        "bad-datadirs",
        glance_config.FALLBACK,
        "cheap",
        "filesystem_store_datadirs",
    ),
    (
        "[task]\nwork_dir = {root}/work\n",
        "deprecated-work-dir",
        glance_config.FALLBACK,
        "task",
        "work_dir",
    ),
    (
        "[DEFAULT]\nnode_staging_uri = file://{root}/st\n",
        "deprecated-node-staging-uri",
        glance_config.FALLBACK,
        "DEFAULT",
        "node_staging_uri",
    ),
]


@pytest.mark.parametrize(
    ("extra", "rule", "impact", "section", "option"),
    RULES,
    ids=[f"{r[1]}-{i}" for i, r in enumerate(RULES)],
)
def test_each_rule(
    tmp_path: Path,
    extra: str,
    rule: str,
    impact: str,
    section: str,
    option: str,
) -> None:
    findings = _findings(tmp_path, GOOD, extra)
    assert _rules(findings) == [rule]
    (found,) = findings
    assert (found.impact, found.section, found.option) == (
        impact,
        section,
        option,
    )
    assert found.message and found.fix
    assert found.impact in glance_config.IMPACTS


def test_a_missing_file_store_section_falls_back_to_shared_dirs(
    tmp_path: Path,
) -> None:
    """Without their sections, cheap and the tasks store both write to
    [backend_defaults]'s directory (default /var/lib/glance/images).
    """
    path = _write(
        tmp_path / "g.conf",
        GOOD.format(root=tmp_path)
        .replace(f"[cheap]\nfilesystem_store_datadir = {tmp_path}/cheap", "")
        .replace(
            f"[os_glance_tasks_store]\nfilesystem_store_datadir = "
            f"{tmp_path}/tasks",
            "",
        ),
    )
    findings = glance_config.check(
        glance_config.read([str(path)]), resolve=lambda p: p
    )
    assert _rules(findings) == [
        "reserved-datadir-shared",
        "missing-section",
        "reserved-datadir-missing",
    ]
    assert "/var/lib/glance/images" in findings[0].message
    assert findings[0].section == "backend_defaults"


def test_backend_defaults_datadir_is_the_fallback(tmp_path: Path) -> None:
    findings = _findings(
        tmp_path,
        GOOD,
        "[DEFAULT]\nenabled_backends = fast:file, cheap:file, web:http, "
        "more:file\n[backend_defaults]\n"
        "filesystem_store_datadir = {root}/fast\n",
    )
    assert _rules(findings) == ["shared-datadir", "missing-section"]
    assert "'more'" in findings[0].message


def test_reserved_stores_may_share_a_directory(tmp_path: Path) -> None:
    """Staging and tasks hold no store's image files: not reported."""
    findings = _findings(
        tmp_path,
        GOOD,
        "[os_glance_tasks_store]\nfilesystem_store_datadir = {root}/staging\n",
    )
    assert findings == []


def test_default_backend_of_unknown_type_refuses(tmp_path: Path) -> None:
    findings = _findings(
        tmp_path,
        GOOD,
        "[DEFAULT]\nenabled_backends = fast:nosuch, cheap:file\n",
    )
    assert _rules(findings) == [
        "default-backend-not-enabled",
        "unknown-store-type",
    ]


def test_default_backend_reserved_refuses(tmp_path: Path) -> None:
    findings = _findings(
        tmp_path, GOOD, "[glance_store]\ndefault_backend = os_glance_x\n"
    )
    assert _rules(findings) == ["default-backend-not-enabled"]


def test_legacy_driver_names_are_known(tmp_path: Path) -> None:
    findings = _findings(
        tmp_path,
        GOOD,
        "[DEFAULT]\nenabled_backends = fast:glance.store.filesystem.Store, "
        "cheap:file\n",
    )
    assert findings == []


# -- paths as the filesystem sees them --
@pytest.mark.parametrize(
    ("cheap", "rule"),
    [
        ("{root}/fast/", "shared-datadir"),
        ("{root}/fast//", "shared-datadir"),
        ("{root}/cheap/../fast", "shared-datadir"),
        ("{root}/./fast", "shared-datadir"),
        ("{root}/link", "shared-datadir"),
        ("{root}/link/sub", "nested-datadir"),
        ("{root}/fast/deeper/cheap", "nested-datadir"),
    ],
)
def test_paths_compared_as_the_filesystem_does(
    tmp_path: Path, cheap: str, rule: str
) -> None:
    (tmp_path / "fast").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "fast")
    findings = _findings(
        tmp_path, GOOD, f"[cheap]\nfilesystem_store_datadir = {cheap}\n"
    )
    assert _rules(findings) == [rule]


@pytest.mark.parametrize(
    "cheap",
    [
        "{root}/fastest",  # a common prefix is no nesting
        "{root}/fast-link-elsewhere",
        "{root}/cheap/",
    ],
)
def test_distinct_paths_pass(tmp_path: Path, cheap: str) -> None:
    (tmp_path / "fast-link-elsewhere").symlink_to(tmp_path / "cheap")
    findings = _findings(
        tmp_path, GOOD, f"[cheap]\nfilesystem_store_datadir = {cheap}\n"
    )
    assert findings == []


def test_symlinked_store_inside_staging(tmp_path: Path) -> None:
    """A symlink can hide a store inside the staging directory."""
    (tmp_path / "staging" / "in").mkdir(parents=True)
    (tmp_path / "elsewhere").symlink_to(tmp_path / "staging" / "in")
    findings = _findings(
        tmp_path,
        GOOD,
        "[cheap]\nfilesystem_store_datadir = {root}/elsewhere\n",
    )
    assert _rules(findings) == ["reserved-datadir-shared"]
    assert f"= {tmp_path}/staging/in" in findings[0].message


@pytest.mark.parametrize(
    ("entries", "rules"),
    [
        # a datadirs entry is a path with an optional priority
        (["{root}/c1:100", "{root}/fast:50"], ["shared-datadir"]),
        (["{root}/c1", "{root}/fast/sub:7"], ["nested-datadir"]),
        (["{root}/c1:100", "{root}/c2:100"], []),
        # the same entry twice: glance_store only warns
        (["{root}/c1:5", "{root}/c1:5"], []),
        (["{root}/c1 : 5", "{root}/c2:"], []),
        ([":5"], ["bad-datadirs"]),
    ],
)
def test_datadirs_with_priorities(
    tmp_path: Path, entries: list[str], rules: list[str]
) -> None:
    lines = "".join(f"filesystem_store_datadirs = {e}\n" for e in entries)
    findings = _findings(
        tmp_path, GOOD, f"[cheap]\nfilesystem_store_datadir =\n{lines}"
    )
    assert _rules(findings) == rules


def test_datadirs_of_one_store_in_one_dir_is_glance_stores_business(
    tmp_path: Path,
) -> None:
    # "c1/" and "c1" are two strings to glance_store, one directory here;
    # with one priority glance_store accepts both, and so do we
    findings = _findings(
        tmp_path,
        GOOD,
        "[cheap]\nfilesystem_store_datadir =\n"
        "filesystem_store_datadirs = {root}/c1:1\n"
        "filesystem_store_datadirs = {root}/c1/:1\n",
    )
    assert findings == []


def test_resolve_is_a_seam(tmp_path: Path) -> None:
    """The only I/O of the checks is the path resolver."""
    seen: list[str] = []

    def resolve(path: str) -> str:
        seen.append(path)
        return "/one" if path.endswith(("fast", "cheap")) else path

    path = _write(tmp_path / "g.conf", GOOD.format(root=tmp_path))
    findings = glance_config.check(glance_config.read([str(path)]), resolve)
    assert _rules(findings) == ["shared-datadir"]
    assert sorted(seen) == sorted(
        f"{tmp_path}/{d}" for d in ("fast", "cheap", "staging", "tasks")
    )


# -- reading as oslo.config reads --
def test_later_files_and_config_dir_win(tmp_path: Path) -> None:
    base = _write(tmp_path / "glance-api.conf", GOOD.format(root=tmp_path))
    conf_d = tmp_path / "glance-api.conf.d"
    conf_d.mkdir()
    # sorted: 10 before 20; not *.conf: ignored
    _write(conf_d / "20-b.conf", "[cheap]\nfilesystem_store_datadir = /b\n")
    _write(conf_d / "10-a.conf", "[cheap]\nfilesystem_store_datadir = /a\n")
    _write(
        conf_d / "30-c.conf.bak", "[cheap]\nfilesystem_store_datadir = /c\n"
    )
    conf = glance_config.read([str(base)], [str(conf_d)])
    value = conf.get("cheap", "filesystem_store_datadir")
    assert value is not None
    assert (value.text, Path(value.file).name) == ("/b", "20-b.conf")
    assert [Path(f).name for f in conf.files] == [
        "glance-api.conf",
        "10-a.conf",
        "20-b.conf",
    ]


def test_reading_matches_oslo_config(tmp_path: Path) -> None:
    """Our merged view equals what a real ConfigOpts reads from the same
    --config-file and --config-dir: last file wins, multi-valued options
    collect from every file, section names other than DEFAULT ignore
    case, [DEFAULT] is not inherited by other sections.
    """
    one = _write(
        tmp_path / "one.conf",
        """\
        [DEFAULT]
        enabled_backends = a:file
        filesystem_store_datadir = /in-default
        [Cheap]
        filesystem_store_datadir = /one
        filesystem_store_datadirs = /m1:1
        filesystem_store_datadir = /one-again
        """,
    )
    conf_d = tmp_path / "d"
    conf_d.mkdir()
    _write(
        conf_d / "b.conf",
        """\
        [cheap]
        filesystem_store_datadirs = /m2:2
        [DEFAULT]
        enabled_backends = b:file
        """,
    )
    _write(conf_d / "a.conf", "[cheap]\nfilesystem_store_datadir = /a\n")
    ours = glance_config.read([str(one)], [str(conf_d)])

    real = cfg.ConfigOpts()
    real.register_opt(cfg.DictOpt("enabled_backends"))
    real.register_opts(
        [
            cfg.StrOpt("filesystem_store_datadir"),
            cfg.MultiStrOpt("filesystem_store_datadirs"),
        ],
        group="cheap",
    )
    real.register_opts([cfg.StrOpt("filesystem_store_datadir")], group="other")
    real(["--config-file", str(one), "--config-dir", str(conf_d)])

    enabled = ours.get("DEFAULT", "enabled_backends")
    assert enabled is not None and enabled.text == "b:file"
    assert real.enabled_backends == {"b": "file"}
    datadir = ours.get("cheap", "filesystem_store_datadir")
    assert datadir is not None
    assert datadir.text == real.cheap.filesystem_store_datadir == "/a"
    assert [v.text for v in ours.get_multi("cheap", DATADIRS)] == (
        real.cheap.filesystem_store_datadirs
    )
    assert real.cheap.filesystem_store_datadirs == ["/m1:1", "/m2:2"]
    # [DEFAULT]'s value is not the other sections' value
    assert ours.get("other", "filesystem_store_datadir") is None
    assert real.other.filesystem_store_datadir is None


DATADIRS = "filesystem_store_datadirs"


def test_substitution_as_oslo_config(tmp_path: Path) -> None:
    findings = _findings(
        tmp_path,
        GOOD,
        "[DEFAULT]\nstate = {root}\n"
        "[cheap]\nfilesystem_store_datadir = $state/fast\n"
        "[os_glance_tasks_store]\n"
        "filesystem_store_datadir = ${{cheap.filesystem_store_datadir}}/t\n",
    )
    # tasks ({root}/fast/t) is inside both fast and cheap
    assert _rules(findings) == [
        "shared-datadir",
        "reserved-datadir-shared",
        "reserved-datadir-shared",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("enabled_backends = a:file\n", "not valid ini"),
        ("[DEFAULT]\n  indented\n", "not valid ini"),
    ],
)
def test_bad_ini(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path / "g.conf", text)
    with pytest.raises(glance_config.ConfigReadError, match=message):
        glance_config.read([str(path)])


def test_unreadable(tmp_path: Path) -> None:
    with pytest.raises(glance_config.ConfigReadError, match="cannot read"):
        glance_config.read([str(tmp_path / "nosuch.conf")])
    with pytest.raises(glance_config.ConfigReadError, match="not a dir"):
        glance_config.read([], [str(tmp_path / "nosuch.d")])


# -- the command --
def _cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["check-glance-config", *args], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_cli_clean(tmp_path: Path) -> None:
    path = _write(tmp_path / "g.conf", GOOD.format(root=tmp_path))
    code, out, _ = _cli(str(path))
    assert code == cli.EXIT_OK == 0
    assert out == "no problem found in 1 file(s)\n"


def test_cli_single_store(tmp_path: Path) -> None:
    path = _write(tmp_path / "g.conf", "[glance_store]\nstores = file\n")
    code, out, _ = _cli(str(path))
    assert code == 0
    assert "no enabled_backends" in out


def test_cli_table(tmp_path: Path) -> None:
    path = _write(tmp_path / "g.conf", GOOD.format(root=tmp_path))
    conf_d = tmp_path / "d"
    conf_d.mkdir()
    _write(
        conf_d / "x.conf",
        f"[cheap]\nfilesystem_store_datadir = {tmp_path}/fast/x/..//in\n",
    )
    _write(
        tmp_path / "more.conf",
        f"[cheap]\nfilesystem_store_datadir = {tmp_path}/fast/\x1b[2J\n",
    )
    code, out, _ = _cli(str(path), "--config-dir", str(conf_d))
    assert code == cli.EXIT_SPEC == 3
    lines = out.splitlines()
    assert lines[0].split() == ["rule", "where", "impact"]
    assert lines[2].split()[:3] == [
        "nested-datadir",
        "[cheap]",
        "filesystem_store_datadir",
    ]
    assert f"in {conf_d}/x.conf" in out
    assert "fix: " in out
    assert lines[-1] == "1 problem(s) in 2 file(s)"
    # a control character from a file is shown escaped
    code, out, _ = _cli(str(path), str(tmp_path / "more.conf"))
    assert code == 3
    assert "\x1b" not in out and "\\x1b[2J" in out


def test_cli_json(tmp_path: Path) -> None:
    path = _write(tmp_path / "g.conf", GOOD.format(root=tmp_path))
    more = _write(
        tmp_path / "more.conf",
        "[DEFAULT]\nenabled_backends = fast:file, cheap:file, "
        "os_glance_x:file\n",
    )
    code, out, _ = _cli(str(path), str(more), "--format", "json")
    assert code == 3
    doc = json.loads(out)
    assert doc["files"] == [str(path), str(more)]
    assert doc["multistore"] is True
    assert doc["findings"] == [
        {
            "rule": "reserved-prefix",
            "section": "DEFAULT",
            "option": "enabled_backends",
            "impact": "refusal to start",
            "message": doc["findings"][0]["message"],
            "fix": doc["findings"][0]["fix"],
            "file": str(more),
        },
    ]
    code, out, _ = _cli(str(path), "-f", "json")
    assert (code, json.loads(out)["findings"]) == (0, [])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{root}/nosuch.conf"], "cannot read"),
        (["{root}/bad.conf"], "not valid ini"),
        (["{root}/g.conf", "--config-dir", "{root}/nosuch"], "not a dir"),
        ([], "required"),
        (["{root}/g.conf", "--format", "yaml"], "invalid choice"),
    ],
)
def test_cli_usage(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    _write(tmp_path / "g.conf", GOOD.format(root=tmp_path))
    _write(tmp_path / "bad.conf", "no section = here\n")
    code, out, err = _cli(*(a.format(root=tmp_path) for a in args))
    assert code == cli.EXIT_USAGE == 2
    # argparse's own errors go to sys.stderr, ours to ``err``
    assert message in err + capsys.readouterr().err
    assert out == ""


def test_nesting_either_way(tmp_path: Path) -> None:
    """The store listed first may be the inner one."""
    findings = _findings(
        tmp_path, GOOD, "[fast]\nfilesystem_store_datadir = {root}/cheap/f\n"
    )
    assert _rules(findings) == ["nested-datadir"]
    assert findings[0].section == "cheap"


_CHAIN = "".join(f"a{i} = $a{i + 1}$a{i + 1}\n" for i in range(40))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[fast]\nfilesystem_store_datadir = $x\n[DEFAULT]\nx = $x\n",
         "refers to itself"),
        ("[fast]\nfilesystem_store_datadir = $p\n"
         "[DEFAULT]\np = $q\nq = ${{p}}\n", "refers to itself"),
        ("[fast]\nfilesystem_store_datadir = ${{DEFAULT.x}}/f\n"
         "[DEFAULT]\nx = {root}\n", "[DEFAULT] option named with its group"),
        # 2**40 copies of "z": refused after a few steps, not computed
        ("[fast]\nfilesystem_store_datadir = /$a0\n[DEFAULT]\n" + _CHAIN
         + "a40 = z\n", "grows past"),
        ("[fast]\nfilesystem_store_datadir = /x\x00y\n", "NUL"),
    ],
)  # fmt: skip
def test_values_oslo_config_refuses_are_refused(
    tmp_path: Path, extra: str, message: str
) -> None:
    """As a usage error, never a RecursionError, a ValueError or minutes
    of work.
    """
    path = _write(tmp_path / "g.conf", GOOD.format(root=tmp_path))
    more = _write(tmp_path / "more.conf", extra.format(root=tmp_path))
    code, out, err = _cli(str(path), str(more))
    assert (code, out) == (cli.EXIT_USAGE, ""), err
    assert message in err and "Traceback" not in err


def test_files_are_read_bounded(tmp_path: Path) -> None:
    big = tmp_path / "big.conf"
    big.write_text(
        "[DEFAULT]\n" + "# x\n" * (glance_config.MAX_FILE_BYTES // 4)
    )
    for path, message in (
        (str(big), "longer than"),
        ("/dev/zero", "not a regular file"),
        (str(tmp_path / "g\0.conf"), "NUL"),
    ):
        with pytest.raises(glance_config.ConfigReadError, match=message):
            glance_config.read([path])
