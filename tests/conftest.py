"""Make the repository's Ansible plugins importable by plain pytest.

Modules import their shared code as ``ansible.module_utils.<name>`` (that is how
Ansible ships ``plugins/module_utils`` to the managed host). Here we extend the
``ansible.module_utils`` package path with our directory so the same imports
work in unit tests, and expose ``load_module(name)`` for plugins/modules.
"""

import http.server
import importlib.util
import json
import sys
import threading
from pathlib import Path

import ansible.module_utils
import pytest

ROOT = Path(__file__).resolve().parent.parent
ansible.module_utils.__path__.append(str(ROOT / "plugins" / "module_utils"))


def _load_module(name):
    path = ROOT / "plugins" / "modules" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"mtg_test_modules.{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def load_module():
    """Import a module from plugins/modules by name."""
    return _load_module


@pytest.fixture
def run_module(capsys):
    """``run_module(module, **args)``: the module's main() with these arguments, and its JSON result."""
    from ansible.module_utils.testing import patch_module_args

    def run(module, **args):
        with patch_module_args(args), pytest.raises(SystemExit):
            module.main()
        return json.loads(capsys.readouterr().out)

    return run


@pytest.fixture
def http_server():
    """``serve(handler_class)`` -> ``http://127.0.0.1:PORT`` of a server on a free port, stopped after the test.

    Polled every 50 ms so stopping it takes no more (the default 0.5 s was 3.5 s of the unit tests).
    """
    servers = []

    def serve(handler):
        httpd = http.server.HTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield serve
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()
