"""Secret files for the serving slots: owner, modes, mounts, names."""

import os
import stat

import pytest
from ansible.module_utils.montaiguillon.deploy.secret_files import (
    SecretFileError,
    file_owner,
    file_variables,
    name_errors,
    write_secret_files,
)


@pytest.mark.parametrize(
    ("image_user", "override", "owner"),
    [
        ("10001:10001", None, (10001, 10001)),
        ("33", None, (33, 33)),
        ("", None, (0, 0)),
        ("www-data", "33:33", (33, 33)),
    ],
)
def test_the_files_belong_to_the_image_user(image_user, override, owner):
    assert file_owner(image_user, override) == owner


def test_a_named_user_needs_a_number():
    with pytest.raises(SecretFileError, match=r"image runs as user 'www-data'.*set files_owner"):
        file_owner("www-data")


def test_files_are_0400_in_a_0700_directory_and_mounted_read_only(tmp_path):
    directory = tmp_path / "secrets" / "green"
    (directory.parent).mkdir()
    mounts = write_secret_files(str(directory), {"APP_DB_PASSWORD": "hunter2"}, (os.getuid(), os.getgid()))
    path = directory / "APP_DB_PASSWORD"
    assert path.read_text() == "hunter2"
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert mounts == {str(path): {"bind": "/run/secrets/APP_DB_PASSWORD", "mode": "ro"}}


def test_a_secret_no_longer_asked_for_is_removed(tmp_path):
    owner = (os.getuid(), os.getgid())
    write_secret_files(str(tmp_path), {"OLD": "x", "KEPT": "y"}, owner)
    write_secret_files(str(tmp_path), {"KEPT": "z"}, owner)
    assert sorted(os.listdir(tmp_path)) == ["KEPT"] and (tmp_path / "KEPT").read_text() == "z"


def test_the_environment_names_the_files_only():
    assert file_variables({"APP_DB_PASSWORD": "hunter2"}) == {"APP_DB_PASSWORD_FILE": "/run/secrets/APP_DB_PASSWORD"}


def test_names_that_cannot_be_variables_are_refused():
    assert name_errors({"GOOD_1": "x"}) == []
    assert "'../etc' is not a variable name" in name_errors({"../etc": "x"})[0]
