#!/usr/bin/python
"""Ansible module: the site's maintenance page on, or off once the live slot answers."""

DOCUMENTATION = r"""
---
module: maintenance_page
short_description: Turn a site's maintenance page on, or off once its live slot answers its health check
description:
  - The proxy (roles/proxy) answers every request with 503 and the maintenance page while the flag file
    C({proxy_conf_dir}/maintenance/on) exists; it checks it on every request, so V(on) needs no reload and
    the first reason stays when it is already on.
  - V(off) reads the live slot from the upstream file M(bluegreen_release) writes, probes it with the same
    HTTP probe a deploy uses until it answers O(health_path) with a 2xx (at most O(app_timeout) seconds, as a
    restore has just restarted it), tests and reloads nginx as a switch does (containers restarted meanwhile
    may have new addresses), then removes the flag. The flag goes even when the slot never answered, so the
    page never stays up by itself; the result says C(healthy=false) and the role fails naming the slot.
version_added: "0.2.0"
author: Montaiguillon infrastructure (@montaiguillon)
options:
  state:
    description: The page on or off.
    type: str
    choices: ["on", "off"]
    required: true
  reason:
    description: Why, kept in the flag file and shown to a deploy refused meanwhile.
    type: str
    default: maintenance
  name:
    description: The site's name in the upstream file (C({name}-upstream.conf), slots C({name}-blue), C({name}-green)).
    type: str
    required: true
  proxy_container:
    description: Name of the proxy container.
    type: str
    default: proxy
  proxy_conf_dir:
    description: The proxy's conf.d on the host.
    type: path
    default: /etc/montaiguillon/proxy/conf.d
  network:
    description: Docker network the slots share with the proxy (their address is read on it).
    type: str
    default: montaiguillon_frontend
  health_path:
    description: The app's health check path.
    type: str
    default: /health
  app_timeout:
    description: Seconds V(off) waits for the live slot to answer.
    type: int
    default: 60
  docker_host:
    description: Docker daemon URL; the local socket when unset.
    type: str
attributes:
  check_mode:
    details: Says whether the page would change; writes nothing, probes nothing, does not reload.
  idempotent:
    support: full
    description: On while on and off while off change nothing.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - server_module
seealso:
  - module: bluegreen_release
"""

EXAMPLES = r"""
- name: Maintenance page on for a restore
  maintenance_page:
    state: "on"
    name: app
    reason: "restore.yml: restore of 20261126T031500Z-scheduled"

- name: Maintenance page off once the site answers
  maintenance_page:
    state: "off"
    name: app
    health_path: /health
    app_timeout: 60
  register: page
"""

RETURN = r"""
reason:
  description: The reason in the flag file after the task (null when the page is off).
  returned: always
  type: str
  sample: "restore.yml: restore of 20261126T031500Z-scheduled"
live:
  description: With V(off), the live slot's container (null when no release was ever deployed).
  returned: state is off
  type: str
  sample: app-blue
healthy:
  description: With V(off), whether the live slot answered its health check before the page went (null in check mode).
  returned: state is off
  type: bool
  sample: true
health:
  description: With V(off), the live slot's last health answer, or why there was none.
  returned: state is off
  type: str
  sample: "HTTP 200: {\"status\": \"ok\"}"
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.montaiguillon.common.docker_engine import DockerEngine, DockerError, get_client
from ansible.module_utils.montaiguillon.deploy.maintenance import MaintenancePage
from ansible.module_utils.montaiguillon.deploy.probe import HttpProbe
from ansible.module_utils.montaiguillon.deploy.proxy import Proxy, ProxyError


def argument_spec():
    return {
        "state": {"type": "str", "choices": ["on", "off"], "required": True},
        "reason": {"type": "str", "default": "maintenance"},
        "name": {"type": "str", "required": True},
        "proxy_container": {"type": "str", "default": "proxy"},
        "proxy_conf_dir": {"type": "path", "default": "/etc/montaiguillon/proxy/conf.d"},
        "network": {"type": "str", "default": "montaiguillon_frontend"},
        "health_path": {"type": "str", "default": "/health"},
        "app_timeout": {"type": "int", "default": 60},
        "docker_host": {"type": "str"},
    }


def page_for(module, engine):
    p = module.params
    if not p["health_path"].startswith("/"):
        module.fail_json(msg=f"health_path must start with '/', not {p['health_path']!r}")
    if p["app_timeout"] < 0:
        module.fail_json(msg=f"app_timeout must be >= 0 seconds, not {p['app_timeout']}")
    upstream = os.path.join(p["proxy_conf_dir"], f"{p['name']}-upstream.conf")
    proxy = Proxy(engine, p["proxy_container"], p["proxy_conf_dir"], upstream, time.monotonic, module.warn)
    return MaintenancePage(
        engine, proxy, HttpProbe(), p["name"], p["network"], p["health_path"], time.monotonic, time.sleep
    )


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params
    try:
        page = page_for(module, DockerEngine(get_client(p["docker_host"])))
        if p["state"] == "on":
            result = {"changed": page.turn_on(p["reason"], module.check_mode)}
        else:
            result = page.turn_off(p["app_timeout"], module.check_mode)
        reason = page.reason()
    except (DockerError, ProxyError, OSError) as exc:
        module.fail_json(msg=f"maintenance page {p['state']}: {exc}")
    module.exit_json(reason=reason, **result)


if __name__ == "__main__":
    main()
