-- Reaching outside the database: the server's configuration, files, code and replication.

-- expect: admin
ALTER SYSTEM SET max_connections = 5

-- expect: admin
CREATE EXTENSION postgres_fdw

-- expect: admin
CHECKPOINT

-- expect: admin
LOAD 'auto_explain'

-- expect: admin
CREATE TABLESPACE fast LOCATION '/mnt/fast'

-- expect: admin
CREATE SUBSCRIPTION sub CONNECTION 'host=elsewhere' PUBLICATION pub

-- expect: admin
CREATE SERVER other FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'elsewhere')

-- expect: privilege
GRANT SELECT ON payments TO reporting

-- expect: privilege
CREATE ROLE helper LOGIN PASSWORD 'x'

-- expect: privilege
ALTER DEFAULT PRIVILEGES GRANT ALL ON TABLES TO PUBLIC

-- expect: privilege
CREATE POLICY everyone ON payments USING (true)
