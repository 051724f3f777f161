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

-- recorded: the gateway lowers a limit turned off to the environment's cap
-- expect: read
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

-- Client encodings: refused by every name PostgreSQL accepts for one that can hide a
-- backslash or quote in a multi-byte character, and whenever belay cannot read the value.

-- expect: admin
SET client_encoding = 'windows932'

-- expect: admin
SET NAMES 'Windows-936'

-- expect: admin
SET client_encoding TO win949

-- expect: admin
SET LOCAL client_encoding = 'WINDOWS950'

-- expect: admin
SELECT set_config('client_encoding', 'windows932', false)

-- expect: admin
SELECT set_config('client_encoding', 'WIN' || '932', false)

-- expect: admin
SELECT set_config('client_encoding', $1, false)

-- expect: admin
SELECT set_config(new_value => 'SJIS', setting_name => 'client_encoding', is_local => false)

-- expect: admin
SELECT set_config(setting_name => 'client_encoding', new_value => current_setting('x.enc'), is_local => false)

-- expect: admin
SELECT pg_catalog.set_config('CLIENT_ENCODING', 'BIG5', true)

-- expect: read
SET client_encoding = 'LATIN9'

-- expect: read
SET NAMES 'UTF8'

-- expect: read
SELECT set_config('client_encoding', 'utf-8', false)

-- expect: read
RESET client_encoding

-- A pinned or safety setting given a value belay cannot read is the worst value.

-- expect: admin
SELECT set_config('standard_conforming_strings', lower('OFF'), false)

-- expect: privilege
SELECT set_config('transaction_read_only', $1, false)

-- expect: admin
SELECT set_config('search_path', 'pg_temp,' || 'public', false)

-- expect: admin
SELECT set_config('statement_timeout', (SELECT '0'), false)

-- Resource settings and timeouts: the environment caps them (the gateway checks the
-- values); turning a timeout off, or a value belay cannot read, is refused here.

-- expect: read
SET work_mem = '64MB'

-- expect: read
SET statement_timeout = '30s'

-- expect: read
SET LOCAL lock_timeout = '5s'

-- recorded: the gateway lowers a limit turned off to the environment's cap
-- expect: read
SET idle_in_transaction_session_timeout = 0

-- recorded: the gateway lowers a limit turned off to the environment's cap
-- expect: read
SET lock_timeout = '0s'

-- expect: admin
SET work_mem = '0x100000'

-- expect: admin
SELECT set_config('work_mem', repeat('9', 3) || 'GB', false)

-- expect: admin
SET default_tablespace = 'fast_ssd'

-- expect: read
SET default_tablespace = ''

-- Writes to the system catalog are the settings or catalog changes they stand for.

-- expect: admin
UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'

-- expect: admin
UPDATE pg_catalog.pg_settings SET setting = '0' WHERE name = 'statement_timeout'

-- expect: admin
WITH s AS (UPDATE pg_settings SET setting = '0' WHERE name = 'lock_timeout' RETURNING 1) SELECT * FROM s

-- expect: admin
INSERT INTO pg_catalog.pg_description VALUES (1, 2, 0, 'x')

-- expect: admin
DELETE FROM information_schema.sql_features WHERE true

-- expect: read
SELECT name, setting FROM pg_settings WHERE name = 'work_mem'
