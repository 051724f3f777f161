// pgJDBC through the belay gateway, with the driver's default properties (its own session
// setup: extra_float_digits, application_name): reads, a prepared statement used past
// prepareThreshold (server-side from the sixth execution), DatabaseMetaData, a batch in a
// transaction after setReadOnly(false), a refused statement inside a transaction with the
// client rolling back and going on, setClientInfo("ApplicationName"), setReadOnly(true) in
// production with a held write, and reconnecting.
// Usage: java -cp postgresql.jar JdbcCheck.java STAGING_URL PRODUCTION_URL

import java.net.URI;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;

public class JdbcCheck {
    static Connection connect(String url) throws Exception {
        URI u = new URI(url);
        String[] who = u.getUserInfo().split(":", 2);
        Properties p = new Properties();
        p.setProperty("user", who[0]);
        p.setProperty("password", who[1]);
        return DriverManager.getConnection(
                "jdbc:postgresql://" + u.getHost() + ":" + u.getPort() + u.getPath(), p);
    }

    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    static long count(Connection c, String sql) throws SQLException {
        try (Statement s = c.createStatement(); ResultSet r = s.executeQuery(sql)) {
            r.next();
            return r.getLong(1);
        }
    }

    public static void main(String[] args) throws Exception {
        try (Connection c = connect(args[0])) {
            check(count(c, "SELECT count(*) FROM customers") == 2000, "customers");
            try (PreparedStatement ps =
                    c.prepareStatement("SELECT name FROM customers WHERE id = ?")) {
                for (int i = 1; i <= 8; i++) {
                    ps.setInt(1, i);
                    try (ResultSet r = ps.executeQuery()) {
                        r.next();
                        check(r.getString(1).equals("Customer " + i), "prepared " + i);
                    }
                }
            }
            DatabaseMetaData md = c.getMetaData();
            int tables = 0;
            try (ResultSet r = md.getTables(null, "public", "%", new String[] {"TABLE"})) {
                while (r.next()) {
                    tables++;
                }
            }
            check(tables >= 4, "tables: " + tables);
            int columns = 0;
            try (ResultSet r = md.getColumns(null, "public", "vehicles", "%")) {
                while (r.next()) {
                    columns++;
                }
            }
            check(columns >= 3, "columns: " + columns);
            try (ResultSet r = md.getPrimaryKeys(null, "public", "vehicles")) {
                check(r.next(), "primary key");
            }

            c.setReadOnly(false);
            c.setAutoCommit(false);
            try (Statement s = c.createStatement()) {
                s.execute("DROP TABLE IF EXISTS jdbc_probe");
                s.execute("CREATE TABLE jdbc_probe (id int, note text)");
            }
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO jdbc_probe VALUES (?, ?)")) {
                for (int i = 0; i < 20; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "note " + i);
                    ps.addBatch();
                }
                check(ps.executeBatch().length == 20, "batch");
            }
            c.commit();
            try (Statement s = c.createStatement()) {
                s.executeQuery("SELECT pg_terminate_backend(1)");
                throw new AssertionError("pg_terminate_backend was not refused");
            } catch (SQLException e) {
                check("42501".equals(e.getSQLState()), "sqlstate " + e.getSQLState());
                c.rollback();
            }
            check(count(c, "SELECT count(*) FROM jdbc_probe") == 20, "rows after the rollback");
            try (Statement s = c.createStatement()) {
                s.execute("DROP TABLE jdbc_probe");
            }
            c.commit();
            c.setAutoCommit(true);

            c.setClientInfo("ApplicationName", "jdbc-check");
            try (Statement s = c.createStatement();
                    ResultSet r = s.executeQuery("SELECT current_setting('application_name')")) {
                r.next();
                check(r.getString(1).equals("belay:demo-agent/jdbc-check"), r.getString(1));
            }
            check("jdbc-check".equals(c.getClientInfo("ApplicationName")), "client info");
        }

        try (Connection c = connect(args[1])) {
            c.setReadOnly(true);
            c.setAutoCommit(false);
            check(count(c, "SELECT count(*) FROM vehicles") == 300, "vehicles");
            try (Statement s = c.createStatement()) {
                s.executeUpdate("DELETE FROM payments WHERE id = 1");
                throw new AssertionError("a production write was not held");
            } catch (SQLException e) {
                check("YB001".equals(e.getSQLState()) || "42501".equals(e.getSQLState()),
                        "sqlstate " + e.getSQLState());
                c.rollback();
            }
            check(count(c, "SELECT count(*) FROM payments") == 4000, "payments");
            c.commit();
        }

        try (Connection c = connect(args[0])) {
            check(count(c, "SELECT 1") == 1, "reconnect");
        }
        System.out.println("pgjdbc ok");
    }
}
