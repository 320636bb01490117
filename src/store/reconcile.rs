//! What [`crate::reconcile()`] needs from a SQL store: a session on one connection that holds
//! one of Clerk's lists (users, organizations or memberships) in a temporary table, and the
//! SQL that compares it with the table it mirrors.
//!
//! Clerk's snapshots go into the kind's temporary table (aliased `excluded`, the name the
//! shared versioned-field SQL uses for a snapshot) and the mirrored table is `u` (users,
//! organizations) or `m` (memberships), so "stale" is exactly the condition under which an
//! import would change the row ([`sql::import_update_condition`], or the membership
//! statement's own).

use super::sql;
use super::{StoreFuture, UserProfile};
use crate::store::{MembershipSnapshot, OrganizationProfile};

/// Ids of each class shown as examples.
pub(crate) const EXAMPLES: i64 = 10;

/// The list a reconcile compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `GET /v1/users` against the users table.
    Users,
    /// `GET /v1/organizations` against `organizations`.
    Organizations,
    /// `GET /v1/organization_memberships` against `organization_memberships`.
    Memberships,
}

impl Kind {
    /// The temporary table of Clerk's snapshots of this kind.
    pub(crate) fn temp_table(self) -> &'static str {
        match self {
            Self::Users => "clerk_sync_reconcile",
            Self::Organizations => "clerk_sync_reconcile_orgs",
            Self::Memberships => "clerk_sync_reconcile_members",
        }
    }

    /// The key columns, in the order of [`Snapshot::keys`].
    pub(crate) fn keys(self) -> &'static [&'static str] {
        match self {
            Self::Users | Self::Organizations => &["id"],
            Self::Memberships => &["organization_id", "user_id"],
        }
    }

    /// The text columns a snapshot fills, in the order of [`Snapshot::fields`].
    pub(crate) fn fields(self) -> &'static [&'static str] {
        match self {
            Self::Users => &sql::PROFILE_COLUMNS,
            Self::Organizations => &sql::ORGANIZATION_COLUMNS,
            Self::Memberships => &["role"],
        }
    }

    /// The alias of the mirrored table in the comparison's SQL.
    fn alias(self) -> &'static str {
        match self {
            Self::Users | Self::Organizations => "u",
            Self::Memberships => "m",
        }
    }

    /// One text id of a row of `alias` for the examples (`org_…/user_…` for memberships).
    fn example_id(self, alias: &str) -> String {
        match self {
            Self::Users | Self::Organizations => format!("{alias}.id"),
            Self::Memberships => format!("{alias}.organization_id || '/' || {alias}.user_id"),
        }
    }
}

/// One of Clerk's snapshots in the shape of its kind's temporary table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// [`Kind::keys`]' values.
    pub(crate) keys: Vec<String>,
    /// [`Kind::fields`]' values.
    pub(crate) fields: Vec<Option<String>>,
    /// Clerk's `updated_at`, Unix ms.
    pub(crate) version_ms: Option<i64>,
}

impl From<UserProfile> for Snapshot {
    fn from(p: UserProfile) -> Self {
        Self {
            keys: vec![p.id],
            fields: vec![p.email, p.first_name, p.last_name, p.username, p.image_url],
            version_ms: p.version_ms,
        }
    }
}

impl From<OrganizationProfile> for Snapshot {
    fn from(org: OrganizationProfile) -> Self {
        Self {
            keys: vec![org.id],
            fields: vec![org.slug, org.name, org.image_url],
            version_ms: org.version_ms,
        }
    }
}

impl From<MembershipSnapshot> for Snapshot {
    fn from(m: MembershipSnapshot) -> Self {
        Self {
            keys: vec![m.organization_id, m.user_id],
            fields: vec![m.role],
            version_ms: m.version_ms,
        }
    }
}

impl Snapshot {
    fn field(&mut self, at: usize) -> Option<String> {
        self.fields.get_mut(at).and_then(Option::take)
    }

    fn key(&mut self, at: usize) -> String {
        self.keys
            .get_mut(at)
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Back to a user snapshot.
    pub(crate) fn into_user(mut self) -> UserProfile {
        let mut profile = UserProfile::new(self.key(0));
        profile.email = self.field(0);
        profile.first_name = self.field(1);
        profile.last_name = self.field(2);
        profile.username = self.field(3);
        profile.image_url = self.field(4);
        profile.version_ms = self.version_ms;
        profile
    }

    /// Back to an organization snapshot.
    pub(crate) fn into_organization(mut self) -> OrganizationProfile {
        let mut org = OrganizationProfile::new(self.key(0));
        org.slug = self.field(0);
        org.name = self.field(1);
        org.image_url = self.field(2);
        org.version_ms = self.version_ms;
        org
    }

    /// Back to a membership snapshot.
    pub(crate) fn into_membership(mut self) -> MembershipSnapshot {
        let (organization_id, user_id) = (self.key(0), self.key(1));
        MembershipSnapshot::new(organization_id, user_id, self.field(0), self.version_ms)
    }
}

/// Counts (and example ids) of a comparison.
#[derive(Debug, Clone, Default)]
pub(crate) struct Diff {
    pub(crate) listed: u64,
    pub(crate) missing: u64,
    pub(crate) deleted_in_clerk: u64,
    pub(crate) stale: u64,
    pub(crate) in_sync: u64,
    /// Rows deleted here that Clerk still lists (and memberships of organizations deleted
    /// here).
    pub(crate) deleted_here: u64,
    /// Every row of the table, deleted ones included.
    pub(crate) table_rows: u64,
    pub(crate) missing_examples: Vec<String>,
    pub(crate) deleted_in_clerk_examples: Vec<String>,
    pub(crate) stale_examples: Vec<String>,
    pub(crate) deleted_here_examples: Vec<String>,
}

/// One reconcile's connection and temporary table (of one [`Kind`]).
pub(crate) trait ReconcileSession: Send {
    /// Adds Clerk's snapshots (a page) to the temporary table; a repeated key keeps its first.
    fn add<'a>(&'a mut self, snapshots: &'a [Snapshot]) -> StoreFuture<'a, ()>;

    /// The comparison's SQL of this dialect and kind.
    fn sql(&self) -> std::sync::Arc<DiffSql>;

    /// Readies the temporary table for the comparison (statistics), once it is filled.
    fn prepare(&mut self) -> StoreFuture<'_, ()>;

    /// The one row of counts `select` returns (every column a count), with the walk's start
    /// bound as its first parameter.
    fn counts<'a>(&'a mut self, select: &'a str) -> StoreFuture<'a, Vec<u64>>;

    /// `SELECT <id> <from>`, the first [`EXAMPLES`] by id.
    fn examples<'a>(
        &'a mut self,
        from: &'a str,
        id: &'a str,
        bind_start: bool,
    ) -> StoreFuture<'a, Vec<String>>;

    /// The next `limit` of Clerk's snapshots with keys after `after` (empty: from the start),
    /// by key, each with whether its row exists and whether it is missing or stale (to
    /// import).
    fn to_import<'a>(
        &'a mut self,
        after: &'a [String],
        limit: i64,
    ) -> StoreFuture<'a, Vec<ImportRow>>;

    /// Up to `limit` keys after `after` of live rows that existed before the walk began and
    /// that Clerk did not list, by key.
    fn deletion_candidates<'a>(
        &'a mut self,
        after: &'a [String],
        limit: i64,
    ) -> StoreFuture<'a, Vec<Vec<String>>>;

    /// Deletes the live row `keys` as the kind's deletion event does (a user's or an
    /// organization's personal fields cleared and `deleted_at` set, never resurrected; an
    /// organization's memberships with it); whether a live row was deleted.
    fn delete<'a>(&'a mut self, keys: &'a [String]) -> StoreFuture<'a, bool>;

    /// Drops the temporary table.
    fn finish(&mut self) -> StoreFuture<'_, ()>;
}

/// How a dialect writes what [`DiffSql::new`] needs.
pub(crate) struct Dialect<B, P> {
    /// The null-safe "differs" operator.
    pub(crate) distinct: &'static str,
    /// The condition "`<alias>` was created before the walk began", the start as parameter
    /// `p`; called with the alias and `p`.
    pub(crate) before: B,
    /// The n-th parameter.
    pub(crate) param: P,
}

/// The comparison's SQL for one dialect and kind.
///
/// Every listed snapshot is in exactly one of missing, stale, in sync and deleted here.
pub(crate) struct DiffSql {
    pub(crate) kind: Kind,
    /// `SELECT <snapshot_id> <missing>` gives a missing snapshot's example id.
    pub(crate) snapshot_id: String,
    /// The same for a row of the table (deleted in Clerk, stale).
    pub(crate) row_id: String,
    /// One row of counts: listed, table rows, missing, deleted in Clerk, stale, in sync,
    /// deleted here. Binds the walk's start.
    pub(crate) counts: String,
    pub(crate) missing: String,
    /// Binds the walk's start (Unix ms) as the first parameter.
    pub(crate) deleted_in_clerk: String,
    pub(crate) stale: String,
    /// A subquery `d` with one column `id`.
    pub(crate) deleted_here: String,
    /// Binds the keys to start after, then the page size.
    pub(crate) to_import: String,
    /// Binds the walk's start, the keys to start after, then the page size.
    pub(crate) candidates: String,
}

impl DiffSql {
    /// The SQL comparing `kind`'s temporary table with `table` in `dialect`.
    pub(crate) fn new<B, P>(kind: Kind, table: &str, dialect: &Dialect<B, P>) -> Self
    where
        B: Fn(&str, &str) -> String,
        P: Fn(usize) -> String,
    {
        let temp = kind.temp_table();
        let a = kind.alias();
        let keys = kind.keys();
        let distinct = dialect.distinct;
        let param = &dialect.param;
        let list = |alias: &str| {
            keys.iter()
                .map(|key| format!("{alias}.{key}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let same = keys
            .iter()
            .map(|key| format!("{a}.{key} = excluded.{key}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let params = |first: usize| {
            (first..first + keys.len())
                .map(param)
                .collect::<Vec<_>>()
                .join(", ")
        };
        // Whether an import would write the snapshot (`excluded`) to the joined row, and
        // whether it may write it at all (a membership of an organization deleted here: never).
        let (changes, writable) = match kind {
            Kind::Users => (
                sql::import_update_condition(&sql::PROFILE_COLUMNS, distinct),
                "TRUE".to_owned(),
            ),
            Kind::Organizations => (
                sql::import_update_condition(&sql::ORGANIZATION_COLUMNS, distinct),
                "TRUE".to_owned(),
            ),
            Kind::Memberships => {
                let writable = "NOT EXISTS (SELECT 1 FROM organizations o \
                     WHERE o.id = excluded.organization_id AND o.deleted_at IS NOT NULL)"
                    .to_owned();
                let role = sql::ROLE_APPLIES;
                (
                    format!(
                        "{writable} AND ((m.deleted_at IS NULL AND {role} \
                           AND (excluded.role {distinct} m.role \
                                OR excluded.clerk_updated_at {distinct} m.role_version)) \
                         OR (m.deleted_at IS NOT NULL AND excluded.clerk_updated_at IS NOT NULL \
                           AND (m.deleted_version IS NULL \
                                OR excluded.clerk_updated_at > m.deleted_version)))"
                    ),
                    writable,
                )
            }
        };
        let unchanged = format!("NOT COALESCE(({changes}), false)");
        let absent = format!("NOT EXISTS (SELECT 1 FROM {table} {a} WHERE {same})");
        let unlisted = format!(
            "{a}.deleted_at IS NULL AND {} AND NOT EXISTS \
             (SELECT 1 FROM {temp} excluded WHERE {same})",
            (dialect.before)(a, &param(1))
        );
        let joined = format!("{temp} excluded JOIN {table} {a} ON {same}");
        let snapshot_id = kind.example_id("excluded");
        let row_id = kind.example_id(a);
        let fields = kind
            .fields()
            .iter()
            .map(|field| format!("excluded.{field}, "))
            .collect::<String>();
        let k = keys.len();
        // Every class in one pass over `temp FULL JOIN table` (at most one row matches:
        // the keys are the table's primary key).
        let listed = format!("excluded.{} IS NOT NULL", keys[0]);
        let here = format!("{a}.{} IS NOT NULL", keys[0]);
        let count = |condition: String| format!("count(CASE WHEN {condition} THEN 1 END)");
        let counts = [
            here.clone(),
            format!("{listed} AND NOT {here} AND {writable}"),
            format!(
                "{here} AND NOT {listed} AND {a}.deleted_at IS NULL AND {}",
                (dialect.before)(a, &param(1))
            ),
            format!("{listed} AND {here} AND ({changes})"),
            format!("{listed} AND {here} AND {a}.deleted_at IS NULL AND {unchanged}"),
            format!(
                "({listed} AND {here} AND {a}.deleted_at IS NOT NULL AND {unchanged}) \
                 OR ({listed} AND NOT {here} AND NOT ({writable}))"
            ),
        ]
        .into_iter()
        .map(count)
        .collect::<Vec<_>>()
        .join(", ");
        Self {
            kind,
            counts: format!(
                "SELECT count(excluded.{}), {counts} \
                 FROM {temp} excluded FULL JOIN {table} {a} ON {same}",
                keys[0]
            ),
            missing: format!("FROM {temp} excluded WHERE {absent} AND {writable}"),
            deleted_in_clerk: format!("FROM {table} {a} WHERE {unlisted}"),
            stale: format!("FROM {joined} WHERE {changes}"),
            deleted_here: format!(
                "FROM (SELECT {row_id} AS id FROM {joined} \
                       WHERE {a}.deleted_at IS NOT NULL AND {unchanged} \
                       UNION ALL \
                       SELECT {snapshot_id} AS id FROM {temp} excluded \
                       WHERE {absent} AND NOT ({writable})) d"
            ),
            // The keyset chunk first (an index range of the temporary table), then each
            // row's join: a filter before the LIMIT makes the planner join both tables whole.
            to_import: format!(
                "WITH chunk AS (SELECT * FROM {temp} WHERE ({}) > ({}) ORDER BY {} LIMIT {}) \
                 SELECT {}, {fields}excluded.version_ms, \
                        {a}.{} IS NOT NULL AS existing, \
                        COALESCE(({a}.{} IS NULL AND {writable}) OR ({changes}), false) AS needed \
                 FROM chunk excluded LEFT JOIN {table} {a} ON {same} \
                 ORDER BY {}",
                keys.join(", "),
                params(1),
                keys.join(", "),
                param(k + 1),
                list("excluded"),
                keys[0],
                keys[0],
                list("excluded"),
            ),
            candidates: format!(
                "SELECT {} FROM {table} {a} WHERE ({}) > ({}) AND {unlisted} \
                 ORDER BY {} LIMIT {}",
                list(a),
                list(a),
                params(2),
                list(a),
                param(k + 2)
            ),
            snapshot_id,
            row_id,
        }
    }

    /// The first keys of a keyset walk: sorts before every id.
    pub(crate) fn start(&self) -> Vec<String> {
        vec![String::new(); self.kind.keys().len()]
    }
}

/// A row of [`DiffSql::to_import`].
pub(crate) struct ImportRow {
    pub(crate) snapshot: Snapshot,
    /// The table has a row for it.
    pub(crate) existing: bool,
    /// Missing or stale: an import would change the table.
    pub(crate) needed: bool,
}

/// Reads a row of [`DiffSql::to_import`] of `kind`.
pub(crate) fn import_row<R>(kind: Kind, row: &R) -> Result<ImportRow, sqlx::Error>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    bool: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let (k, f) = (kind.keys().len(), kind.fields().len());
    let snapshot = Snapshot {
        keys: (0..k).map(|at| row.try_get(at)).collect::<Result<_, _>>()?,
        fields: (k..k + f)
            .map(|at| row.try_get(at))
            .collect::<Result<_, _>>()?,
        version_ms: row.try_get(k + f)?,
    };
    Ok(ImportRow {
        snapshot,
        existing: row.try_get(k + f + 1)?,
        needed: row.try_get(k + f + 2)?,
    })
}

/// Reads the keys of a row of [`DiffSql::candidates`] of `kind`.
pub(crate) fn candidate_keys<R>(kind: Kind, row: &R) -> Result<Vec<String>, sqlx::Error>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    (0..kind.keys().len()).map(|at| row.try_get(at)).collect()
}

/// The temporary table's columns after the keys and fields: the version as given, and as
/// the dialect's timestamp type (`clerk_updated_at`, the name the versioned SQL reads).
pub(crate) fn temp_columns(kind: Kind, text: &str, bigint: &str, timestamp: &str) -> String {
    let keys = kind.keys();
    let columns = keys
        .iter()
        .map(|key| format!("{key} {text} NOT NULL"))
        .chain(kind.fields().iter().map(|field| format!("{field} {text}")))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{columns}, version_ms {bigint}, clerk_updated_at {timestamp}, PRIMARY KEY ({})",
        keys.join(", ")
    )
}
