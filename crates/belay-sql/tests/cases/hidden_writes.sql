-- Writes hidden inside statements that look like reads.

-- expect: destructive
WITH gone AS (DELETE FROM rentals RETURNING id) SELECT count(*) FROM gone

-- expect: write
WITH moved AS (UPDATE vehicles SET status = 'service' WHERE id = 4 RETURNING id)
SELECT * FROM moved

-- expect: read
WITH recent AS (SELECT * FROM rentals WHERE started_at > now() - interval '1 day'),
     busy AS (SELECT vehicle_id FROM recent GROUP BY vehicle_id)
SELECT v.plate FROM vehicles v JOIN busy b ON b.vehicle_id = v.id

-- expect: write
SELECT * FROM customers WHERE id IN (SELECT customer_id FROM rentals WHERE nextval('audit_seq') > 0)

-- expect: write
SELECT (SELECT purge_old_rentals()) AS purged

-- expect: destructive
EXPLAIN (ANALYZE, BUFFERS) DELETE FROM rentals

-- expect: write
EXPLAIN ANALYZE UPDATE vehicles SET status = 'lost' WHERE id = 9

-- expect: read
EXPLAIN DELETE FROM rentals

-- expect: read
EXPLAIN (ANALYZE) SELECT * FROM rentals WHERE id = 3

-- expect: destructive
PREPARE wipe AS DELETE FROM payments; EXECUTE wipe

-- expect: write
PREPARE fix(int) AS UPDATE vehicles SET status = 'ok' WHERE id = $1; EXECUTE fix(3)

-- expect: unknown
EXECUTE statement_prepared_elsewhere

-- expect: destructive
PREPARE wipe AS DELETE FROM payments; EXPLAIN ANALYZE EXECUTE wipe

-- expect: ddl
SELECT * INTO vehicles_backup FROM vehicles

-- expect: destructive
MERGE INTO vehicles v USING retired r ON v.id = r.id WHEN MATCHED THEN DELETE

-- expect: write
MERGE INTO vehicles v USING incoming i ON v.id = i.id
WHEN MATCHED THEN UPDATE SET plate = i.plate
WHEN NOT MATCHED THEN INSERT (id, plate) VALUES (i.id, i.plate)

-- expect: destructive
MERGE INTO vehicles v USING incoming i ON true WHEN MATCHED THEN UPDATE SET plate = i.plate

-- expect: write
INSERT INTO customers (id, email) VALUES (5, 'x@y.z') ON CONFLICT (id) DO UPDATE SET email = excluded.email

-- expect: destructive
SELECT 1; DELETE FROM rentals

-- expect: destructive
select 1; select 2; truncate payments; select 3

-- expect: write
SELECT * FROM vehicles FOR UPDATE SKIP LOCKED

-- expect: destructive
DECLARE c CURSOR FOR SELECT 1; WITH x AS (DELETE FROM payments WHERE true RETURNING *) SELECT * FROM x
