"""Montaiguillon's shared code: ``common`` helpers, ``backup`` and ``deploy``.

Imported as ``ansible.module_utils.montaiguillon.<part>``: Ansible ships the
package with each module that uses it, and the backup role installs the same
tree on the server for cron (docs/architecture.md, "Code layout").
"""
