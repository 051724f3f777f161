"""asyncpg, psycopg 2 and SQLAlchemy with Alembic through the belay gateway, each: connect,
reads, a prepared statement used past the driver's threshold, a refused statement inside a
transaction with the client rolling back and going on, and reconnecting. Besides: asyncpg's
named statements, type introspection, pool reset and `copy_records_to_table`; psycopg 2's
server-side cursors; SQLAlchemy's reflection of production by a read-only agent, startup
`options` from `connect_args`, and an Alembic migration in staging.
Usage: python_drivers_check.py STAGING_URL PRODUCTION_URL"""

import asyncio
import sys

import asyncpg
import psycopg2
import psycopg2.errors
import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations

staging, production = sys.argv[1], sys.argv[2]


async def with_asyncpg():
    conn = await asyncpg.connect(staging)
    assert await conn.fetchval("SELECT count(*) FROM customers") == 2000
    # A named statement, executed past asyncpg's cache threshold.
    stmt = await conn.prepare("SELECT name FROM customers WHERE id = $1")
    for i in range(1, 12):
        assert await stmt.fetchval(i) == f"Customer {i}"
    # Type introspection: asyncpg asks the catalog about a type it does not know.
    await conn.execute("DROP TYPE IF EXISTS apg_mood; CREATE TYPE apg_mood AS ENUM ('calm', 'busy')")
    assert await conn.fetchval("SELECT 'busy'::apg_mood") == "busy"
    assert await conn.fetchval("SELECT ARRAY['calm', 'busy']::apg_mood[]") == ["calm", "busy"]
    # Binary COPY from Python records.
    await conn.execute("DROP TABLE IF EXISTS apg_copy; CREATE TABLE apg_copy (id int, note text)")
    await conn.copy_records_to_table("apg_copy", records=[(i, f"n{i}") for i in range(100)])
    assert await conn.fetchval("SELECT count(*) FROM apg_copy") == 100
    # Refused inside a transaction: rolled back, and the connection goes on.
    tr = conn.transaction()
    await tr.start()
    try:
        await conn.execute("SELECT pg_terminate_backend(1)")
        raise SystemExit("asyncpg: pg_terminate_backend was not refused")
    except asyncpg.exceptions.InsufficientPrivilegeError:
        await tr.rollback()
    await conn.execute("DROP TABLE apg_copy; DROP TYPE apg_mood")
    await conn.close()
    # A pool: its reset (`SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`)
    # runs when a connection goes back.
    pool = await asyncpg.create_pool(staging, min_size=1, max_size=1)
    async with pool.acquire() as c:
        await c.execute("LISTEN apg_channel")
        await c.execute("SET work_mem = '8MB'")
    async with pool.acquire() as c:
        assert await c.fetchval("SHOW work_mem") != "8MB", "the pool's reset ran"
    await pool.close()
    # Reconnect, and production refuses a write for an agent granted only read.
    conn = await asyncpg.connect(production)
    assert await conn.fetchval("SELECT count(*) FROM vehicles") == 300
    try:
        await conn.execute("DELETE FROM payments WHERE id = 1")
        raise SystemExit("asyncpg: a production write was not held")
    except asyncpg.PostgresError as e:
        assert e.sqlstate in ("YB001", "42501"), e.sqlstate
    await conn.close()


def with_psycopg2():
    conn = psycopg2.connect(staging)
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM customers")
    assert cur.fetchone()[0] == 2000
    # SQL-level PREPARE and EXECUTE, past any threshold.
    cur.execute("PREPARE p2 (int) AS SELECT name FROM customers WHERE id = $1")
    for i in range(1, 8):
        cur.execute("EXECUTE p2 (%s)", (i,))
        assert cur.fetchone()[0] == f"Customer {i}"
    # A server-side cursor (DECLARE and FETCH).
    named = conn.cursor(name="psy2_cursor")
    named.itersize = 100
    named.execute("SELECT id FROM customers ORDER BY id")
    assert sum(1 for _ in named) == 2000
    named.close()
    # Refused inside the transaction psycopg 2 opens: rolled back, and it goes on.
    try:
        cur.execute("SELECT pg_terminate_backend(1)")
        raise SystemExit("psycopg2: pg_terminate_backend was not refused")
    except psycopg2.errors.InsufficientPrivilege:
        conn.rollback()
    cur.execute("UPDATE vehicles SET daily_rate = daily_rate WHERE id = 1")
    conn.commit()
    conn.close()
    conn = psycopg2.connect(staging)
    conn.cursor().execute("SELECT 1")
    conn.close()


def with_sqlalchemy():
    def url(u):
        return u.replace("postgres://", "postgresql+psycopg2://", 1)

    # Startup options, as `connect_args` passes them.
    engine = sa.create_engine(url(staging), connect_args={"options": "-c statement_timeout=5000"})
    with engine.connect() as conn:
        assert conn.execute(sa.text("SHOW statement_timeout")).scalar() == "5s"
        assert conn.execute(sa.text("SELECT count(*) FROM customers")).scalar() == 2000
        for i in range(1, 6):
            name = conn.execute(sa.text("SELECT name FROM customers WHERE id = :id"), {"id": i}).scalar()
            assert name == f"Customer {i}"
    # An Alembic migration in staging, in one transaction.
    with engine.begin() as conn:
        op = Operations(MigrationContext.configure(conn))
        op.execute("DROP TABLE IF EXISTS alembic_probe")
        op.create_table(
            "alembic_probe",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("name", sa.String(50), nullable=False),
        )
        op.add_column("alembic_probe", sa.Column("note", sa.Text))
        op.create_index("ix_alembic_probe_name", "alembic_probe", ["name"])
        op.bulk_insert(
            sa.table("alembic_probe", sa.column("id"), sa.column("name")),
            [{"id": i, "name": f"probe {i}"} for i in range(10)],
        )
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM alembic_probe")).scalar() == 10
        columns = [c["name"] for c in sa.inspect(conn).get_columns("alembic_probe")]
        assert columns == ["id", "name", "note"], columns
    with engine.begin() as conn:
        Operations(MigrationContext.configure(conn)).drop_table("alembic_probe")
    # Reflection of production by a read-only agent: catalog queries only.
    prod = sa.create_engine(url(production))
    inspector = sa.inspect(prod)
    tables = inspector.get_table_names()
    assert "vehicles" in tables and "payments" in tables, tables
    for table in tables:
        inspector.get_columns(table)
        inspector.get_pk_constraint(table)
        inspector.get_foreign_keys(table)
        inspector.get_indexes(table)
    meta = sa.MetaData()
    meta.reflect(bind=prod)
    with prod.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(meta.tables["vehicles"])).scalar() == 300
        try:
            conn.execute(sa.text("DELETE FROM payments WHERE id = 1"))
            raise SystemExit("SQLAlchemy: a production write was not held")
        except sa.exc.DBAPIError as e:
            assert e.orig.pgcode in ("YB001", "42501"), e.orig.pgcode
            conn.rollback()
        assert conn.execute(sa.text("SELECT count(*) FROM payments")).scalar() == 4000
    engine.dispose()
    prod.dispose()


asyncio.run(with_asyncpg())
print("asyncpg ok")
with_psycopg2()
print("psycopg2 ok")
with_sqlalchemy()
print("sqlalchemy and alembic ok")
