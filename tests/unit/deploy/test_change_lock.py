"""change_lock: a restore holds the server's change lock across its tasks, and a deploy cannot take it meanwhile."""

import json

import pytest
from ansible.module_utils.montaiguillon.common.lock import DeployLock, LockHeld, read_holder
from ansible.module_utils.testing import patch_module_args


@pytest.fixture
def mod(load_module):
    return load_module("change_lock")


def run(mod, capsys, **args):
    with patch_module_args(args), pytest.raises(SystemExit):
        mod.main()
    return json.loads(capsys.readouterr().out)


def test_a_restore_holds_the_lock_and_a_deploy_is_refused_naming_it(mod, capsys, tmp_path):
    path = str(tmp_path / "change.lock")
    taken = run(mod, capsys, path=path, action="restoring", what="20261126T031500Z-scheduled", who="ops@ctl")
    assert taken["changed"] is True and len(taken["lease_id"]) == 16
    holder = read_holder(path)
    assert holder["action"] == "restoring" and holder["until"] > holder["when"] and holder["pid"] is None
    assert "token" not in taken["holder"]
    deploy = DeployLock(path, who="ci@runner", what="site:2", alive=lambda pid: False)  # the module's process is gone
    with pytest.raises(LockHeld, match=r"locked by ops@ctl since .* \(restoring 20261126T031500Z-scheduled, lease"):
        deploy.acquire()
    again = run(mod, capsys, path=path, lease_id=taken["lease_id"], action="restoring")
    assert again["changed"] is False  # the same holder taking it again
    released = run(mod, capsys, path=path, state="absent", lease_id=taken["lease_id"])
    assert released["changed"] is True and released["holder"] is None
    assert read_holder(path) is None
    assert run(mod, capsys, path=path, state="absent", lease_id=taken["lease_id"])["changed"] is False


def test_a_second_holder_waits_then_fails_naming_the_first(mod, capsys, tmp_path):
    path = str(tmp_path / "change.lock")
    run(mod, capsys, path=path, action="restoring", what="backup-1", who="ops@ctl")
    refused = run(mod, capsys, path=path, action="restoring", what="backup-2", wait=0)
    assert refused["failed"] is True
    assert refused["msg"].startswith("locked by ops@ctl since ")
    assert "(restoring backup-1, lease until " in refused["msg"] and refused["msg"].endswith("break_lock=true")
    assert read_holder(path)["what"] == "backup-1"


def test_release_leaves_a_lock_that_is_no_longer_ours(mod, capsys, tmp_path):
    path = str(tmp_path / "change.lock")
    DeployLock(path, who="ci@runner", what="site:3").acquire()  # took it over after our lease ran out
    result = run(mod, capsys, path=path, state="absent", lease_id="ours")
    assert result["changed"] is False and result["holder"]["who"] == "ci@runner"
    assert "the lock is no longer ours, left as it is: locked by ci@runner" in json.dumps(result["warnings"])
    assert read_holder(path)["who"] == "ci@runner"


def test_check_mode_writes_nothing_and_says_when_it_would_be_refused(mod, capsys, tmp_path):
    path = str(tmp_path / "change.lock")
    planned = run(mod, capsys, path=path, _ansible_check_mode=True)
    assert planned["changed"] is True and read_holder(path) is None
    run(mod, capsys, path=path, who="ops@ctl", action="restoring")
    refused = run(mod, capsys, path=path, _ansible_check_mode=True, wait=30)
    assert refused["failed"] is True and "a run would wait up to 30 s" in refused["msg"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"lease": 0}, "lease must be at least 1 second, not 0"),
        ({"state": "absent"}, "state=absent needs the lease_id the lock was taken with"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(mod, capsys, tmp_path, args, message):
    path = str(tmp_path / "change.lock")
    result = run(mod, capsys, path=path, **args)
    assert result["failed"] is True and result["msg"] == message
    assert read_holder(path) is None
