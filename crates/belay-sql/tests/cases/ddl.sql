-- Schema changes, and the ones that lose data.

-- expect: ddl
CREATE TABLE damage_reports (id bigserial PRIMARY KEY, vehicle_id bigint REFERENCES vehicles (id), note text)

-- expect: ddl
ALTER TABLE vehicles ADD COLUMN mileage integer DEFAULT 0

-- expect: ddl
CREATE INDEX CONCURRENTLY vehicles_plate_idx ON vehicles (plate)

-- expect: ddl
DROP INDEX vehicles_plate_idx

-- expect: destructive
DROP INDEX vehicles_plate_idx CASCADE

-- expect: destructive
DROP TABLE IF EXISTS public.payments, billing.invoices

-- expect: destructive
ALTER TABLE customers DROP COLUMN phone

-- A type change rewrites every value: a cast or USING expression can lose the data.
-- expect: destructive
ALTER TABLE payments ALTER COLUMN amount TYPE integer

-- expect: destructive
ALTER TABLE payments ALTER COLUMN amount TYPE numeric(10,2) USING NULL

-- expect: destructive
DROP SCHEMA billing CASCADE

-- expect: destructive
DROP DATABASE rentals_prod

-- expect: destructive
TRUNCATE ONLY rentals RESTART IDENTITY CASCADE

-- expect: destructive
DROP OWNED BY app_user

-- expect: ddl
CREATE TABLE rentals_2024 PARTITION OF rentals FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')

-- expect: ddl
VACUUM (ANALYZE) rentals

-- expect: ddl
COMMENT ON TABLE vehicles IS 'fleet'

-- expect: ddl
ALTER TABLE rentals RENAME TO old_rentals

-- expect: privilege
ALTER TABLE payments DISABLE ROW LEVEL SECURITY

-- expect: admin
ALTER TABLE payments DISABLE TRIGGER ALL

-- expect: privilege
ALTER TABLE payments OWNER TO intruder

-- expect: ddl
CREATE SCHEMA reporting CREATE TABLE daily (d date) CREATE VIEW v AS SELECT * FROM daily

-- expect: privilege
CREATE SCHEMA reporting CREATE TABLE daily (d date) GRANT SELECT ON daily TO PUBLIC

-- A relation made with a system catalog's prefix is made in the user's schema: the server
-- never creates one in pg_catalog for a client.
-- expect: ddl
CREATE UNLOGGED TABLE pg_pipeline (id serial PRIMARY KEY, itemno integer)

-- expect: ddl
CREATE VIEW pg_recent AS SELECT 1 AS one

-- expect: ddl
SELECT 1 AS one INTO pg_scratch

-- But a write to a name that may be a catalog's is still the server's.
-- expect: admin
INSERT INTO pg_pipeline (itemno) VALUES (1)
