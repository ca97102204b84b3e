"""Named volumes for what a site keeps across releases."""

import pytest
from ansible.module_utils.montaiguillon.deploy.volumes import volume_errors, volume_mounts


def test_each_volume_is_named_after_the_app_and_mounted_read_write():
    assert volume_mounts("wp", {"uploads": "/var/www/uploads"}) == {
        "wp_uploads": {"bind": "/var/www/uploads", "mode": "rw"}
    }


@pytest.mark.parametrize(
    ("volumes", "message"),
    [
        ({"Uploads": "/data"}, "'Uploads' is not a volume key"),
        ({"uploads": "data"}, "volumes.uploads: 'data' must be an absolute path"),
        ({"uploads": "/srv/../etc"}, "without '..'"),
        ({"uploads": "/"}, "'/' is a system directory"),
        ({"uploads": "/etc/nginx"}, "'/etc/nginx' is a system directory"),
        ({"uploads": "/run/secrets"}, "'/run/secrets' is a system directory"),
    ],
)
def test_bad_volumes_are_named(volumes, message):
    errors = volume_errors(volumes)
    assert len(errors) == 1 and message in errors[0]


def test_a_data_directory_is_fine():
    assert volume_errors({"uploads": "/var/lib/wordpress/wp-content/uploads", "cache": "/srv/cache"}) == []
