"""Storage review (session 16): storage/db.py as a user's DATABASE_URL and an older workspace meet it."""

from __future__ import annotations

import pytest

from storage import db


def test_a_password_with_an_unescaped_at_sign_is_refused_without_its_tail_in_the_message(monkeypatch):
    # make_url reads "s3cr" as the password and "t-pw@127.0.0.1" as the host: the message named that host ("could
    # not connect to PostgreSQL at t-pw@127.0.0.1:1/x ... failed to resolve host 't-pw@127.0.0.1'"), half the
    # password, in the page's error box, the CLI's stderr and the worker's log
    url = "postgresql+psycopg://alice:s3cr@t-pw@127.0.0.1:1/x"
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(db.DatabaseUnavailable) as err:
        db.init_db()
    assert "t-pw" not in str(err.value) and "s3cr" not in str(err.value)
    assert str(err.value) == ("DATABASE_URL's password holds an '@': write it as %40 "
                              "(postgresql+psycopg://user:p%40ss@host:5432/dbname)")
    # escaped, the same password is a password: the URL reaches the connection attempt (refused at port 1)
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://alice:s3cr%40t-pw@127.0.0.1:1/x")
    with pytest.raises(db.DatabaseUnavailable) as err:
        db.init_db()
    assert str(err.value).startswith("could not connect to PostgreSQL at 127.0.0.1:1/x as alice:")
    assert "s3cr" not in str(err.value) and "t-pw" not in str(err.value)


def test_describe_never_shows_a_password_tail_read_as_the_host():
    assert db.describe("postgresql+psycopg://alice:s3cr@t-pw@db.example:5432/x") == "db.example:5432/x as alice"
    assert db.describe("postgresql+psycopg://alice:pw@db.example:5432/x") == "db.example:5432/x as alice"


def test_a_mistyped_url_option_is_a_message_and_exit_code_2_not_a_traceback(monkeypatch, capsys):
    # psycopg refuses an unknown option (?sslmod= for ?sslmode=) with ProgrammingError, which do_connect let
    # through: `jobs list` printed a 127-line traceback and exited 1, the page showed a traceback
    from backend.__main__ import main

    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://alice:hunter2@127.0.0.1:1/x?sslmod=require")
    assert main(["jobs", "list"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ('error: could not connect to PostgreSQL at 127.0.0.1:1/x as alice: invalid connection '
                           'option "sslmod"; check DATABASE_URL')


SOLAR = dict(num_parameters=10_731_524_096, size_bytes=21_463_048_192)  # SOLAR 10.7B in bf16


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
def test_a_model_over_2_gib_is_registered_on_either_database(workspace):
    # PostgreSQL: num_parameters and size_bytes were INTEGER (32 bits), so storing the row of any model of 2 GiB
    # or more failed with "integer out of range": on a shared database no SOLAR-sized model could be registered
    from sqlmodel import select

    from storage.models import ModelRecord

    with db.session() as s:
        s.add(ModelRecord(name="solar", path="/x", kind="upscaled", **SOLAR))
        s.commit()
    with db.session() as s:
        rec = s.exec(select(ModelRecord).where(ModelRecord.name == "solar")).one()
    assert (rec.num_parameters, rec.size_bytes) == (SOLAR["num_parameters"], SOLAR["size_bytes"])


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_an_older_postgresql_database_has_its_32_bit_size_columns_widened(workspace):
    import sqlalchemy as sa
    from sqlmodel import select

    from storage.models import ModelRecord

    with db.init_db().begin() as conn:  # what an older release made: INTEGER columns, with a row in them
        for col in ("num_parameters", "size_bytes"):
            conn.exec_driver_sql(f"ALTER TABLE models ALTER COLUMN {col} TYPE integer")
        conn.exec_driver_sql("INSERT INTO models (name, path, kind, source, architecture, model_type, num_layers, "
                             "hidden_size, num_parameters, dtype, size_bytes, parents, recipe, created) VALUES "
                             "('old', '/x', 'base', '', '', 'llama', 2, 8, 10, 'float32', 40, '[]', '{}', now())")
    db._ready.cache_clear()  # a new process opening the old database
    with db.session() as s:
        s.add(ModelRecord(name="solar", path="/y", kind="upscaled", **SOLAR))
        s.commit()
        rows = [(r.name, r.num_parameters, r.size_bytes) for r in s.exec(select(ModelRecord).order_by(ModelRecord.id))]
    assert rows == [("old", 10, 40), ("solar", SOLAR["num_parameters"], SOLAR["size_bytes"])]
    types = {c["name"]: type(c["type"]) for c in sa.inspect(db.engine()).get_columns("models")}
    assert issubclass(types["num_parameters"], sa.BigInteger) and issubclass(types["size_bytes"], sa.BigInteger)
    assert db.upgrade_schema(db.engine()) == []  # nothing left to widen
