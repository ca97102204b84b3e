"""What a server looks like after the base role."""

import pytest
from reach import connects, instance_address


def test_deploy_user_has_exactly_its_key_and_sudo(host):
    deploy = host.user("deploy")
    assert deploy.exists
    keys = host.file("/home/deploy/.ssh/authorized_keys")
    assert keys.mode == 0o600
    assert keys.content_string.strip().endswith("molecule")
    assert len(keys.content_string.strip().splitlines()) == 1
    assert host.run("sudo -n -l -U deploy").stdout.count("NOPASSWD: ALL") == 1


def test_user_without_sudo_has_none(host):
    assert host.user("alice").exists
    assert not host.file("/etc/sudoers.d/montaiguillon-alice").exists


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("permitrootlogin", "no"),
        ("passwordauthentication", "no"),
        ("kbdinteractiveauthentication", "no"),
        ("allowtcpforwarding", "no"),
        ("allowstreamlocalforwarding", "no"),
        ("compression", "no"),
        ("loglevel", "VERBOSE"),
        ("tcpkeepalive", "no"),
        ("maxsessions", "2"),
    ],
)
def test_sshd_effective_settings(host, option, value):
    effective = host.run("sshd -T").stdout.splitlines()
    assert f"{option} {value}" in effective


def test_sshd_admits_only_the_listed_users_group(host):
    assert "allowgroups montaiguillon-ssh" in host.run("sshd -T").stdout.splitlines()
    members = host.group("montaiguillon-ssh")
    assert members.exists
    for name in ("deploy", "alice"):
        assert "montaiguillon-ssh" in host.user(name).groups


def test_sshd_is_running(host):
    assert host.service("ssh").is_running


def test_firewall_allows_ssh_and_drops_other_ports(host):
    """From outside (this test runs on the host), only allowed ports answer."""
    host.run("systemd-run --unit=probe-8081 python3 -m http.server 8081")
    host.run("systemd-run --unit=probe-80 python3 -m http.server 80")
    try:
        listening = "ss -ltn | grep -q ':8081 ' && ss -ltn | grep -q ':80 '"
        waited = host.run(f"for i in $(seq 50); do {listening} && exit 0; sleep 0.1; done; exit 1")
        assert waited.rc == 0, "the probe servers did not start"
        address = instance_address(host)
        assert connects(address, 22)
        assert connects(address, 80)
        assert not connects(address, 8081)
        # From the server itself (loopback) everything still works.
        assert host.run("python3 -c \"import urllib.request as u; u.urlopen('http://127.0.0.1:8081/')\"").rc == 0
    finally:
        host.run("systemctl stop probe-8081 probe-80")


def test_firewall_survives_reboot_as_a_service(host):
    svc = host.service("montaiguillon-firewall")
    assert svc.is_enabled
    assert host.run("systemctl is-active montaiguillon-firewall").stdout.strip() == "active"


def test_automatic_security_updates(host):
    assert host.package("unattended-upgrades").is_installed
    periodic = host.file("/etc/apt/apt.conf.d/20auto-upgrades").content_string
    assert 'Unattended-Upgrade "1"' in periodic


def test_time_and_logs(host):
    assert host.file("/etc/localtime").linked_to == "/usr/share/zoneinfo/Etc/UTC"
    assert host.service("systemd-timesyncd").is_enabled
    assert "SystemMaxUse=500M" in host.file("/etc/systemd/journald.conf.d/montaiguillon.conf").content_string


def test_fail2ban_watches_ssh_from_the_journal(host):
    assert host.service("fail2ban").is_running
    assert host.service("fail2ban").is_enabled
    status = host.run("fail2ban-client status sshd")
    assert status.rc == 0, status.stderr
    assert "Journal matches:" in status.stdout  # backend = systemd: Debian 12 has no auth.log


def test_login_defaults_banner_and_core_dumps(host):
    defs = host.file("/etc/login.defs").content_string
    assert "\nUMASK\t027\n" in defs
    assert "\nSHA_CRYPT_MIN_ROUNDS\t65536\n" in defs
    assert "Authorised access only" in host.file("/etc/issue.net").content_string
    assert host.file("/etc/security/limits.d/montaiguillon-core.conf").content_string == "* hard core 0\n"


def test_unused_kernel_modules_and_compilers_are_locked_away(host):
    disabled = host.file("/etc/modprobe.d/montaiguillon-disabled.conf").content_string
    for module in ("usb-storage", "dccp", "sctp", "rds", "tipc"):
        assert f"install {module} /bin/true" in disabled
    assembler = host.file("/usr/bin/as")
    if assembler.exists:
        assert host.file(assembler.linked_to or "/usr/bin/as").mode == 0o750
    assert host.run("su -s /bin/sh nobody -c 'as --version'").rc != 0


def test_needrestart_lists_but_never_restarts(host):
    assert host.package("needrestart").is_installed
    listing = host.run("needrestart -b -r l")
    assert listing.rc == 0 and "NEEDRESTART-VER" in listing.stdout
    assert "$nrconf{restart} = 'l';" in host.file("/etc/needrestart/conf.d/montaiguillon.conf").content_string


def test_kernel_settings_are_written_for_boot(host):
    settings = host.file("/etc/sysctl.d/60-montaiguillon-hardening.conf").content_string
    assert "kernel.kptr_restrict=2" in settings
    assert "net.ipv4.conf.all.send_redirects=0" in settings
    assert host.file("/etc/crontab").mode == 0o600
