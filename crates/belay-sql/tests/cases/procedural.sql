-- DO blocks, function and procedure bodies, rules and triggers.

-- expect: destructive
DO $$ BEGIN DELETE FROM payments; END $$

-- expect: read
DO $$ DECLARE n int; BEGIN SELECT count(*) INTO n FROM rentals; RAISE NOTICE '%', n; END $$

-- expect: unknown
DO $$ BEGIN EXECUTE 'DROP TABLE ' || quote_ident('payments'); END $$

-- expect: destructive
DO $$ BEGIN EXECUTE 'DROP TABLE payments'; END $$

-- expect: write
DO $$ BEGIN IF purge_due() THEN RAISE NOTICE 'due'; END IF; END $$

-- expect: admin
DO LANGUAGE plpython3u $$ import os; os.system('rm -rf /') $$

-- expect: unknown
DO LANGUAGE plperl $$ my $x = 1; $$

-- expect: destructive
CREATE FUNCTION wipe() RETURNS void LANGUAGE sql AS 'DELETE FROM payments'

-- expect: destructive
CREATE OR REPLACE FUNCTION purge() RETURNS void LANGUAGE plpgsql AS $body$
DECLARE r record;
BEGIN
  FOR r IN SELECT id FROM rentals WHERE returned_at < now() - interval '1 year' LOOP
    UPDATE vehicles SET status = 'free' WHERE id = r.id;
  END LOOP;
  TRUNCATE payments;
END
$body$

-- expect: ddl
CREATE FUNCTION full_name(c customers) RETURNS text LANGUAGE sql IMMUTABLE
AS $$ SELECT c.first_name || ' ' || c.last_name $$

-- expect: ddl
CREATE FUNCTION add_one(x int) RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT x + 1; END

-- expect: destructive
CREATE PROCEDURE reset_all() LANGUAGE sql BEGIN ATOMIC DELETE FROM rentals; END

-- expect: unknown
CREATE FUNCTION run(q text) RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE q; END $$

-- expect: privilege
CREATE FUNCTION elevate() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 1'

-- expect: admin
CREATE FUNCTION sh(text) RETURNS int AS '/usr/lib/evil.so', 'sh' LANGUAGE c

-- expect: ddl
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at := now(); RETURN NEW; END $$

-- expect: ddl
CREATE TRIGGER touch BEFORE UPDATE ON vehicles FOR EACH ROW EXECUTE FUNCTION touch()

-- expect: destructive
CREATE RULE wipe_on_insert AS ON INSERT TO rentals DO ALSO DELETE FROM payments

-- expect: ddl
CREATE RULE keep AS ON UPDATE TO vehicles DO INSTEAD NOTHING

-- expect: write
CALL purge_old_rentals()

-- expect: admin
CREATE EVENT TRIGGER audit_ddl ON ddl_command_end EXECUTE FUNCTION log_ddl()

-- The server looks a language up by its exact name: a quoted `"PLPGSQL"` is not plpgsql.

-- expect: unknown
DO LANGUAGE "PLPGSQL" $$ BEGIN PERFORM 1; END $$
