"""Where a run's ML Metadata store is: a SQLite file under the run root, or
a database on a MySQL/MariaDB server, named by a URL (parse_metadata()).

The root remembers a server store in <root>/metadata.url (never with its
password), so `recsys runs/lineage/recommend` find it again.
"""

import dataclasses
import os
import re
import urllib.parse
from typing import Mapping, Optional

METADATA_FILE = "metadata.sqlite"  # <root>/metadata.sqlite, the default store
METADATA_URL_FILE = "metadata.url"
# Where a MySQL password comes from when the URL has none (the URL recorded in
# <root>/metadata.url never has one).
PASSWORD_ENV = "RECSYS_METADATA_PASSWORD"
_MYSQL_SCHEMES = ("mysql", "mariadb")
_FORMS = ("a SQLite file path, sqlite:///PATH, mysql://USER[:PASSWORD]@HOST[:PORT]/"
          "DATABASE or mysql://USER@localhost/DATABASE?unix_socket=PATH")


@dataclasses.dataclass(frozen=True)
class MetadataLocation:
    """Where an ML Metadata store is (see parse_metadata)."""

    kind: str  # "sqlite" or "mysql"
    path: str = ""  # sqlite: the database file
    database: str = ""  # mysql, with user, password and host/port or socket
    user: str = ""
    password: str = ""
    host: str = ""
    port: int = 0
    socket: str = ""

    def url(self) -> str:
        """This location as a URL, without the password: safe to log and keep."""
        if self.kind == "sqlite":
            return "sqlite://" + os.path.abspath(self.path)
        user = urllib.parse.quote(self.user, safe="")
        if self.socket:
            return (f"mysql://{user}@localhost/{self.database}?unix_socket="
                    f"{urllib.parse.quote(self.socket, safe='/')}")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mysql://{user}@{host}:{self.port}/{self.database}"

    def connection_config(self, create: bool = False,
                          environ: Optional[Mapping[str, str]] = None):
        """The metadata_store_pb2.ConnectionConfig of this store.

        create=False (readers such as `recsys runs`) never creates anything: a
        missing SQLite file raises FileNotFoundError, a missing MySQL database
        fails to connect. create=True (a pipeline run) creates either, and the
        SQLite file's directory.
        """
        from ml_metadata.proto import metadata_store_pb2

        connection = metadata_store_pb2.ConnectionConfig()
        if self.kind == "sqlite":
            path = os.path.abspath(self.path)
            modes = metadata_store_pb2.SqliteMetadataSourceConfig
            if create:
                os.makedirs(os.path.dirname(path), exist_ok=True)
            elif not os.path.isfile(path):
                raise FileNotFoundError(f"no ML Metadata store at {path}: has a "
                                        f"pipeline run used this root?")
            connection.sqlite.filename_uri = path
            connection.sqlite.connection_mode = (
                modes.READWRITE_OPENCREATE if create else modes.READWRITE)
            return connection
        mysql = connection.mysql
        mysql.database = self.database
        mysql.user = self.user
        mysql.password = self.password or (
            os.environ if environ is None else environ).get(PASSWORD_ENV, "")
        if self.socket:
            mysql.socket = self.socket
        else:
            mysql.host, mysql.port = self.host, self.port
        mysql.skip_db_creation = not create
        return connection


def parse_metadata(spec: str) -> MetadataLocation:
    """Parses where the ML Metadata store is; touches nothing.

      /path/to/metadata.sqlite or sqlite:///path/to/metadata.sqlite
      mysql://USER[:PASSWORD]@HOST[:PORT]/DATABASE           (port 3306)
      mysql://USER[:PASSWORD]@localhost/DATABASE?unix_socket=/run/mysqld/mysqld.sock
    (mariadb:// is the same). User, password and socket may be %-escaped.
    Without a password in the URL, connection_config() takes
    $RECSYS_METADATA_PASSWORD (PASSWORD_ENV).
    """
    if not spec:
        raise ValueError(f"empty metadata store: give {_FORMS}")
    scheme, separator, rest = spec.partition("://")
    if not separator:
        return MetadataLocation("sqlite", path=spec)
    try:
        parts = urllib.parse.urlsplit(spec)
    except ValueError as e:
        raise ValueError(f"bad metadata store URL ({e}): give {_FORMS}") from None
    shown = _without_password(spec, parts)
    scheme = scheme.lower()
    if scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise ValueError(f"{shown!r}: write a SQLite URL with an absolute path, "
                             f"sqlite:///PATH")
        return MetadataLocation("sqlite", path=rest)
    if scheme not in _MYSQL_SCHEMES:
        raise ValueError(f"{shown!r}: unsupported metadata store {scheme!r}; give {_FORMS}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{shown!r}: the port must be a number from 1 to 65535") from None
    if parts.fragment:
        raise ValueError(f"{shown!r}: unexpected '#{parts.fragment}'")
    if not parts.username:
        raise ValueError(f"{shown!r}: name the user, mysql://USER@HOST/DATABASE")
    database = parts.path[1:]
    if not re.fullmatch(r"[A-Za-z0-9_$]{1,64}", database):
        raise ValueError(f"{shown!r}: the database name must be 1-64 letters, digits, "
                         f"'_' or '$' after the host, mysql://USER@HOST/DATABASE")
    options = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(options) - {"unix_socket"})
    if unknown:
        raise ValueError(f"{shown!r}: unknown option(s) {', '.join(unknown)}; "
                         f"the only one is unix_socket=PATH")
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    if "unix_socket" in options:
        [socket_path] = options["unix_socket"][-1:]
        if not socket_path.startswith("/"):
            raise ValueError(f"{shown!r}: unix_socket must be an absolute path")
        if parts.hostname not in (None, "localhost") or port is not None:
            raise ValueError(f"{shown!r}: give either HOST[:PORT] or unix_socket, "
                             f"not both (write localhost as the host)")
        return MetadataLocation("mysql", database=database, user=user,
                                password=password, socket=socket_path)
    if not parts.hostname:
        raise ValueError(f"{shown!r}: name the host, mysql://USER@HOST[:PORT]/DATABASE, "
                         f"or the server's socket, ?unix_socket=PATH")
    if port == 0:
        raise ValueError(f"{shown!r}: the port must be a number from 1 to 65535")
    return MetadataLocation("mysql", database=database, user=user, password=password,
                            host=parts.hostname, port=port or 3306)


def _without_password(spec: str, parts: urllib.parse.SplitResult) -> str:
    """`spec` fit for an error message: the password replaced by ***."""
    if parts.password is None:
        return spec
    user_info, _, host = parts.netloc.rpartition("@")
    return spec.replace(parts.netloc, f"{user_info.split(':', 1)[0]}:***@{host}", 1)


def metadata_location(root: str, metadata: Optional[str] = None) -> MetadataLocation:
    """The store of run root `root`: `metadata` if given, else the store the
    root recorded (<root>/metadata.url), else <root>/metadata.sqlite."""
    if metadata is not None:
        return parse_metadata(metadata)
    recorded = os.path.join(root, METADATA_URL_FILE)
    if os.path.exists(recorded):
        with open(recorded) as f:
            return parse_metadata(f.read().strip())
    return MetadataLocation("sqlite", path=os.path.join(os.path.abspath(root), METADATA_FILE))


def connection_config(root_or_url: str, create: bool = False):
    """The ConnectionConfig for reading a store: a run root (its recorded
    store or its metadata.sqlite), a SQLite file, or a URL (parse_metadata).

    For `recsys runs/lineage/recommend`: with create=False it never creates a
    store; a missing SQLite file raises FileNotFoundError.
    """
    if "://" in root_or_url or os.path.isfile(root_or_url):
        location = parse_metadata(root_or_url)
    else:
        location = metadata_location(root_or_url)
    return location.connection_config(create=create)


def check_store(location: MetadataLocation, connection) -> None:
    """Opens the store once, so that a wrong password or an unreachable
    server fails here, clearly, not inside the first component."""
    from ml_metadata.metadata_store import metadata_store

    try:
        metadata_store.MetadataStore(connection)
    except Exception as e:  # MLMD raises RuntimeError with its C++ log text
        hint = ("; check the user, the password (in the URL or $" + PASSWORD_ENV +
                "), the host and port or socket, and that the server is running"
                if location.kind == "mysql" else "")
        raise RuntimeError(f"cannot open the ML Metadata store {location.url()}"
                           f"{hint}: {e}") from None


def record_location(root: str, location: MetadataLocation) -> None:
    with open(os.path.join(root, METADATA_URL_FILE), "w") as f:
        f.write(location.url() + "\n")
