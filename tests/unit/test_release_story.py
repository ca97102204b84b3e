"""The release story and table a person reads after a deploy and in playbooks/releases.yml."""

import sourcefile

story = sourcefile.load("plugins/filter/release_story.py", "release_story")


def test_the_table_says_which_snapshot_a_release_has_and_whether_it_is_still_kept():
    entries = [
        {"release": "r1", "outcome": "success", "snapshot": {"id": "20261101T080000Z-pre-deploy", "state": "pruned"}},
        {"release": "r2", "outcome": "success", "snapshot": {"id": "20261204T010054Z-pre-deploy", "state": "kept"}},
        {"release": "r3", "outcome": "rollback", "requested_by": "ci@runner"},
    ]
    head, first, second, third = story.release_table(entries)
    assert "snapshot" in head.split()
    assert "20261101T080000Z-pre-deploy (pruned)" in first
    assert "20261204T010054Z-pre-deploy" in second and "(pruned)" not in second
    assert third.split()[-2:] == ["-", "ci@runner"]


def test_the_story_lists_each_step():
    result = {
        "changed": True,
        "release": {"release": "r2", "outcome": "success"},
        "steps": [{"step": "switch", "seconds": 0.37, "result": "ok", "detail": "app-blue -> app-green"}],
    }
    lines = story.release_story(result)
    assert lines[0] == "release r2 (success)"
    assert lines[1].split() == ["switch", "0.37", "s", "ok", "app-blue", "->", "app-green"]
