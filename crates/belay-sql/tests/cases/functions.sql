-- Function calls: read-only built-ins, dangerous built-ins, and everything else.

-- expect: read
SELECT upper(plate), length(plate), coalesce(color, 'n/a'), now(), count(*) OVER () FROM vehicles

-- expect: read
SELECT jsonb_build_object('id', id, 'plate', plate) FROM vehicles WHERE plate ~* '^ab'

-- expect: write
SELECT public.upper(plate) FROM vehicles

-- expect: write
SELECT recalculate_invoices(42)

-- expect: write
SELECT * FROM vehicles WHERE plate === 'AB-123'

-- expect: admin
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app'

-- expect: admin
SELECT pg_reload_conf()

-- expect: admin
SELECT lo_import('/etc/passwd')

-- expect: destructive
SELECT lo_unlink(16401)

-- expect: write
SELECT lo_create(0)

-- expect: admin
SELECT pg_read_file('/etc/passwd')

-- expect: admin
SELECT * FROM dblink('host=prod', 'DELETE FROM payments') AS t(x int)

-- expect: admin
SELECT public.dblink_exec('host=prod', 'DROP TABLE payments')

-- expect: privilege
SELECT set_config('role', 'admin', false)

-- expect: privilege
SELECT set_config('default_transaction_read_only', 'off', false)

-- expect: read
SELECT set_config('app.tenant_id', '42', true)

-- expect: admin
SELECT set_config(name, 'x', false) FROM settings_to_apply

-- expect: write
SELECT pg_advisory_lock(42)

-- A pool's reset releases only the session's own locks and state.
-- expect: read
SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL

-- expect: write
SELECT setval('rentals_id_seq', 1000)

-- expect: write
SELECT pg_notify('channel', 'hello')

-- expect: destructive
SELECT query_to_xml('DELETE FROM payments RETURNING *', true, false, '')

-- expect: unknown
SELECT query_to_xml(q, true, false, '') FROM queued_reports

-- A plain EXPLAIN plans, and planning runs IMMUTABLE and STABLE functions with constant
-- arguments: it is what it calls.

-- expect: write
EXPLAIN SELECT my_immutable_function(1)

-- expect: write
EXPLAIN SELECT * FROM items WHERE id = my_schema.lookup('x')

-- expect: read
EXPLAIN SELECT lower('X'), now()

-- Operators are named in more places than binary expressions.

-- expect: write
SELECT * FROM items WHERE id OPERATOR(public.===) ANY (SELECT id FROM other)

-- expect: write
SELECT * FROM items ORDER BY name USING OPERATOR(public.<<<)

-- expect: write
SELECT * FROM items WHERE name OPERATOR(public.~~~) 'x'

-- expect: read
SELECT * FROM items WHERE id = ANY (SELECT id FROM other) ORDER BY name USING <

-- expect: read
SELECT * FROM items WHERE name LIKE 'a%' AND id IN (1, 2) AND name IS DISTINCT FROM 'b'
