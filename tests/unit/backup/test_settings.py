"""BackupSettings is the one place the backup inputs are written; every path is checked against it.

The role's side (its variables, the cron tool's config.json, every task that
takes a backup) is YAML: these tests read it and fail when a setting is
forgotten on one path, as the encryption of the safety backup once was.
"""

import json
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.montaiguillon.backup import settings as settings_module
from ansible.module_utils.montaiguillon.backup.errors import BackupError
from ansible.module_utils.montaiguillon.backup.mysql import LOGIN_KEYS
from ansible.module_utils.montaiguillon.backup.retention import DEFAULT_RETENTION
from ansible.module_utils.montaiguillon.backup.settings import BackupSettings, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "backup"
NAMES = [field.name for field in BackupSettings.fields()]
# Settings the safety backup of a restore is taken with (it is never paced nor pruned: the site is
# behind the maintenance page, and nothing is pruned during a restore).
SAFETY = ["compression", "encrypt_recipient_file"]


def yaml_file(path):
    return yaml.safe_load(path.read_text())


def tasks(node):
    """Every task in a task list, blocks opened."""
    for task in node or []:
        for key in ("block", "rescue", "always"):
            if key in task:
                yield from tasks(task[key])
        yield task


def module_calls(module):
    """(file, task name, arguments) of every task of the project that calls ``module``."""
    names = {module, f"montaiguillon.infra.{module}"}
    files = [*ROOT.glob("roles/*/tasks/*.yml"), *ROOT.glob("playbooks/*.yml")]
    for path in files:
        document = yaml_file(path) or []
        plays = [p for p in document if "hosts" in p] or [{"tasks": document}]
        for play in plays:
            for section in ("pre_tasks", "tasks", "post_tasks", "handlers"):
                for task in tasks(play.get(section)):
                    for name in names & set(task):
                        yield path.relative_to(ROOT), task.get("name"), task[name] or {}


def test_every_setting_is_a_declared_role_variable_with_a_default():
    options = yaml_file(ROLE / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    defaults = yaml_file(ROLE / "defaults" / "main.yml")
    for field in BackupSettings.fields():
        variable = field.metadata["role_variable"]
        assert variable in options, f"{field.name}: {variable} is not in roles/backup/meta/argument_specs.yml"
        assert variable in defaults, f"{field.name}: {variable} has no default in roles/backup/defaults/main.yml"


def test_the_cron_tools_config_carries_every_setting_and_nothing_it_ignores():
    config = yaml_file(ROLE / "vars" / "main.yml")["__backup_config"]
    missing = [name for name in NAMES if name not in config]
    assert not missing, f"config.json (roles/backup/vars/main.yml __backup_config) lacks {missing}"
    known = {*settings_module.DEFAULTS, *settings_module.REQUIRED, *LOGIN_KEYS, "decrypt_identity_file", "host"}
    ignored = sorted(set(config) - known - {"_comment"})
    assert not ignored, f"config.json keys the cron tool never reads: {ignored}"


def test_every_task_that_takes_a_backup_passes_every_setting():
    calls = [c for c in module_calls("mysql_backup") if c[2].get("state", "present") == "present"]
    assert calls  # one: roles/backup/tasks/take.yml, which backup.yml, the pre-deploy snapshot and a restore include
    for path, name, args in calls:
        expected = [n for n in NAMES if n != "retention" or args.get("prune", True)]
        forgotten = [n for n in expected if n not in args]
        assert not forgotten, f"{path}: task {name!r} takes a backup without {forgotten}"


def test_every_restore_takes_its_safety_backup_with_the_backup_settings():
    calls = [c for c in module_calls("mysql_restore") if c[2].get("mode", "restore") == "restore"]
    assert calls
    for path, name, args in calls:
        forgotten = [n for n in SAFETY if n not in args]
        assert not forgotten, f"{path}: task {name!r} restores with a safety backup taken without {forgotten}"


def test_the_modules_argument_specs_are_the_settings(load_module):
    backup_spec = load_module("mysql_backup").argument_spec()
    restore_spec = load_module("mysql_restore").argument_spec()
    for name, entry in BackupSettings.argument_spec().items():
        assert backup_spec[name] == entry
    for name in SAFETY:
        assert restore_spec[name] == BackupSettings.argument_spec()[name]
    assert backup_spec["retention"]["options"]["keep_last"]["default"] == DEFAULT_RETENTION["keep_last"]


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"compression": "lz4"}, "compression must be one of zstd, gzip, not 'lz4'"),
        ({"min_size_bytes": -1}, "min_size_bytes must be a whole number of bytes >= 0"),
        ({"max_rate": "fast"}, "max_rate 'fast' is not a rate"),
        ({"retention": {"yearly": 1}}, "retention has unknown keys yearly"),
        ({"retention": {"daily": -2}}, "retention.daily must be a whole number >= 0"),
        ({"retention": {"daily": True}}, "retention.daily must be a whole number >= 0"),
    ],
)
def test_a_bad_setting_is_refused_naming_it(values, named):
    with pytest.raises(BackupError, match=named.replace("(", r"\(")):
        BackupSettings.from_mapping(values)


def test_the_settings_give_run_backup_its_arguments():
    settings = BackupSettings.from_mapping({"max_rate": "25M", "encrypt_recipient_file": "/etc/r.txt", "other": 1})
    assert settings.take() == {
        "compression": "zstd",
        "min_size_bytes": 1024,
        "encrypt_recipient_file": "/etc/r.txt",
        "max_rate": 25 * 1024 * 1024,
    }
    assert settings.take(min_size_bytes=0)["min_size_bytes"] == 0
    assert BackupSettings.from_mapping({"encrypt_recipient_file": None}).encrypt_recipient_file is None


def test_the_cron_tool_refuses_a_bad_setting_in_its_config_naming_it_and_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"backup_dir": "/srv/b", "database": "site", "compression": "lz4"}))
    with pytest.raises(ConfigError, match=rf"compression must be one of zstd, gzip, not 'lz4' \(in {path}\)"):
        load_config(str(path))
    path.write_text(json.dumps({"backup_dir": "/srv/b", "database": "site", "max_rate": "14M"}))
    config = load_config(str(path))
    assert config["max_rate"] == "14M"
    assert config["compression"] == "zstd"  # the settings' default


def test_deploys_restores_and_pruning_share_one_change_lock_by_default():
    app = yaml_file(ROOT / "roles" / "app" / "defaults" / "main.yml")
    backup = yaml_file(ROLE / "defaults" / "main.yml")
    assert app["app_lock_file"] == backup["backup_change_lock_file"]
    for path, name, args in module_calls("bluegreen_release"):
        assert args.get("lock_file") == "{{ app_lock_file }}", f"{path}: task {name!r} uses another lock"
    for path, name, args in module_calls("mysql_backup"):
        if args.get("state", "present") == "present" and args.get("prune", True):
            assert args.get("change_lock_file") == "{{ backup_change_lock_file }}", f"{path}: {name!r} prunes unlocked"
    config = yaml_file(ROLE / "vars" / "main.yml")["__backup_config"]
    assert config["change_lock_file"] == "{{ backup_change_lock_file }}"
