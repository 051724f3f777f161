-- Settings that change identity, read-only mode, logging or parsing, and those that do not.

-- expect: privilege
SET ROLE admin

-- expect: privilege
RESET ROLE

-- expect: privilege
SET SESSION AUTHORIZATION postgres

-- expect: privilege
SET default_transaction_read_only = off

-- expect: read
SET default_transaction_read_only = on

-- expect: privilege
SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE

-- expect: privilege
BEGIN READ WRITE

-- expect: privilege
START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE

-- expect: read
BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY

-- expect: privilege
SET TRANSACTION READ WRITE

-- expect: admin
SET session_replication_role = 'replica'

-- expect: admin
SET LOCAL statement_timeout = 0

-- expect: admin
SET standard_conforming_strings = off

-- expect: admin
SET client_encoding = 'SJIS'

-- expect: admin
SET search_path = public, pg_catalog

-- expect: read
SET search_path = app, public

-- expect: read
SET TIME ZONE 'UTC'

-- expect: read
SET application_settings.tenant = '42'

-- expect: read
SHOW statement_timeout

-- expect: read
BEGIN; SELECT 1; COMMIT

-- expect: admin
PREPARE TRANSACTION 'xfer-1'

-- expect: read
DISCARD ALL
