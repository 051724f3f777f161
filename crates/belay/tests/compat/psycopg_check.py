"""psycopg 3 through the belay gateway: simple queries, server-side prepared statements,
transactions, and refusals with their SQLSTATE. Usage: psycopg_check.py STAGING_URL PRODUCTION_URL"""

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
