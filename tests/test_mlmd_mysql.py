"""ML Metadata on a MySQL-protocol server: parsing where the store is, the
connection config, and a pipeline run against a real MariaDB (mysql_server)."""

import dataclasses
import os

import pytest
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from tfx_recsys import run_summary
from tfx_recsys.pipeline import local_runner, metadata_store as store_location
from tfx_recsys.pipeline.metadata_store import MetadataLocation, parse_metadata

COMPONENTS = {"InteractionsExampleGen", "StatisticsGen", "ImportSchemaGen",
              "ExampleValidator", "Transform", "Trainer", "RetrievalEvaluator",
              "ScannPusher"}
SQLITE_MODES = metadata_store_pb2.SqliteMetadataSourceConfig

pytest_plugins = ["mysql_server"]  # the fixtures mariadb, two_worker_run_on_mariadb


# --------------------------------------------------------------------------
# parse_metadata and connection_config: no server needed


def test_a_path_or_sqlite_url_is_a_sqlite_store():
    assert parse_metadata("runs/x/metadata.sqlite") == MetadataLocation(
        "sqlite", path="runs/x/metadata.sqlite")
    assert parse_metadata("sqlite:///srv/m.sqlite") == MetadataLocation(
        "sqlite", path="/srv/m.sqlite")


def test_mysql_url_over_tcp():
    assert parse_metadata("mysql://ml%40team:p%40ss:w@db.example.com:3307/mlmd") == \
        MetadataLocation("mysql", database="mlmd", user="ml@team", password="p@ss:w",
                         host="db.example.com", port=3307)
    # The default port; mariadb:// is the same thing.
    assert parse_metadata("mariadb://ml@10.0.0.5/mlmd") == MetadataLocation(
        "mysql", database="mlmd", user="ml", host="10.0.0.5", port=3306)


def test_mysql_url_over_a_unix_socket():
    assert parse_metadata("mysql://root@localhost/mlmd?unix_socket=/run/my%20sql/s.sock") == \
        MetadataLocation("mysql", database="mlmd", user="root", socket="/run/my sql/s.sock")
    assert parse_metadata("mysql://root@/mlmd?unix_socket=/s.sock").socket == "/s.sock"


@pytest.mark.parametrize("spec", [
    "mysql://ml:secret@db:3307/mlmd",
    "mysql://ml@localhost/mlmd?unix_socket=/run/mysqld/mysqld.sock",
    "sqlite:///srv/m.sqlite",
])
def test_url_round_trips_without_the_password(spec):
    location = parse_metadata(spec)
    assert "secret" not in location.url()
    assert parse_metadata(location.url()) == dataclasses.replace(location, password="")


@pytest.mark.parametrize("spec, message", [
    ("", "empty metadata store"),
    ("postgresql://ml:secret@db/mlmd", "unsupported metadata store 'postgresql'"),
    ("mysql://ml@[db/mlmd", "bad metadata store URL"),
    ("mysql://db.example.com/mlmd", "name the user"),
    ("mysql://ml@db/", "database name"),
    ("mysql://ml@db/ml-md", "database name"),
    ("mysql://ml@db/a/b", "database name"),
    ("mysql://ml:secret@db:99999/mlmd", "port must be a number"),
    ("mysql://ml:secret@db:0/mlmd", "port must be a number"),
    ("mysql://ml:secret@/mlmd", "name the host"),
    ("mysql://ml@db/mlmd?ssl=1", "unknown option(s) ssl"),
    ("mysql://ml@db:3306/mlmd?unix_socket=/s.sock", "either HOST[:PORT] or unix_socket"),
    ("mysql://ml@localhost/mlmd?unix_socket=s.sock", "absolute path"),
    ("sqlite://relative.sqlite", "absolute path"),
])
def test_bad_locations_are_refused_clearly(spec, message):
    with pytest.raises(ValueError) as error:
        parse_metadata(spec)
    assert message in str(error.value)
    assert "secret" not in str(error.value)


def test_mysql_connection_config_fields():
    tcp = parse_metadata("mysql://ml:pw@db:3307/mlmd").connection_config(create=True)
    assert tcp.WhichOneof("config") == "mysql"
    assert (tcp.mysql.host, tcp.mysql.port, tcp.mysql.database, tcp.mysql.user,
            tcp.mysql.password, tcp.mysql.socket) == ("db", 3307, "mlmd", "ml", "pw", "")
    assert tcp.mysql.skip_db_creation is False
    # Readers never create the database.
    assert parse_metadata("mysql://ml:pw@db/mlmd").connection_config().mysql.skip_db_creation

    local = parse_metadata("mysql://root@localhost/mlmd?unix_socket=/s.sock").connection_config()
    assert (local.mysql.socket, local.mysql.host, local.mysql.port) == ("/s.sock", "", 0)


def test_the_password_comes_from_the_environment_when_the_url_has_none():
    environ = {store_location.PASSWORD_ENV: "from-env"}
    assert parse_metadata("mysql://ml@db/mlmd").connection_config(
        environ=environ).mysql.password == "from-env"
    assert parse_metadata("mysql://ml:in-url@db/mlmd").connection_config(
        environ=environ).mysql.password == "in-url"


def test_sqlite_connection_config_of_a_root(tmp_path):
    root = str(tmp_path)
    with pytest.raises(FileNotFoundError, match="no ML Metadata store at"):
        store_location.connection_config(root)
    created = store_location.connection_config(root, create=True)
    assert created.sqlite.filename_uri == os.path.join(root, "metadata.sqlite")
    assert created.sqlite.connection_mode == SQLITE_MODES.READWRITE_OPENCREATE
    metadata_store.MetadataStore(created)  # creates the file
    read = store_location.connection_config(root)
    assert read.sqlite.connection_mode == SQLITE_MODES.READWRITE
    # A SQLite file given directly works the same.
    assert store_location.connection_config(read.sqlite.filename_uri) == read


def test_a_root_remembers_its_mysql_store(tmp_path):
    with open(tmp_path / store_location.METADATA_URL_FILE, "w") as f:
        f.write("mysql://ml@db:3307/mlmd\n")
    config = store_location.connection_config(str(tmp_path))
    assert (config.mysql.host, config.mysql.port, config.mysql.database) == ("db", 3307, "mlmd")


# --------------------------------------------------------------------------
# A real MariaDB server


def test_without_mariadb_the_fixture_fails_and_says_how_to_install_it(tmp_path,
                                                                      monkeypatch):
    import mysql_server  # here: loaded as a plugin first (assertion rewriting)

    monkeypatch.setattr(mysql_server, "_SEARCH_PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="run `make system-packages`"):
        mysql_server.start(str(tmp_path / "server"))


def test_mlmd_reaches_the_server_over_tcp_and_the_socket(mariadb):
    mariadb.create_database("transport")
    over_tcp = metadata_store.MetadataStore(
        store_location.connection_config(mariadb.tcp_url("transport"), create=True))
    over_tcp.put_artifact_type(metadata_store_pb2.ArtifactType(name="Probe"))
    over_socket = metadata_store.MetadataStore(
        store_location.connection_config(mariadb.socket_url("transport")))
    assert over_socket.get_artifact_type("Probe").name == "Probe"
    # MLMD's tables are really on the server.
    assert mariadb.sql("SELECT name FROM transport.Type WHERE name = 'Probe'") == [["Probe"]]


def test_a_wrong_password_or_a_missing_database_fails(mariadb):
    wrong = f"mysql://{mariadb.user}:wrong@127.0.0.1:{mariadb.port}/{mariadb.database}"
    with pytest.raises(RuntimeError, match="mysql_real_connect failed"):
        metadata_store.MetadataStore(store_location.connection_config(wrong))
    # Readers do not create a database that is not there.
    with pytest.raises(RuntimeError, match="Unknown database 'never_created'"):
        metadata_store.MetadataStore(store_location.connection_config(
            mariadb.socket_url("never_created")))
    assert ["never_created"] not in mariadb.sql("SHOW DATABASES")


def test_a_run_with_a_wrong_password_stops_before_any_component(mariadb, tiny_data,
                                                                tmp_path):
    wrong = f"mysql://{mariadb.user}:wrong-pw@127.0.0.1:{mariadb.port}/{mariadb.database}"
    with pytest.raises(RuntimeError) as error:
        local_runner.run(tiny_data, str(tmp_path / "root"), metadata=wrong)
    message = str(error.value)
    assert message.startswith("cannot open the ML Metadata store "
                              f"{mariadb.tcp_url(password=False)}; check the user")
    assert "wrong-pw" not in message
    assert not os.path.exists(tmp_path / "root" / "pipeline")


def test_pipeline_run_with_its_metadata_on_mariadb(two_worker_run_on_mariadb, mariadb,
                                                   monkeypatch):
    """tiny_run's pipeline with the store on MariaDB (and Beam on two worker
    processes: the run is shared with test_beam_runners)."""
    run = two_worker_run_on_mariadb
    root = run.paths.root

    # No SQLite store; the root names the server, without the password.
    assert not os.path.exists(run.paths.metadata_path)
    with open(os.path.join(root, store_location.METADATA_URL_FILE)) as f:
        assert f.read().strip() == mariadb.tcp_url("pipeline", password=False)

    store = metadata_store.MetadataStore(store_location.connection_config(run.metadata_url))
    # Every node the run started has one execution, completed; the known
    # components are among them.
    node_type = store.get_context_type("node")
    nodes = {c.name.split(".", 1)[1]: store.get_executions_by_context(c.id)
             for c in store.get_contexts_by_type(node_type.name)}
    assert COMPONENTS <= set(nodes)
    for node, executions in nodes.items():
        assert [e.last_known_state for e in executions] == [
            metadata_store_pb2.Execution.COMPLETE], node

    [pusher] = run_summary.executions_of(store, "ScannPusher")
    [pushed] = run_summary.output_artifacts(store, pusher, "pushed_model")
    assert run_summary.property_value(pushed, "pushed") == 1
    assert os.path.isdir(run_summary.property_value(pushed, "pushed_destination"))

    # All of it is in MariaDB's tables.
    [[count]] = mariadb.sql("SELECT COUNT(*) FROM pipeline.Execution")
    assert int(count) == len(store.get_executions()) >= len(COMPONENTS)

    # Readers given only the root find the same store (the password from
    # the environment, as the recorded URL has none).
    monkeypatch.setenv(store_location.PASSWORD_ENV, mariadb.password)
    again = metadata_store.MetadataStore(store_location.connection_config(root))
    assert {e.id for e in again.get_executions()} == {e.id for e in store.get_executions()}
