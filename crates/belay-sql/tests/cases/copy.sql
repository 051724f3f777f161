-- COPY: the client's stream versus the server's files and programs.

-- expect: write
COPY vehicles FROM STDIN

-- expect: read
COPY vehicles TO STDOUT

-- expect: read
COPY (SELECT id, plate FROM vehicles WHERE status = 'free') TO STDOUT WITH (FORMAT csv)

-- expect: destructive
COPY (DELETE FROM payments RETURNING *) TO STDOUT

-- expect: admin
COPY payments TO PROGRAM 'gzip > /tmp/p.gz'

-- expect: admin
COPY payments FROM '/var/lib/postgresql/payments.csv'

-- expect: admin
COPY (SELECT * FROM customers) TO '/tmp/customers.csv'
