"""psycopg 3 through the belay gateway: simple queries, server-side prepared statements,
transactions, pipelines (one that aborts, one with a refusal in it), COPY both ways, and
refusals with their SQLSTATE, the client rolling back and going on.
Usage: psycopg_check.py STAGING_URL PRODUCTION_URL"""

import sys

import psycopg

staging, production = sys.argv[1], sys.argv[2]

with psycopg.connect(staging, autocommit=True) as conn:
    assert conn.execute("SELECT count(*) FROM customers").fetchone()[0] == 2000
    # Server-side prepared statements: prepare=True makes psycopg Parse a named statement once
    # and Bind/Execute it after.
    for i in range(5):
        row = conn.execute("SELECT name FROM customers WHERE id = %s", (i + 1,), prepare=True).fetchone()
        assert row[0] == f"Customer {i + 1}", row
    conn.execute("INSERT INTO vehicles (plate, model, daily_rate) VALUES (%s, %s, %s)", ("PSY-1", "Test", 10))
    assert conn.execute("DELETE FROM vehicles WHERE plate = %s", ("PSY-1",)).rowcount == 1

    # Pipeline mode: the server skips to the next Sync after an error, and so does belay.
    conn.execute("CREATE TABLE IF NOT EXISTS psy_pipe (id int PRIMARY KEY)")
    try:
        with conn.pipeline() as p:
            conn.execute("INSERT INTO psy_pipe VALUES (1) ON CONFLICT DO NOTHING")
            conn.execute("SELECT 1 / 0")
            conn.execute("SELECT 2")
            p.sync()
        raise SystemExit("the pipeline's error did not come back")
    except psycopg.errors.DivisionByZero:
        pass
    assert conn.execute("SELECT 42").fetchone()[0] == 42
    # A statement belay refuses inside a pipeline fails it there, as a server error would.
    try:
        with conn.pipeline():
            conn.execute("SELECT 1")
            conn.execute("SELECT pg_terminate_backend(1)")
            conn.execute("SELECT 3")
        raise SystemExit("pg_terminate_backend in a pipeline was not refused")
    except psycopg.errors.InsufficientPrivilege:
        pass
    assert conn.execute("SELECT 43").fetchone()[0] == 43
    # SQL PREPARE and an EXECUTE of it sent together, before the first answer (libpq's
    # pipeline mode, as psql 16's \startpipeline sends them).
    with conn.pipeline():
        conn.execute("PREPARE psy_p AS SELECT 1 + $1::int")
        cur = conn.execute("EXECUTE psy_p(41)")
    assert cur.fetchone()[0] == 42
    conn.execute("DEALLOCATE psy_p")
    with conn.pipeline():
        for i in range(2, 12):
            conn.execute("INSERT INTO psy_pipe VALUES (%s) ON CONFLICT DO NOTHING", (i,))
    # The aborted pipeline's INSERT went with its implicit transaction, as on the server.
    assert conn.execute("SELECT count(*) FROM psy_pipe").fetchone()[0] == 10

    # COPY in and out.
    with conn.cursor() as cur:
        with cur.copy("COPY psy_pipe (id) FROM STDIN") as copy:
            for i in range(100, 150):
                copy.write_row((i,))
        out = []
        with cur.copy("COPY (SELECT id FROM psy_pipe WHERE id >= 100 ORDER BY id) TO STDOUT") as copy:
            for row in copy.rows():
                out.append(int(row[0]))
        assert out == list(range(100, 150)), out
    conn.execute("DROP TABLE psy_pipe")

# A transaction with a refused write: the client rolls back and goes on.
with psycopg.connect(staging) as conn:
    conn.execute("SELECT count(*) FROM customers")
    try:
        conn.execute("SELECT pg_terminate_backend(1)")
        raise SystemExit("pg_terminate_backend was not refused")
    except psycopg.errors.InsufficientPrivilege:
        conn.rollback()
    conn.execute("UPDATE vehicles SET daily_rate = daily_rate WHERE id = 1")
    conn.commit()

with psycopg.connect(production) as conn:
    assert conn.execute("SELECT count(*) FROM vehicles").fetchone()[0] == 300
    try:
        conn.execute("DROP TABLE payments")
        raise SystemExit("DROP TABLE in production was not refused")
    except psycopg.Error as e:
        assert e.sqlstate == "YB001", e.sqlstate
        assert "DROP TABLE" in str(e), str(e)
    # The refusal left the transaction failed, as a server error would.
    try:
        conn.execute("SELECT 1")
        raise SystemExit("the transaction was not failed")
    except psycopg.errors.InFailedSqlTransaction:
        pass
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM payments").fetchone()[0] == 4000

print("psycopg ok")
