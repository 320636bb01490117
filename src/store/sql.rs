//! SQL shared by the PostgreSQL and SQLite stores: the per-field versioned `SET` clauses,
//! bindings and outcome reading.

use super::{UpsertOutcome, UserProfile};

/// Binds a snapshot's columns in the order every statement of both stores lists them: id,
/// email, first name, last name, username, image URL, version (ms).
pub(super) fn bind_profile<'q, DB>(
    query: sqlx::query::Query<'q, DB, DB::Arguments>,
    profile: &'q UserProfile,
) -> sqlx::query::Query<'q, DB, DB::Arguments>
where
    DB: sqlx::Database,
    &'q String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    &'q Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    query
        .bind(&profile.id)
        .bind(&profile.email)
        .bind(&profile.first_name)
        .bind(&profile.last_name)
        .bind(&profile.username)
        .bind(&profile.image_url)
        .bind(profile.version_ms)
}

/// Reads the upsert's `RETURNING tier, inserted, has_email`; no row back means the conflict's
/// `WHERE deleted_at IS NULL` failed: the user is deleted.
pub(super) fn upsert_outcome<R>(row: Option<R>) -> Result<UpsertOutcome, sqlx::Error>
where
    R: sqlx::Row,
    &'static str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    bool: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(match row {
        Some(row) => UpsertOutcome::Active {
            tier: row.try_get("tier")?,
            inserted: row.try_get("inserted")?,
            has_email: row.try_get("has_email")?,
        },
        None => UpsertOutcome::Deleted,
    })
}

/// The profile columns a snapshot may fill (besides `id` and the version). Each has a version
/// column beside it, `<name>_version`: the version of the snapshot that last set that field.
pub(super) const PROFILE_COLUMNS: [&str; 5] =
    ["email", "first_name", "last_name", "username", "image_url"];

/// The organization columns a snapshot may fill, each with its `<name>_version` column.
pub(super) const ORGANIZATION_COLUMNS: [&str; 3] = ["slug", "name", "image_url"];

/// Every column a user store writes or reads, for checking a custom table.
#[cfg(feature = "postgres")]
pub(super) const REQUIRED_COLUMNS: [&str; 17] = [
    "id",
    "email",
    "first_name",
    "last_name",
    "username",
    "image_url",
    "tier",
    "clerk_updated_at",
    "created_at",
    "updated_at",
    "last_seen_at",
    "deleted_at",
    "email_version",
    "first_name_version",
    "last_name_version",
    "username_version",
    "image_url_version",
];

/// Whether the snapshot (`excluded`) sets field `name` of row `u`: it carries a value (NULL
/// never erases), and its version is at least the field's (`>=`, so a redelivered snapshot is
/// a no-op rather than skipped), or the field never had a versioned value. A snapshot's
/// version only shadows the fields it carries. A NULL snapshot version compares as false.
pub(super) fn field_applies(name: &str) -> String {
    format!(
        "(excluded.{name} IS NOT NULL AND (u.{name}_version IS NULL \
         OR excluded.clerk_updated_at >= u.{name}_version))"
    )
}

/// `SET` clauses for the profile fields and their versions, field by field (see
/// [`field_applies`]). The same SQL in PostgreSQL and SQLite (`SET` reads the old row).
pub(super) fn versioned_field_updates(columns: &[&str]) -> String {
    columns
        .iter()
        .map(|name| {
            let applies = field_applies(name);
            format!(
                "{name} = CASE WHEN {applies} THEN excluded.{name} ELSE u.{name} END, \
                 {name}_version = CASE WHEN {applies} THEN excluded.clerk_updated_at \
                     ELSE u.{name}_version END"
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `true` when the snapshot sets at least one field.
pub(super) fn any_field_applies(columns: &[&str]) -> String {
    columns
        .iter()
        .map(|name| field_applies(name))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// The names of the version columns of `columns`, in order, for an `INSERT` list.
pub(super) fn version_columns(columns: &[&str]) -> String {
    columns
        .iter()
        .map(|name| format!("{name}_version"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The values of the version columns of a new row: `version` for each field that `value`
/// (a field name to the dialect's expression of its new value) says is known, else NULL.
pub(super) fn version_values(
    columns: &[&str],
    value: impl Fn(usize) -> String,
    version: &str,
) -> String {
    (0..columns.len())
        .map(|at| format!("CASE WHEN {} IS NOT NULL THEN {version} END", value(at)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `WHERE` of an import's `DO UPDATE`: the row is live and the snapshot changes a field's
/// value or version, so a re-import of the same data writes nothing and counts as unchanged.
/// `distinct` is the dialect's null-safe "differs" operator.
pub(super) fn import_update_condition(columns: &[&str], distinct: &str) -> String {
    let changed = columns
        .iter()
        .map(|name| {
            format!(
                "({applies} AND (excluded.{name} {distinct} u.{name} \
                 OR excluded.clerk_updated_at {distinct} u.{name}_version))",
                applies = field_applies(name)
            )
        })
        .collect::<Vec<_>>()
        .join(" OR ");
    format!("u.deleted_at IS NULL AND ({changed})")
}

/// `SET` clauses of a delete: the personal fields and their versions cleared.
pub(super) fn cleared_fields(columns: &[&str]) -> String {
    columns
        .iter()
        .map(|name| format!("{name} = NULL, {name}_version = NULL"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The current time in milliseconds, but never the same value twice in this process: the
/// upsert tells an insert from an update by `created_at = <this call's now>`, which two calls
/// in the same millisecond would otherwise share. Drifts ahead of the clock by at most the
/// number of upserts in one millisecond.
#[cfg(feature = "sqlite")]
pub(super) fn unique_now_ms() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = crate::time::unix_now_ms().max(last.saturating_add(1));
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(actual) => last = actual,
        }
    }
}

/// `GREATEST` that ignores NULLs, as PostgreSQL's does.
#[cfg(feature = "sqlite")]
pub(super) const GREATEST_VERSION: &str = "CASE WHEN u.clerk_updated_at IS NULL THEN excluded.clerk_updated_at \
     WHEN excluded.clerk_updated_at IS NULL THEN u.clerk_updated_at \
     ELSE MAX(u.clerk_updated_at, excluded.clerk_updated_at) END";

/// SQLite's `GREATEST(a, b)` ignoring NULLs, for any two expressions.
#[cfg(feature = "sqlite")]
pub(super) fn greatest(a: &str, b: &str) -> String {
    format!("CASE WHEN {a} IS NULL THEN {b} WHEN {b} IS NULL THEN {a} ELSE MAX({a}, {b}) END")
}

/// Whether a membership snapshot's role applies to row `m`: it carries one (NULL never
/// erases) and is not older than the role's version. Both dialects.
pub(super) const ROLE_APPLIES: &str = "(excluded.role IS NOT NULL AND (m.role_version IS NULL \
     OR excluded.clerk_updated_at >= m.role_version))";
