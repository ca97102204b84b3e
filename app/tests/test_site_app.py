"""What a visitor, a load balancer or the deploy roles see over HTTP."""

import datetime
import json
from wsgiref.util import setup_testing_defaults

import pytest
from montaiguillon_site import content
from montaiguillon_site.app import create_app

ENV = {
    "APP_VERSION": "1.4.2",
    "APP_REVISION": "abc1234",
    "APP_DB_NAME": "site",
    "APP_DB_USER": "site",
}


def call(app, path, method="GET", remote="127.0.0.1"):
    environ = {"PATH_INFO": path, "REQUEST_METHOD": method, "REMOTE_ADDR": remote}
    setup_testing_defaults(environ)
    captured = {}

    def start_response(status, headers):
        captured["status"] = int(status.split()[0])
        captured["headers"] = dict(headers)

    body = b"".join(app(environ, start_response))
    return captured["status"], captured["headers"], body


@pytest.fixture
def make_app(fake_db, migrations_dir):
    def make(**env):
        environ = {**ENV, "APP_MIGRATIONS_DIR": str(migrations_dir), **env}
        return create_app(environ, connect=fake_db.connect)

    return make


def migrated(fake_db, *versions):
    fake_db.table_exists = True
    for version in versions:
        fake_db.applied[version] = (f"m{version}", datetime.datetime(2024, 1, 1))


# -- /health -------------------------------------------------------------------


def test_health_ok_when_every_shipped_migration_is_applied(fake_db, make_app):
    migrated(fake_db, 1, 2, 3)
    status, headers, body = call(make_app(), "/health")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"status": "ok", "version": "1.4.2", "schema": 3}
    assert all(conn.closed for conn in fake_db.connections)


def test_health_reports_schema_behind(fake_db, make_app):
    migrated(fake_db, 1)
    status, _, body = call(make_app(), "/health")
    assert status == 503
    assert json.loads(body) == {"status": "error", "reason": "schema behind: at 1, image needs 3"}


@pytest.mark.parametrize("remote", ["172.18.0.5", "203.0.113.9", "2001:db8::1", "", "not-an-address"])
def test_health_tells_an_outside_caller_only_unhealthy_and_logs_why(fake_db, make_app, remote, caplog):
    fake_db.reachable = False
    status, headers, body = call(make_app(), "/health", remote=remote)
    assert status == 503
    assert json.loads(body) == {"status": "unhealthy"}
    assert headers["Cache-Control"] == "no-store"
    assert "database unreachable" in caplog.text


def test_health_gives_the_reason_to_the_container_itself(fake_db, make_app):
    migrated(fake_db, 1)
    for remote in ("127.0.0.1", "::1"):
        status, _, body = call(make_app(), "/health", remote=remote)
        assert (status, json.loads(body)["reason"]) == (503, "schema behind: at 1, image needs 3")


def test_health_before_any_migration_is_schema_behind_at_zero(fake_db, make_app):
    status, _, body = call(make_app(), "/health")  # no schema_migrations table at all
    assert status == 503
    assert json.loads(body)["reason"] == "schema behind: at 0, image needs 3"


def test_health_reports_a_skipped_migration(fake_db, make_app):
    migrated(fake_db, 1, 3)
    status, _, body = call(make_app(), "/health")
    assert status == 503
    assert json.loads(body)["reason"] == "schema behind: at 3, missing migration(s) 2"


def test_health_ok_when_database_is_ahead_of_the_image(fake_db, make_app):
    # The previous release keeps serving while the next one has migrated (blue/green).
    migrated(fake_db, 1, 2, 3, 4)
    status, _, body = call(make_app(), "/health")
    assert status == 200
    assert json.loads(body)["schema"] == 4


def test_health_when_database_is_unreachable(fake_db, make_app):
    fake_db.reachable = False
    status, headers, body = call(make_app(), "/health")
    assert status == 503
    assert headers["X-App-Version"] == "1.4.2"
    payload = json.loads(body)
    assert payload["status"] == "error"
    assert payload["reason"].startswith("database unreachable: Can't connect to MySQL server")


def test_health_when_the_query_fails_closes_the_connection(fake_db, make_app):
    migrated(fake_db, 1, 2, 3)
    fake_db.fail_on = "schema_migrations"
    status, _, body = call(make_app(), "/health")
    assert status == 503
    assert json.loads(body)["reason"].startswith("database query failed: You have an error")
    assert len(fake_db.connections) == 1
    assert fake_db.connections[0].closed


def test_forced_health_failure(fake_db, make_app):
    migrated(fake_db, 1, 2, 3)
    status, _, body = call(make_app(APP_FAIL_HEALTH="1"), "/health")
    assert status == 503
    assert json.loads(body) == {"status": "error", "reason": "forced failure"}


def test_health_fails_after_the_given_number_of_healthy_answers(fake_db, make_app):
    migrated(fake_db, 1, 2, 3)
    app = make_app(APP_FAIL_HEALTH_AFTER="2")
    assert [call(app, "/health")[0] for _ in range(4)] == [200, 200, 503, 503]
    reason = json.loads(call(app, "/health")[2])["reason"]
    assert reason == "forced failure after 2 healthy answers"


def test_a_bad_fail_after_count_is_a_configuration_error(fake_db, make_app):
    status, _, body = call(make_app(APP_FAIL_HEALTH_AFTER="soon"), "/health")
    assert status == 503 and "APP_FAIL_HEALTH_AFTER must be an integer" in json.loads(body)["reason"]


def test_health_reports_missing_migrations_directory(fake_db, make_app, tmp_path):
    migrated(fake_db, 1)
    status, _, body = call(make_app(APP_MIGRATIONS_DIR=str(tmp_path / "nowhere")), "/health")
    assert status == 503
    assert json.loads(body)["reason"].startswith("migrations unreadable: migrations directory not found")


def test_configuration_error_is_reported_not_fatal(migrations_dir):
    app = create_app({"APP_VERSION": "2.0.0", "APP_MIGRATIONS_DIR": str(migrations_dir)})  # no APP_DB_NAME
    status, _, body = call(app, "/health")
    assert status == 503
    assert json.loads(body)["reason"] == "configuration error: APP_DB_NAME is not set"
    page_status, page_headers, _ = call(app, "/")
    assert page_status == 503
    assert page_headers["X-App-Version"] == "2.0.0"


# -- /version and headers --------------------------------------------------------------


def test_version_endpoint(make_app):
    status, headers, body = call(make_app(), "/version")
    assert status == 200
    assert json.loads(body) == {"version": "1.4.2", "revision": "abc1234"}
    assert headers["X-App-Version"] == "1.4.2"


def test_version_defaults_outside_the_image(fake_db, migrations_dir):
    app = create_app({"APP_MIGRATIONS_DIR": str(migrations_dir)}, connect=fake_db.connect)
    _, headers, body = call(app, "/version")
    assert json.loads(body) == {"version": "dev", "revision": "unknown"}
    assert headers["X-App-Version"] == "dev"


def test_unknown_path_is_404_with_version_header(make_app):
    status, headers, _ = call(make_app(), "/nope")
    assert status == 404
    assert headers["X-App-Version"] == "1.4.2"


def test_post_is_405_with_allow_header(make_app):
    status, headers, _ = call(make_app(), "/health", method="POST")
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"
    assert headers["X-App-Version"] == "1.4.2"


def test_unexpected_error_is_500_with_version_header(make_app):
    app = make_app()
    app._routes["/version"] = lambda: 1 / 0  # a bug in a handler
    status, headers, body = call(app, "/version")
    assert status == 500
    assert headers["X-App-Version"] == "1.4.2"
    assert b"Traceback" not in body


def test_version_header_cannot_inject_headers(make_app):
    _, headers, _ = call(make_app(APP_VERSION="1.0\r\nSet-Cookie: x=1"), "/version")
    assert headers["X-App-Version"] == "1.0??Set-Cookie: x=1"
    assert "Set-Cookie" not in headers


def test_head_has_headers_but_no_body(fake_db, make_app):
    migrated(fake_db, 1, 2, 3)
    _, get_headers, get_body = call(make_app(), "/health")
    status, headers, body = call(make_app(), "/health", method="HEAD")
    assert status == 200
    assert body == b""
    assert headers["Content-Length"] == get_headers["Content-Length"] == str(len(get_body))


# -- / ---------------------------------------------------------------------------------


def test_home_page_shows_headline_and_news_in_the_order_given(fake_db, make_app):
    fake_db.news = [
        ("Newest", "Second body", datetime.datetime(2024, 6, 7, 17, 15)),
        ("Oldest", "First body", datetime.datetime(2024, 3, 2, 9, 0)),
    ]
    status, headers, body = call(make_app(), "/")
    page = body.decode("utf-8")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["X-App-Version"] == "1.4.2"
    assert "<title>Montaiguillon</title>" in page
    assert f"<h1>{content.HEADLINE}</h1>" in page
    assert page.index("Newest") < page.index("Oldest") > page.index(content.HEADLINE)
    assert '<time datetime="2024-06-07">' in page
    assert fake_db.connections[0].closed


def test_headline_comes_from_the_content_module(fake_db, make_app, monkeypatch):
    monkeypatch.setattr(content, "HEADLINE", "Release 2 is live")
    _, _, body = call(make_app(), "/")
    assert "<h1>Release 2 is live</h1>" in body.decode("utf-8")


def test_news_text_is_escaped(fake_db, make_app):
    fake_db.news = [("<script>alert(1)</script>", "Fish & chips", None)]
    _, _, body = call(make_app(), "/")
    page = body.decode("utf-8")
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Fish &amp; chips" in page


def test_home_page_without_news(make_app):
    status, _, body = call(make_app(), "/")
    assert status == 200
    assert content.NO_NEWS in body.decode("utf-8")


def test_home_page_is_503_when_database_is_down(fake_db, make_app):
    fake_db.reachable = False
    status, headers, body = call(make_app(), "/")
    page = body.decode("utf-8")
    assert status == 503
    assert headers["X-App-Version"] == "1.4.2"
    assert content.NEWS_UNAVAILABLE in page
    assert content.HEADLINE in page


def test_home_page_is_503_when_news_table_is_missing(fake_db, make_app):
    fake_db.fail_on = "FROM news"
    status, _, _ = call(make_app(), "/")
    assert status == 503
    assert fake_db.connections[0].closed
