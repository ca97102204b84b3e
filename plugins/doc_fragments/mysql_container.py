"""Options shared by the modules that work on a MySQL/MariaDB database running in a container."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  container:
    description: Name or id of the running database container.
    type: str
    default: mysql
  lock_timeout:
    description: Seconds to wait for another backup or restore of O(backup_dir) to finish.
    type: int
    default: 600
  login_user:
    description: Database user, for the tools run inside the container and for queries.
    type: str
    default: root
  login_password:
    description: Password of O(login_user).
    type: str
  login_unix_socket:
    description:
      - Socket on the server for queries; the container's C(/run/mysqld) bind-mounted from the host.
    type: path
    default: /run/montaiguillon/mysql/mysqld.sock
  login_host:
    description: Host for queries over TCP instead of O(login_unix_socket).
    type: str
  login_port:
    description: Port with O(login_host).
    type: int
    default: 3306
  connect_timeout:
    description: Seconds to wait for a database connection.
    type: int
    default: 10
  docker_host:
    description: Docker engine URL; defaults to E(DOCKER_HOST) or the local socket.
    type: str
requirements:
  - Docker SDK for Python 5.0.3 or later (Debian python3-docker)
  - PyMySQL 1.0.2 or later (Debian python3-pymysql)
"""
