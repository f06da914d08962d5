"""``volume-image`` in process, over requests-mock: what each command
prints and the exit code it gives, for the outcomes the docs promise.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import requests_mock

from volume_image.cli import main as cli

URL = "http://glance.test:9292"
DETAIL = URL + "/v2/info/stores/detail"
STORES = {
    "stores": [
        {"id": "fast", "default": "true", "description": "Fast"},
        {"id": "cheap", "description": "Cheap"},
        {"id": "web", "read-only": "true", "description": "Web"},
    ]
}


@pytest.fixture
def glance(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[requests_mock.Mocker]:
    # no clouds.yaml or OS_* of the machine running the tests
    for name in list(__import__("os").environ):
        if name.startswith("OS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with requests_mock.Mocker() as mocker:
        yield mocker


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(
        ["--os-auth-type", "none", "--os-endpoint", URL, *argv],
        out=out,
        err=err,
    )
    return code, out.getvalue(), err.getvalue()


def test_stores_table_and_json(glance: requests_mock.Mocker) -> None:
    glance.get(DETAIL, json=STORES)
    code, out, _ = run("stores")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "id",
        "default",
        "read-only",
        "description",
        "type",
        "weight",
    ]
    assert lines[2].split()[:3] == ["fast", "yes", "no"]
    code, out, _ = run("stores", "--format", "json")
    doc = json.loads(out)
    # real booleans, whatever strings Glance sent
    assert doc["stores"][0]["default"] is True
    assert doc["stores"][2]["read_only"] is True


@pytest.mark.parametrize(
    ("spec", "code", "words"),
    [
        ("image_service:store_id=cheap", 0, ""),
        ("image_service:store_id=chep", 3, "Did you mean 'cheap'?"),
        ("image_service:store_id=web", 3, "read-only"),
        ("image_service:store_id=os_glance_staging_store", 3, "reserved"),
        ("Image_Service:Store_Id=cheap", 3, "lower-case"),
        ("image_service:storeid=cheap", 3, "image_service:store_id"),
    ],
)
def test_validate_exit_codes(
    glance: requests_mock.Mocker, spec: str, code: int, words: str
) -> None:
    glance.get(DETAIL, json=STORES)
    got, _, err = run("validate", spec, "volume_backend_name=lvm")
    assert got == code, err
    assert words in err


def test_validate_without_a_store_asks_no_glance(
    glance: requests_mock.Mocker,
) -> None:
    code, _, _ = run("validate", "volume_backend_name=lvm")
    assert code == 0 and glance.call_count == 0


def test_a_malformed_spec_argument_is_a_usage_error(
    glance: requests_mock.Mocker,
) -> None:
    code, _, err = run("validate", "no-equals-sign")
    assert code == 2 and "KEY=VALUE" in err


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        ({"status_code": 500}, "Glance is unavailable"),
        ({"status_code": 401}, "refused the token"),
        ({"exc": requests.exceptions.ConnectTimeout}, "timed out"),
        ({"status_code": 200, "text": "<html>"}, "not JSON"),
    ],
)
def test_glance_errors_exit_4_with_the_endpoint(
    glance: requests_mock.Mocker, answer: dict[str, object], words: str
) -> None:
    glance.get(DETAIL, **answer)  # type: ignore[arg-type]
    code, _, err = run("stores")
    assert code == 4
    assert words in err
    # the command line shows the context an operator needs
    assert URL in err
    assert "Traceback" not in err


def test_remote_text_is_escaped_on_the_terminal(
    glance: requests_mock.Mocker,
) -> None:
    evil = "\x1b]0;owned\x07\rforged"
    glance.get(
        DETAIL,
        json={
            "stores": [{"id": "fast", "default": "true", "description": evil}]
        },
    )
    code, out, _ = run("stores")
    assert code == 0
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out
    assert "\\x1b" in out
    # JSON stays exact
    _, out, _ = run("stores", "--format", "json")
    assert json.loads(out)["stores"][0]["description"] == evil


def test_no_multistore_is_a_spec_problem(
    glance: requests_mock.Mocker,
) -> None:
    glance.get(DETAIL, status_code=404, text="Multi backend is not supported")
    glance.get(
        URL + "/v2/info/stores",
        status_code=404,
        text="Multi backend is not supported at this site",
    )
    code, _, err = run("validate", "image_service:store_id=cheap")
    assert code == 3 and "without multi-store" in err


def test_upload_of_a_missing_file_is_a_clean_error(
    glance: requests_mock.Mocker, tmp_path: Path
) -> None:
    glance.get(DETAIL, json=STORES)
    code, _, err = run("upload", str(tmp_path / "nope.raw"), "--name", "x")
    assert code == 5, err  # a SourceError: the upload failed
    assert "nope.raw" in err and "Traceback" not in err
    # nothing was created in Glance
    assert not [r for r in glance.request_history if r.method == "POST"]
