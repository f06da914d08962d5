"""Co-location: the pure plan and judgement by tables, the copy loop and
the upload pipeline at the HTTP edge (requests-mock)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import requests_mock
from oslo_config import cfg

from volume_image import config, errors
from volume_image.cli import main as cli
from volume_image.clients import glance
from volume_image.core import placement, stores
from volume_image.pipeline import copy_image
from volume_image.pipeline import uploader as upload

from .conftest import URL
from .test_upload import DATA, IMG, active

CATALOG = stores.StoreCatalog(
    stores=(
        stores.StoreInfo("fast", default=True),
        stores.StoreInfo("cheap"),
        stores.StoreInfo("south"),
        stores.StoreInfo("web", read_only=True),
    )
)
NO_DEFAULT = stores.StoreCatalog(
    stores=(stores.StoreInfo("cheap"), stores.StoreInfo("south"))
)
BASE = URL + "/v2/images/b1"
STORES = {
    "stores": [
        {"id": "fast", "default": "true"},
        {"id": "cheap"},
        {"id": "south"},
        {"id": "web", "read-only": "true"},
    ]
}


@pytest.mark.parametrize(
    ("base_stores", "catalog", "upload_store", "copy_to", "skipped"),
    [
        # the default store holds the base image: upload there
        ("cheap,fast", CATALOG, "fast", ("cheap",), ()),
        ("fast,cheap,south", CATALOG, "fast", ("cheap", "south"), ()),
        # else the first in the base image's order
        ("south,cheap", CATALOG, "south", ("cheap",), ()),
        ("cheap", CATALOG, "cheap", (), ()),
        ("cheap,south", NO_DEFAULT, "cheap", ("south",), ()),
        # read-only, reserved and unknown stores are never targets
        (
            "web,os_glance_staging_store,cheap,gone",
            CATALOG,
            "cheap",
            (),
            (
                ("web", "read-only"),
                ("os_glance_staging_store", "reserved for Glance's own use"),
                ("gone", "not in Glance's store list"),
            ),
        ),
        # nothing writable: the default store
        ("web", CATALOG, "fast", (), (("web", "read-only"),)),
        ("", CATALOG, "fast", (), ()),
        (" cheap , cheap ", CATALOG, "cheap", (), ()),
    ],
)
def test_plan(
    base_stores: str,
    catalog: stores.StoreCatalog,
    upload_store: str,
    copy_to: tuple[str, ...],
    skipped: tuple[tuple[str, str], ...],
) -> None:
    plan = placement.plan_targets("b1", {"stores": base_stores}, catalog)
    assert (plan.upload_store, plan.copy_to, plan.skipped) == (
        upload_store,
        copy_to,
        skipped,
    )
    assert plan.reason.startswith("base image b1 ")


def test_plan_explicit_store_wins_and_unknown_base() -> None:
    plan = placement.plan_targets(
        "b1", {"stores": "cheap,south"}, CATALOG, explicit_store="south"
    )
    assert (plan.upload_store, plan.copy_to) == ("south", ())
    assert "named explicitly" in plan.reason
    plan = placement.plan_targets(
        "b1", None, CATALOG, unknown_reason="was not found"
    )
    assert plan.upload_store == "fast" and plan.copy_to == ()
    assert plan.reason == (
        "base image b1 was not found; uploaded to the default store"
    )
    off = stores.StoreCatalog(multistore=False)
    assert placement.plan_targets("b1", {"stores": "a"}, off).upload_store is (
        None
    )


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"os_glance_import_task": "t1", "stores": "fast,cheap"}, None),
        (
            {"stores": "fast,cheap", "os_glance_failed_import": "cheap"},
            {"cheap": placement.COPIED, "south": placement.FAILED},
        ),
        (
            {"stores": "fast", "os_glance_failed_import": "cheap,south"},
            {"cheap": placement.FAILED, "south": placement.FAILED},
        ),
        (
            {"stores": "fast", "os_glance_importing_to_stores": "south"},
            {"cheap": placement.FAILED, "south": placement.FAILED},
        ),
    ],
)
def test_judge(
    record: dict[str, Any], expected: dict[str, str] | None
) -> None:
    verdict = placement.judge(record, ["cheap", "south"])
    if expected is None:
        assert verdict is None
    else:
        assert verdict is not None
        assert {s: v.status for s, v in verdict.items()} == expected


def test_judge_says_where_glance_left_a_store() -> None:
    verdict = placement.judge(
        {
            "stores": "fast",
            "os_glance_failed_import": "cheap",
            "os_glance_importing_to_stores": "south",
        },
        ["cheap", "south", "north"],
    )
    assert verdict is not None
    assert "os_glance_failed_import" in verdict["cheap"].reason
    assert "os_glance_importing_to_stores" in verdict["south"].reason
    assert "without it in stores" in verdict["north"].reason


def test_unchanged() -> None:
    rec = {
        "size": 1,
        "checksum": "c",
        "os_hash_algo": "a",
        "os_hash_value": "h",
    }
    assert placement.unchanged(rec, {**rec, "stores": "x"}) == []
    assert placement.unchanged(rec, {**rec, "os_hash_value": "z"}) == [
        "os_hash_value was 'h', now 'z'"
    ]


def test_summary_and_dict() -> None:
    placed = placement.Colocation(
        base_image="b1",
        uploaded_to="fast",
        reason="r",
        copies=(
            placement.StoreCopy("cheap", placement.COPIED, verified=True),
            placement.StoreCopy("south", placement.NOT_PERMITTED, "403"),
            placement.StoreCopy("north", placement.FAILED, "why"),
        ),
        skipped=(("web", "read-only"),),
    )
    assert placed.summary() == (
        "uploaded to fast; copied to cheap; not copied to south: not "
        "permitted; not copied to north: failed"
    )
    doc = placed.as_dict()
    assert doc["complete"] is False
    assert doc["skipped"] == [{"store": "web", "reason": "read-only"}]
    assert doc["copies"][0] == {
        "store": "cheap",
        "status": "copied",
        "reason": "",
        "verified": True,
    }


# --- the copy loop at the HTTP edge -------------------------------------


class Clock:
    """A fake clock that sleeping advances."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def copy(
    client: glance.GlanceClient, targets: list[str], timeout: float = 60
) -> list[placement.StoreCopy]:
    clock = Clock()
    copies, _ = copy_image.copy_to_stores(
        client, "i1", targets, timeout=timeout, clock=clock, sleep=clock.sleep
    )
    return copies


def import_bodies(rmock: requests_mock.Mocker) -> list[Any]:
    return [
        r.json()
        for r in rmock.request_history
        if r.method == "POST" and r.path.endswith("/import")
    ]


def test_copy_request_body_and_judgement_from_the_image(
    rmock: requests_mock.Mocker, client: glance.GlanceClient
) -> None:
    rmock.post(IMG + "/import", status_code=202)
    rmock.get(
        IMG,
        [
            {"json": {"stores": "fast", "os_glance_import_task": "t"}},
            {
                "json": {
                    "stores": "fast,cheap",
                    "os_glance_failed_import": "south",
                }
            },
        ],
    )
    # the task says success: never believed
    rmock.get(
        IMG + "/tasks",
        json={"tasks": [{"status": "success", "message": "Copied 1 MiB"}]},
    )
    copies = copy(client, ["cheap", "south"])
    assert import_bodies(rmock) == [
        {
            "method": {"name": "copy-image"},
            "stores": ["cheap", "south"],
            "all_stores_must_succeed": False,
        }
    ]
    assert [(c.store, c.status) for c in copies] == [
        ("cheap", placement.COPIED),
        ("south", placement.FAILED),
    ]
    assert "the copy task said 'Copied 1 MiB'" in copies[1].reason


@pytest.mark.parametrize("status", [403, 404])
def test_copy_not_permitted(
    rmock: requests_mock.Mocker, client: glance.GlanceClient, status: int
) -> None:
    rmock.post(
        IMG + "/import",
        status_code=status,
        json={"message": "You are not authorized to complete copy_image"},
    )
    rmock.get(IMG, json={"stores": "fast"})
    copies = copy(client, ["cheap"])
    assert copies[0].status == placement.NOT_PERMITTED
    assert str(status) in copies[0].reason


def test_copy_busy_waits_then_asks_for_the_rest(
    rmock: requests_mock.Mocker, client: glance.GlanceClient
) -> None:
    rmock.post(
        IMG + "/import",
        [
            {"status_code": 409, "json": {"message": "Image has active task"}},
            {"status_code": 202},
        ],
    )
    rmock.get(
        IMG,
        [
            {"json": {"stores": "fast", "os_glance_import_task": "other"}},
            {"json": {"stores": "fast,cheap"}},
            {"json": {"stores": "fast,cheap,south"}},
        ],
    )
    rmock.get(IMG + "/tasks", json={"tasks": []})
    copies = copy(client, ["cheap", "south"])
    assert [b["stores"] for b in import_bodies(rmock)] == [
        ["cheap", "south"],
        ["south"],
    ]
    assert all(c.status == placement.COPIED for c in copies)


def test_copy_already_present_counts_as_copied(
    rmock: requests_mock.Mocker, client: glance.GlanceClient
) -> None:
    rmock.post(
        IMG + "/import",
        [
            {
                "status_code": 400,
                "json": {
                    "message": "Image is already present at store 'cheap'"
                },
            },
            {"status_code": 202},
        ],
    )
    rmock.get(
        IMG,
        [
            {"json": {"stores": "fast,cheap"}},
            {"json": {"stores": "fast,cheap,south"}},
        ],
    )
    rmock.get(IMG + "/tasks", json={"tasks": []})
    copies = copy(client, ["cheap", "south"])
    assert [b["stores"] for b in import_bodies(rmock)] == [
        ["cheap", "south"],
        ["south"],
    ]
    assert all(c.status == placement.COPIED for c in copies)


def test_copy_refused_for_other_reasons_fails(
    rmock: requests_mock.Mocker, client: glance.GlanceClient
) -> None:
    rmock.post(
        IMG + "/import",
        status_code=409,
        json={"message": "Store for identifier south not found"},
    )
    rmock.get(IMG, json={"stores": "fast"})
    (only,) = copy(client, ["south"])
    assert only.status == placement.FAILED
    assert "Store for identifier south not found" in only.reason


def test_copy_wait_is_bounded(
    rmock: requests_mock.Mocker, client: glance.GlanceClient
) -> None:
    rmock.post(IMG + "/import", status_code=202)
    rmock.get(IMG, json={"stores": "fast", "os_glance_import_task": "t"})
    (only,) = copy(client, ["cheap"], timeout=10)
    assert only.status == placement.UNFINISHED
    assert "10 s" in only.reason
    polls = [r for r in rmock.request_history if r.method == "GET"]
    assert 3 < len(polls) < 30


def test_copy_5xx_is_an_error(
    rmock: requests_mock.Mocker, client: glance.GlanceClient
) -> None:
    rmock.post(IMG + "/import", status_code=503)
    with pytest.raises(errors.GlanceUnavailable):
        copy(client, ["cheap"])


def test_copy_client_from_conf(client: glance.GlanceClient) -> None:
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    conf(args=[], default_config_files=[])
    assert client.with_auth_from_conf(conf) is None
    conf.set_override("auth_type", "none", group=config.COPY_GROUP)
    other = client.with_auth_from_conf(conf)
    assert other is not None and other is not client
    # the same Glance, another identity
    assert other.endpoint == URL
    assert other.adapter.session is client.adapter.session
    assert other.adapter.auth is not client.adapter.auth


# --- the pipeline -------------------------------------------------------


@pytest.fixture
def vol(tmp_path: Path) -> Path:
    path = tmp_path / "v"
    path.write_bytes(DATA)
    return path


def _drain(request: Any, context: Any) -> str:
    """Read the streamed body, as Glance does."""
    b"".join(request.body)
    return ""


@pytest.fixture
def glance_mock(rmock: requests_mock.Mocker) -> requests_mock.Mocker:
    rmock.get(URL + "/v2/info/stores/detail", json=STORES)
    rmock.post(URL + "/v2/images", status_code=201, json={"id": "i1"})
    rmock.put(IMG + "/file", status_code=204, text=_drain)
    rmock.delete(IMG, status_code=204)
    rmock.get(IMG + "/tasks", json={"tasks": []})
    return rmock


def uploader(client: glance.GlanceClient, **kw: Any) -> upload.Uploader:
    return upload.Uploader(
        client,
        config.Settings(colocate_with_base_image=True, **kw),
    )


def test_upload_goes_to_the_plan_store_then_copies(
    glance_mock: requests_mock.Mocker, client: glance.GlanceClient, vol: Path
) -> None:
    glance_mock.get(BASE, json={"id": "b1", "stores": "south,cheap,web"})
    glance_mock.post(IMG + "/import", status_code=202)
    glance_mock.get(
        IMG,
        [
            {"json": active(store="south")},
            {"json": active(store="south,cheap")},
            {"json": active(store="south,cheap")},
        ],
    )
    result = uploader(client).upload(
        vol, upload.ImageMeta("x"), base_image_ref="b1"
    )
    put = next(r for r in glance_mock.request_history if r.method == "PUT")
    assert put.headers["X-Image-Meta-Store"] == "south"
    assert result.store == "south"
    placed = result.colocation
    assert placed is not None
    assert placed.as_dict()["copies"] == [
        {"store": "cheap", "status": "copied", "reason": "", "verified": True}
    ]
    assert placed.skipped == (("web", "read-only"),)
    assert import_bodies(glance_mock)[0]["stores"] == ["cheap"]
    assert result.as_dict()["colocation"]["complete"] is True


def test_upload_without_colocation_has_no_report(
    glance_mock: requests_mock.Mocker, client: glance.GlanceClient, vol: Path
) -> None:
    glance_mock.get(IMG, json=active(store="fast"))
    result = uploader(client).upload(
        vol, upload.ImageMeta("x"), base_image_ref="b1", colocate=False
    )
    assert result.colocation is None
    assert not any(r.url == BASE for r in glance_mock.request_history)


@pytest.mark.parametrize("status", [403, 404])
def test_invisible_base_image_goes_to_the_default_store(
    glance_mock: requests_mock.Mocker,
    client: glance.GlanceClient,
    vol: Path,
    status: int,
) -> None:
    glance_mock.get(BASE, status_code=status, json={"message": "no"})
    glance_mock.get(IMG, json=active(store="fast"))
    result = uploader(client).upload(
        vol, upload.ImageMeta("x"), base_image_ref="b1"
    )
    assert result.store == "fast"
    assert result.colocation is not None
    assert "default store" in result.colocation.reason
    assert not import_bodies(glance_mock)


def test_strict_mode_deletes_a_partial_result(
    glance_mock: requests_mock.Mocker, client: glance.GlanceClient, vol: Path
) -> None:
    glance_mock.get(BASE, json={"id": "b1", "stores": "fast,cheap"})
    glance_mock.post(
        IMG + "/import", status_code=403, json={"message": "copy_image"}
    )
    glance_mock.get(IMG, json=active(store="fast"))
    with pytest.raises(errors.ColocationError, match="not permitted"):
        uploader(client, colocate_strict=True).upload(
            vol, upload.ImageMeta("x"), base_image_ref="b1"
        )
    assert glance_mock.request_history[-1].method == "DELETE"


def test_a_changed_image_is_an_integrity_error(
    glance_mock: requests_mock.Mocker, client: glance.GlanceClient, vol: Path
) -> None:
    glance_mock.get(BASE, json={"id": "b1", "stores": "fast,cheap"})
    glance_mock.post(IMG + "/import", status_code=202)
    changed = {**active(store="fast,cheap"), "os_hash_value": "0" * 128}
    glance_mock.get(
        IMG,
        [{"json": active(store="fast")}, {"json": changed}, {"json": changed}],
    )
    with pytest.raises(errors.IntegrityError, match="changed while"):
        uploader(client).upload(
            vol, upload.ImageMeta("x"), base_image_ref="b1"
        )
    assert glance_mock.request_history[-1].method == "DELETE"


def test_cli_strict_flag_and_report(
    glance_mock: requests_mock.Mocker, vol: Path
) -> None:
    base = "0f0e0d0c-0b0a-4909-8807-060504030201"  # the CLI takes only ids
    glance_mock.get(
        f"{URL}/v2/images/{base}", json={"id": base, "stores": "fast,cheap"}
    )
    glance_mock.post(
        IMG + "/import",
        status_code=403,
        json={"message": "You are not authorized to complete copy_image"},
    )
    glance_mock.get(IMG, json=active(store="fast"))
    args = ["--os-auth-type", "none", "--os-endpoint", URL, "upload"]
    args += [str(vol), "--name", "x", "--base-image", base]
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(args, out=out, err=err) == 0, err.getvalue()
    assert "uploaded to fast; not copied to cheap: not permitted" in (
        out.getvalue()
    )
    assert not any(r.method == "DELETE" for r in glance_mock.request_history)
    out, err = io.StringIO(), io.StringIO()
    code = cli.main([*args, "--strict-colocation"], out=out, err=err)
    assert code == errors.ColocationError.exit_code == 5
    assert "not permitted" in err.getvalue()
    assert glance_mock.request_history[-1].method == "DELETE"


def test_a_copy_phase_glance_cannot_finish_is_not_a_failure(
    glance_mock: requests_mock.Mocker, client: glance.GlanceClient, vol: Path
) -> None:
    """The upload is done and verified: a 503 on copy-image leaves the
    image, reports the store as failed, and fails only in strict mode.
    """
    glance_mock.get(BASE, json={"id": "b1", "stores": "fast,cheap"})
    glance_mock.post(
        IMG + "/import", status_code=503, json={"message": "busy"}
    )
    glance_mock.get(IMG, json=active(store="fast"))
    result = uploader(client).upload(
        vol, upload.ImageMeta("x"), base_image_ref="b1"
    )
    assert result.verified and result.store == "fast"
    placed = result.colocation
    assert placed is not None
    assert [(c.store, c.status) for c in placed.copies] == [
        ("cheap", "failed")
    ]
    assert "could not be asked" in placed.copies[0].reason
    assert not any(r.method == "DELETE" for r in glance_mock.request_history)
    with pytest.raises(errors.GlanceUnavailable):
        uploader(client, colocate_strict=True).upload(
            vol, upload.ImageMeta("x"), base_image_ref="b1"
        )
    assert glance_mock.request_history[-1].method == "DELETE"


def test_a_poll_that_fails_once_is_asked_again(
    glance_mock: requests_mock.Mocker, client: glance.GlanceClient, vol: Path
) -> None:
    glance_mock.get(BASE, json={"id": "b1", "stores": "fast,cheap"})
    glance_mock.post(IMG + "/import", status_code=202)
    glance_mock.get(
        IMG,
        [
            {"json": active(store="fast")},  # the upload's verification
            {"status_code": 503, "json": {"message": "db locked"}},
            {"json": active(store="fast,cheap")},
        ],
    )
    result = uploader(client).upload(
        vol, upload.ImageMeta("x"), base_image_ref="b1"
    )
    assert result.colocation is not None
    assert [(c.store, c.status) for c in result.colocation.copies] == [
        ("cheap", "copied")
    ]


@pytest.mark.parametrize(
    "ref",
    [
        "0f0e0d0c-0b0a-4909-8807-060504030201\r\nX-Evil: 1",
        "../info/stores",
        "b1",
        "0f0e0d0c-0b0a-4909-8807-06050403020\u0661",
        "",
    ],
)
def test_a_base_image_that_is_not_an_image_id(
    glance_mock: requests_mock.Mocker,
    client: glance.GlanceClient,
    vol: Path,
    ref: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """On the command line, a usage error before any request; in a
    volume's glance metadata (inside cinder-volume), not used: the upload
    goes on without co-location.
    """
    glance_mock.reset_mock()
    args = ["--os-auth-type", "none", "--os-endpoint", URL, "upload"]
    for flag in ("--base-image", "--image-id"):
        out, err = io.StringIO(), io.StringIO()
        code = cli.main([*args, str(vol), "--name", "x", flag, ref],
                        out=out, err=err)  # fmt: skip
        said = err.getvalue() + capsys.readouterr().err  # argparse's
        assert code == 2 and "not an image id" in said
        assert "Traceback" not in said
    assert glance_mock.request_history == []
    assert placement.base_image_of({"image_id": ref}) == (
        None,
        f"its glance metadata names base image {ref!a}, which is not "
        "an image id",
    )
    good = "0f0e0d0c-0b0a-4909-8807-060504030201"
    assert placement.base_image_of({"image_id": good}) == (good, None)
    assert placement.base_image_of(None) == (None, None)
    if ref != "b1":
        with pytest.raises(ValueError, match="not an image id"):
            uploader(client).upload(
                vol, upload.ImageMeta("x"), base_image_ref=ref
            )
