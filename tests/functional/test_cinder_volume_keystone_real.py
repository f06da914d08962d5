"""StoreAwareDriver in a Keystone cloud: cinder-api validates tokens,
cinder-volume forwards the caller's, and Glance (keystone flavor,
upstream's RBAC) sees the user who asked for the upload.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
import requests

from harness import launcher

from .conftest import _start

pytestmark = pytest.mark.functional

MIB = 1 << 20
KEY = "image_service:store_id"


@pytest.fixture(scope="module")
def stack(
    rabbit: launcher.RabbitServer,
    keystone: launcher.KeystoneServer,
    glance_keystone: launcher.GlanceServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[launcher.CinderStack]:
    server = launcher.CinderStack(
        tmp_path_factory.mktemp("cinder-stack-keystone"),
        glance_keystone.url,
        # a vhost of its own, as every stack on the shared broker
        rabbit.vhost_url("keystone-stack"),
        ours_driver="volume_image.cinder.driver.StoreAwareDriver",
        ours_wrapped_driver=launcher.FILE_DRIVER,
        with_filter=False,
        keystone=keystone,
    )
    _start(server)
    yield server
    server.stop()


def test_glance_sees_the_caller_as_the_uploader(
    stack: launcher.CinderStack,
    keystone: launcher.KeystoneServer,
    glance_keystone: launcher.GlanceServer,
) -> None:
    vtype = stack.rest().backend_type("ours", {KEY: "cheap"})
    demo = stack.rest(user="demo")  # a member of project demo
    volume = demo.create_volume(1, volume_type=vtype["id"])
    demo.wait_volume(volume["id"])
    md5 = hashlib.md5()  # noqa: S324 - Glance's checksum is an md5
    with open(stack.volume_file(volume["id"]), "r+b") as f:
        f.truncate(8 * MIB)
        for i in range(8):
            block = bytes([i]) * MIB
            f.write(block)
            md5.update(block)

    image_id = demo.upload_to_image(volume["id"], "ks-upload")
    after = demo.wait_volume_leaves(volume["id"], "uploading", timeout=120)

    assert after["status"] == "available"
    admin = keystone.session("admin")
    image = requests.get(
        f"{glance_keystone.url}/v2/images/{image_id}",
        headers={"X-Auth-Token": str(admin.get_token())},
        timeout=30,
    ).json()
    assert image["status"] == "active"
    assert image["stores"] == "cheap"
    assert image["checksum"] == md5.hexdigest()
    assert image["owner"] == keystone.project_ids["demo"]
    # the request that wrote the data ran as demo, in project demo
    demo_user = keystone.session("demo").get_user_id()
    wrote = [
        line
        for line in glance_keystone.log_path.read_text().splitlines()
        if "Wrote" in line and image_id in line
    ]
    assert len(wrote) == 1, wrote
    assert demo_user in wrote[0]
    assert keystone.project_ids["demo"] in wrote[0]
    log = stack.service_log("cinder-volume").read_text()
    assert f"uploaded to image {image_id} in store cheap" in log
    demo.delete_volume(volume["id"])
