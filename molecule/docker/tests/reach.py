"""Reaching the instance from the host, as a client outside the server would."""

import socket
import subprocess


def instance_address(host):
    name = host.ansible.get_variables()["inventory_hostname"]
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", name],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return out[0]


def connects(address, port):
    try:
        with socket.create_connection((address, port), timeout=2):
            return True
    except OSError:
        return False
