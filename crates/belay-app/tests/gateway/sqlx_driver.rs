//! sqlx through belay, as an application uses it: a pool, reads, statements it prepares and
//! caches per connection (every query is prepared on first use and reused after), a refused
//! write inside a transaction that the application rolls back before going on, and a new
//! pool after the old one closed.

use super::*;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Row};

fn options(agent: &str, db: &str) -> PgConnectOptions {
    let h = harness();
    PgConnectOptions::new()
        .host("127.0.0.1")
        .port(h.addr.port())
        .username(agent)
        .password(h.tokens[agent].expose())
        .database(db)
        .application_name("sqlx check")
}

#[test]
fn sqlx_pools_prepares_rolls_back_a_refusal_and_reconnects() {
    let (counted, refused, after, again) = block(async {
        let staging = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options("worker", "staging"))
            .await
            .unwrap();
        // Prepared on first use, then executed from the connection's cache.
        for i in 0..12 {
            sqlx::query("INSERT INTO scratch VALUES ($1, $2)")
                .bind(7000 + i)
                .bind("sqlx")
                .execute(&staging)
                .await
                .unwrap();
        }
        let counted: i64 = sqlx::query("SELECT count(*) FROM scratch WHERE note = $1")
            .bind("sqlx")
            .fetch_one(&staging)
            .await
            .unwrap()
            .get(0);
        staging.close().await;

        let production = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options("worker", "production"))
            .await
            .unwrap();
        let mut tx = production.begin().await.unwrap();
        sqlx::query("SELECT count(*) FROM items")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        let refused = sqlx::query("DELETE FROM items WHERE id = $1")
            .bind(1)
            .execute(&mut *tx)
            .await
            .err()
            .map(|e| match e {
                sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
                _ => None,
            });
        tx.rollback().await.unwrap();
        let after: i64 = sqlx::query("SELECT count(*) FROM items WHERE id <= $1")
            .bind(10)
            .fetch_one(&production)
            .await
            .unwrap()
            .get(0);
        production.close().await;

        // A new connection after the pool is gone.
        let mut one = sqlx::PgConnection::connect_with(&options("worker", "staging"))
            .await
            .unwrap();
        let again: String = sqlx::query("SELECT current_setting('application_name')")
            .fetch_one(&mut one)
            .await
            .unwrap()
            .get(0);
        one.close().await.unwrap();
        (counted, refused, after, again)
    });
    assert_eq!(counted, 12);
    // Held for a human's approval (a destructive write in production), so nothing ran.
    assert_eq!(refused, Some(Some("YB001".to_owned())));
    assert_eq!(after, 10);
    assert_eq!(again, "belay:worker/sqlx check");
    assert_eq!(upstream("production", "SELECT count(*) FROM items"), "100");
}
