-- The shared rate limiter keys its rows by a namespaced text key (`user:<id>`, `ip:<network>`,
-- later `mch:<id>`, `org:<id>`) in one table, with no foreign key: it then works with any users
-- table (`PgUserStore::with_table`), and the tests, not a constraint, prove that the limiter
-- runs after sync. The old tables held only state that expires within one period, so they are
-- dropped rather than converted: a budget starts afresh once, at the upgrade.
DROP TABLE IF EXISTS clerk_rate_limits_ip;
DROP TABLE IF EXISTS clerk_rate_limits;
CREATE TABLE clerk_rate_limits (
    key     text PRIMARY KEY,
    tat     timestamptz NOT NULL,
    allowed boolean NOT NULL
);
-- The cleanup deletes rows whose `tat` has passed through this index, not a scan.
CREATE INDEX clerk_rate_limits_tat ON clerk_rate_limits (tat);
