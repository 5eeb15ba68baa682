from __future__ import annotations

import sqlalchemy as sa


def test_postgres_url_connects_to_a_fresh_empty_database(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("select 1")).scalar_one() == 1
            assert int(conn.execute(sa.text("show server_version_num")).scalar_one()) >= 150000
            assert sa.inspect(conn).get_table_names() == []
            conn.execute(sa.text("create table leftover (id int)"))
            conn.commit()
    finally:
        engine.dispose()


def test_each_test_gets_its_own_database(postgres_server, postgres_url: str) -> None:
    # The previous test left a table behind; this database must not see it.
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert sa.inspect(conn).get_table_names() == []
            name = conn.execute(sa.text("select current_database()")).scalar_one()
        assert postgres_url == postgres_server.url(name)
        assert postgres_server.host == "127.0.0.1"
        assert postgres_server.user == "postgres"
    finally:
        engine.dispose()


def test_create_database_returns_a_working_url(postgres_server) -> None:
    url = postgres_server.create_database("fixture_helper_check")
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("select current_database()")).scalar_one() == (
                "fixture_helper_check"
            )
    finally:
        engine.dispose()
        postgres_server.drop_database("fixture_helper_check")
