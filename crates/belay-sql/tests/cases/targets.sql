-- Cluster-level objects a statement names: each is recorded so that the gateway can resolve
-- it to its environment (a database, role, tablespace or subscription of another
-- environment on the same server is a foreign target).

-- expect: destructive
DROP DATABASE IF EXISTS production WITH (FORCE)

-- expect: ddl
COMMENT ON DATABASE production IS 'owned'

-- expect: admin
ALTER DATABASE production CONNECTION LIMIT 0

-- expect: admin
ALTER DATABASE production SET statement_timeout = 0

-- expect: admin
ALTER DATABASE production SET TABLESPACE fast

-- expect: ddl
ALTER DATABASE production RENAME TO old_production

-- expect: privilege
ALTER DATABASE production OWNER TO intruder

-- expect: ddl
CREATE DATABASE copy_of_prod TEMPLATE production

-- expect: privilege
GRANT CONNECT ON DATABASE production TO staging_role

-- expect: privilege
REVOKE ALL ON DATABASE production FROM PUBLIC

-- expect: ddl
REINDEX DATABASE production

-- expect: privilege
ALTER ROLE app IN DATABASE production SET search_path = public

-- expect: privilege
SECURITY LABEL FOR selinux ON DATABASE production IS 'system_u:object_r:sepgsql_db_t:s0'

-- expect: privilege
DROP ROLE production_owner

-- expect: privilege
GRANT production_owner TO staging_agent

-- expect: privilege
CREATE ROLE newcomer LOGIN

-- expect: privilege
ALTER ROLE production_owner RENAME TO gone

-- expect: ddl
CREATE TABLE t (id int) TABLESPACE production_space

-- expect: admin
DROP TABLESPACE production_space

-- expect: admin
ALTER TABLE ALL IN TABLESPACE production_space SET TABLESPACE pg_default

-- expect: admin
DROP SUBSCRIPTION production_feed

-- expect: ddl
COMMENT ON TABLESPACE production_space IS 'x'
