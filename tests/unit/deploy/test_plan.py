"""The pure blue/green decisions: colours, upstream file, idempotence, rollback target, retention."""

from datetime import UTC, datetime

import pytest
from ansible.module_utils.montaiguillon.deploy.plan import (
    LABEL_IMAGE,
    LABEL_RELEASE,
    ReleaseError,
    choose_target_colour,
    colour_state_from_attrs,
    container_labels,
    decide_present,
    find_release,
    image_declared_version,
    images_to_prune,
    make_release_id,
    other_colour,
    parse_upstream,
    previous_release,
    read_state,
    render_upstream,
    tail_lines,
    validate_params,
)

IMG_A = "sha256:aaaaaaaa11111111"
IMG_B = "sha256:bbbbbbbb22222222"
IMG_C = "sha256:cccccccc33333333"


def attrs(running=True, image_id=IMG_A, release="r1", image="site:1"):
    return {
        "Image": image_id,
        "State": {"Running": running, "Status": "running" if running else "exited"},
        "Config": {"Labels": {LABEL_RELEASE: release, LABEL_IMAGE: image}},
    }


def upstream_to(colour, name="app"):
    return render_upstream("montaiguillon_app", f"{name}-{colour}", 8000)


@pytest.mark.parametrize(("colour", "other"), [("blue", "green"), ("green", "blue")])
def test_other_colour(colour, other):
    assert other_colour(colour) == other


@pytest.mark.parametrize("colour", ["red", "", None, "Blue"])
def test_other_colour_refuses_unknown_names(colour):
    with pytest.raises(ReleaseError, match="unknown colour"):
        other_colour(colour)


def test_render_upstream_is_the_documented_block():
    text = render_upstream("montaiguillon_app", "app-green", 8000, comment="release r2")
    assert "upstream montaiguillon_app {\n    server app-green:8000 max_fails=0;\n    keepalive 32;\n}\n" in text
    assert text.splitlines()[0].startswith("# Managed by the bluegreen_release module")
    assert "# release r2" in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (upstream_to("blue"), "blue"),
        (upstream_to("green"), "green"),
        (None, None),
        ("", None),
        ("upstream montaiguillon_app { server 127.0.0.1:65535 down; }\n", None),  # placeholder from the role
        (upstream_to("green", name="web"), None),  # another app's file
        (upstream_to("blue") + upstream_to("green"), None),  # ambiguous: refuse to guess
        ("upstream x {\n  # server app-green:8000;\n  server app-blue:8000;\n}\n", "blue"),
    ],
)
def test_parse_upstream(text, expected):
    assert parse_upstream(text, "app") == expected


@pytest.mark.parametrize(("live", "target"), [(None, "blue"), ("blue", "green"), ("green", "blue")])
def test_target_colour_is_the_one_not_serving(live, target):
    text = upstream_to(live) if live else None
    state = read_state("app", text, {"blue": attrs(), "green": attrs()})
    assert state.live_colour == live
    assert choose_target_colour(state) == target


@pytest.mark.parametrize(
    ("live_attrs", "upstream", "image_id", "changed", "reason"),
    [
        (attrs(image_id=IMG_A), "blue", IMG_A, False, "already runs"),
        (attrs(image_id=IMG_A), "blue", IMG_B, True, "asked for bbbbbbbb"),
        (attrs(image_id=IMG_A, running=False), "blue", IMG_A, True, "not running"),
        (None, "blue", IMG_A, True, "does not exist"),
        (attrs(image_id=IMG_A), None, IMG_A, True, "no colour is live"),
        (attrs(image_id=IMG_A), "blue", None, True, "not present locally"),
    ],
)
def test_decide_present(live_attrs, upstream, image_id, changed, reason):
    state = read_state("app", upstream_to(upstream) if upstream else None, {"blue": live_attrs, "green": None})
    decision = decide_present(state, image_id)
    assert decision.changed is changed
    assert reason in decision.reason


def test_the_live_health_is_asked_only_when_everything_else_matches():
    state = read_state("app", upstream_to("blue"), {"blue": attrs(image_id=IMG_A), "green": None})
    asked = []

    def probe(answer):
        return lambda: asked.append(answer) or answer

    assert decide_present(state, IMG_A, live_health=probe((True, "HTTP 200"))).changed is False
    broken = decide_present(state, IMG_A, live_health=probe((False, "HTTP 502: bad gateway")))
    assert broken.changed is True and "fails its health check (HTTP 502: bad gateway)" in broken.reason
    assert decide_present(state, IMG_B, live_health=probe((False, "never asked"))).changed is True
    assert [ok for ok, _ in asked] == [True, False]


def test_same_image_on_the_idle_colour_is_still_a_change():
    # green runs the asked image but the proxy sends traffic to blue: a switch is needed
    state = read_state("app", upstream_to("blue"), {"blue": attrs(image_id=IMG_A), "green": attrs(image_id=IMG_B)})
    assert decide_present(state, IMG_B).changed is True


def test_colour_state_reads_labels_and_engine_state():
    state = colour_state_from_attrs("green", attrs(running=False, image_id=IMG_B, release="r9", image="site:9"))
    assert (state.exists, state.running, state.status) == (True, False, "exited")
    assert (state.image_id, state.release, state.image) == (IMG_B, "r9", "site:9")
    assert colour_state_from_attrs("blue", None).exists is False


def test_live_summary_is_the_diff_shape():
    state = read_state("app", upstream_to("green"), {"blue": None, "green": attrs(release="r2", image="site:2")})
    assert state.live_summary() == {"live_colour": "green", "live_image": "site:2", "live_release": "r2"}
    empty = read_state("app", None, {})
    assert empty.live_summary() == {"live_colour": None, "live_image": None, "live_release": None}


def test_release_id_is_utc_time_and_short_image_id():
    moment = datetime(2026, 11, 26, 9, 30, 0, tzinfo=UTC)
    assert make_release_id(moment, "sha256:3f2a9c1d0000ffff") == "20261126T093000Z-3f2a9c1d"
    assert make_release_id(moment, None) == "20261126T093000Z-none"


def test_container_labels_carry_everything_state_is_read_from():
    labels = container_labels("app", "green", "r1", "site:1", IMG_A, "abc123", "1.0", "sha256:c0ffee")
    assert labels == {
        "montaiguillon.config": "sha256:c0ffee",
        "montaiguillon.app": "app",
        "montaiguillon.colour": "green",
        "montaiguillon.release": "r1",
        "montaiguillon.image": "site:1",
        "montaiguillon.image_id": IMG_A,
        "montaiguillon.revision": "abc123",
        "montaiguillon.version": "1.0",
    }


def entry(release, image_id, outcome="success"):
    return {"release": release, "image_id": image_id, "image": f"site:{release}", "outcome": outcome}


@pytest.mark.parametrize(
    ("entries", "live", "expected"),
    [
        ([entry("A", IMG_A), entry("B", IMG_B)], "B", "A"),
        ([entry("A", IMG_A), entry("B", IMG_B), entry("C", IMG_C)], "C", "B"),
        # failed and rolled-back attempts never went live: skipped
        (
            [entry("A", IMG_A), entry("X", IMG_C, "failed"), entry("Y", IMG_C, "rolled_back"), entry("B", IMG_B)],
            "B",
            "A",
        ),
        # A, B, rollback to A: rolling back again returns to B
        ([entry("A", IMG_A), entry("B", IMG_B), entry("A", IMG_A, "rollback")], "A", "B"),
        ([entry("A", IMG_A)], "A", None),
        ([], None, None),
        # live release unknown to the ledger (lost ledger): the newest other release
        ([entry("A", IMG_A), entry("B", IMG_B)], "Z", "B"),
    ],
)
def test_previous_release(entries, live, expected):
    found = previous_release(entries, live)
    assert (found["release"] if found else None) == expected


def test_find_release_returns_the_latest_live_entry():
    entries = [entry("A", IMG_A), entry("A", IMG_B, "failed"), entry("B", IMG_B)]
    assert find_release(entries, "A")["image_id"] == IMG_A
    assert find_release(entries, "nope") is None


@pytest.mark.parametrize(
    ("entries", "keep", "protected", "expected"),
    [
        # five releases, keep 2: the three oldest go
        ([entry(str(i), f"sha256:{i}") for i in range(5)], 2, set(), ["sha256:0", "sha256:1", "sha256:2"]),
        # the live and idle containers' images are never pruned, however old
        ([entry(str(i), f"sha256:{i}") for i in range(5)], 2, {"sha256:0"}, ["sha256:1", "sha256:2"]),
        # keep 1 but the previous colour (warm) is protected
        ([entry("A", IMG_A), entry("B", IMG_B)], 1, {IMG_A, IMG_B}, []),
        # images of failed attempts are pruned once older releases are kept
        ([entry("A", IMG_A), entry("X", IMG_C, "failed"), entry("B", IMG_B)], 2, set(), [IMG_C]),
        # a rollback counts as a release: A stays
        ([entry("A", IMG_A), entry("B", IMG_B), entry("C", IMG_C), entry("A", IMG_A, "rollback")], 2, set(), [IMG_B]),
        ([], 5, set(), []),
    ],
)
def test_images_to_prune(entries, keep, protected, expected):
    assert images_to_prune(entries, keep, protected) == expected


def test_images_to_prune_only_lists_images_still_present():
    entries = [entry(str(i), f"sha256:{i}") for i in range(4)]
    assert images_to_prune(entries, 1, set(), present_image_ids={"sha256:1"}) == ["sha256:1"]


def valid_params(**overrides):
    params = {
        "name": "app",
        "proxy_upstream": "montaiguillon_app",
        "port": 8000,
        "keep_releases": 5,
        "health_timeout": 60,
        "health_interval": 1,
        "verify_timeout": 10,
        "migrate_timeout": 600,
        "verify_window": 5,
        "history": 10,
        "health_path": "/health",
        "networks": ["montaiguillon_frontend"],
    }
    params.update(overrides)
    return params


def test_valid_params_pass():
    assert validate_params(valid_params()) == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"port": 0}, "port must be between 1 and 65535"),
        ({"port": 65536}, "port must be between 1 and 65535"),
        ({"keep_releases": 0}, "keep_releases must be at least 1"),
        ({"health_timeout": 0}, "health_timeout must be greater than 0"),
        ({"health_interval": -1}, "health_interval must be greater than 0"),
        ({"verify_timeout": 0}, "verify_timeout must be greater than 0"),
        ({"migrate_timeout": 0}, "migrate_timeout must be greater than 0"),
        ({"verify_window": -1}, "verify_window must be 0 or more"),
        ({"name": "-app"}, "which Docker refuses"),
        ({"name": "my app"}, "which Docker refuses"),
        ({"proxy_upstream": "bad-name"}, "proxy_upstream"),
        ({"health_path": "health"}, "health_path must start with '/'"),
        ({"networks": []}, "networks must name at least one"),
    ],
)
def test_invalid_params_are_explained(overrides, message):
    errors = validate_params(valid_params(**overrides))
    assert any(message in error for error in errors), errors


def test_image_declared_version_and_tail_lines():
    assert image_declared_version({"Config": {"Labels": {"org.opencontainers.image.version": "2.1"}}}) == "2.1"
    assert image_declared_version({"Config": {"Labels": None}}) is None
    assert tail_lines("a\n\nb\nc\n", 2) == "b\nc"
