"""Backups of a MySQL/MariaDB server that runs in a Docker container, in named parts.

Shared by the ``mysql_backup`` and ``mysql_restore`` modules and by the server's
cron tool (``mysql_backup_cli``, installed with this package by the backup role).

Pure logic (the local file system only): ``ids``, ``retention``, ``catalog``,
``manifest``, ``scanner``. Runtime: ``container`` (Docker exec), ``mysql``
(PyMySQL), ``pacing``, ``pipeline``, ``take``, ``restore``, ``binlogs``,
``offsite``, ``drill``. ``store`` runs on the storage host (standard library only).
Everything that fails raises ``errors.BackupError`` with a message fit for an
operator; messages never hold a password or a command line that holds one.
"""
