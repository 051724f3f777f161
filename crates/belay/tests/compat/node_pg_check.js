// node-postgres through the belay gateway: simple and parameterised queries (the extended
// protocol), a named prepared statement, a pool, and refusals (one inside a transaction,
// rolled back). Usage: node node_pg_check.js STAGING PRODUCTION
const { Client, Pool } = require('pg');
const assert = require('assert');

async function main() {
  const [staging, production] = process.argv.slice(2);
  const s = new Client({ connectionString: staging });
  await s.connect();
  assert.strictEqual((await s.query('SELECT count(*)::int AS n FROM rentals')).rows[0].n, 5000);
  const r = await s.query('SELECT model FROM vehicles WHERE id = $1', [2]);
  assert.strictEqual(r.rows.length, 1);
  for (let i = 1; i <= 3; i++) {
    const named = await s.query({ name: 'customer-by-id', text: 'SELECT email FROM customers WHERE id = $1', values: [i] });
    assert.strictEqual(named.rows[0].email, `customer${i}@example.com`);
  }
  // A refused statement inside a transaction: rolled back, and the client goes on.
  await s.query('BEGIN');
  await assert.rejects(s.query('SELECT pg_terminate_backend(1)'), (e) => e.code === '42501');
  await s.query('ROLLBACK');
  assert.strictEqual((await s.query('SELECT 1 AS one')).rows[0].one, 1);
  await s.end();

  // A pool: connections reused and given back, queries in parallel.
  const pool = new Pool({ connectionString: staging, max: 3 });
  const counts = await Promise.all([1, 2, 3, 4, 5, 6].map((i) =>
    pool.query('SELECT count(*)::int AS n FROM customers WHERE id <= $1', [i * 10])));
  assert.deepStrictEqual(counts.map((r) => r.rows[0].n), [10, 20, 30, 40, 50, 60]);
  const held = await pool.connect();
  await held.query('SET statement_timeout = 1000');
  held.release();
  await pool.end();

  const p = new Client({ connectionString: production });
  await p.connect();
  await assert.rejects(p.query('DELETE FROM payments WHERE id = $1', [1]), (e) => e.code === 'YB001' || e.code === '42501');
  await assert.rejects(p.query('TRUNCATE payments'), (e) => e.code === 'YB001');
  assert.strictEqual((await p.query('SELECT count(*)::int AS n FROM payments')).rows[0].n, 4000);
  await p.end();
  console.log('node-postgres ok');
}

main().catch((e) => { console.error(e); process.exit(1); });
