"""The release configuration digest: what changes it, what never shows in it."""

from ansible.module_utils.montaiguillon.deploy.fingerprint import LABEL_CONFIG, config_changes, config_digest

BASE = {
    "image_id": "sha256:aaaa",
    "env": {"APP_DB_HOST": "mysql", "APP_DB_PASSWORD": "hunter2"},
    "secret_env": {"APP_DB_PASSWORD": "hunter2"},
    "port": 8000,
    "networks": ["front", "back"],
    "confinement_kwargs": {"mem_limit": "512m"},
}


def digest(**changes):
    return config_digest(**{**BASE, **changes})


def test_same_configuration_same_digest_whatever_the_key_order():
    reordered = dict(reversed(list(BASE["env"].items())))
    assert digest() == digest(env=reordered)
    assert digest().startswith("sha256:") and len(digest()) == len("sha256:") + 64


def test_every_part_of_the_configuration_counts():
    variants = [
        digest(image_id="sha256:bbbb"),
        digest(env={**BASE["env"], "APP_DEBUG": "1"}),
        digest(env={**BASE["env"], "APP_DB_PASSWORD": "rotated"}, secret_env={"APP_DB_PASSWORD": "rotated"}),
        digest(port=8080),
        digest(networks=["front"]),
        digest(confinement_kwargs={"mem_limit": "1g"}),
    ]
    assert len({digest(), *variants}) == len(variants) + 1


def test_the_same_secret_under_another_name_is_another_configuration():
    renamed = digest(env={"APP_DB_HOST": "mysql", "DB_PASS": "hunter2"}, secret_env={"DB_PASS": "hunter2"})
    assert renamed != digest()


def test_live_label_comparison_says_why():
    wanted = digest()
    assert config_changes({LABEL_CONFIG: wanted}, wanted) is None
    assert "configuration changed" in config_changes({LABEL_CONFIG: "sha256:old"}, wanted)
    assert "predates configuration tracking" in config_changes({}, wanted)
