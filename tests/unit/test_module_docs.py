"""What `ansible-doc` shows for each custom module matches what the module accepts."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(path.stem for path in (ROOT / "plugins/modules").glob("*.py"))


@pytest.fixture(scope="module")
def docs():
    """ansible-doc's JSON for every module, run from the repository (ansible.cfg: paths, doc fragments)."""
    ansible_doc = shutil.which("ansible-doc")
    assert ansible_doc, "ansible-doc is missing (make setup)"
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    proc = subprocess.run([ansible_doc, "-t", "module", "--json", *MODULES],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("name", MODULES)
def test_ansible_doc_documents_exactly_the_argument_spec(docs, load_module, name):
    doc = docs[name]["doc"]
    spec = load_module(name).argument_spec()
    assert set(doc["options"]) == set(spec)
    for option, documented in doc["options"].items():
        assert documented["type"] == spec[option].get("type", "str"), option
        assert documented.get("default") == spec[option].get("default"), option
        assert bool(documented.get("required")) == bool(spec[option].get("required")), option
        if "choices" in spec[option]:
            assert documented["choices"] == spec[option]["choices"], option
        assert documented.get("description"), f"{option} has no description"


@pytest.mark.parametrize("name", MODULES)
def test_secrets_are_never_logged(load_module, name):
    spec = load_module(name).argument_spec()
    secrets = [option for option in spec if "password" in option or "secret" in option or "token" in option]
    for option in secrets:
        assert spec[option].get("no_log") is True, option


@pytest.mark.parametrize("name", MODULES)
def test_examples_and_return_are_shown(docs, load_module, name):
    module = load_module(name)
    examples = yaml.safe_load(module.EXAMPLES)
    assert examples, "EXAMPLES is empty"
    assert any(name in task for task in examples), f"no example calls {name}"
    assert docs[name]["return"], "RETURN is empty"
    assert {"check_mode", "diff_mode"} <= set(docs[name]["doc"]["attributes"])
