//! [`Authorization`]: what a session token says its user may do — the active organization
//! (role, permissions), features, plans and factor-verification ages — read from v2 claims
//! (`o`, `fea`, `pla`, `fva`) or v1 claims (`org_id`, `org_role`, `org_slug`,
//! `org_permissions`) as Clerk's JS SDK reads them (`@clerk/shared`'s `jwtPayloadParser`).

use serde_json::Value;

use crate::token::SessionClaims;

/// The active organization of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveOrganization {
    /// The organization id (`org_…`).
    pub id: String,
    /// Its slug, when the token carries it.
    pub slug: Option<String>,
    /// The member's role, with Clerk's `org:` prefix (`org:admin`), when the token carries it.
    pub role: Option<String>,
    /// The member's permissions (`org:<feature>:<permission>`).
    pub permissions: Vec<String>,
}

/// Minutes since the session's first and second factors were verified (`fva`); `None` where
/// Clerk sends -1 (not verified, or no second factor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FactorAges {
    /// Minutes since the first factor (password, code, passkey…).
    pub first: Option<u64>,
    /// Minutes since the second factor.
    pub second: Option<u64>,
}

/// Features (`fea`) or plans (`pla`) split by scope: `o:` the organization's, `u:` the
/// user's, `ou:`/`uo:` both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Entitlements {
    /// The active organization's.
    pub org: Vec<String>,
    /// The user's.
    pub user: Vec<String>,
}

/// Everything `has()` decides on, read once per verified token.
///
/// Read lazily, on the first check of a token (see `ClerkUser`); small, with the
/// role-and-permission index that guards read inline (its text one allocation away) and the
/// rest boxed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Authorization {
    /// The active organization's role (without `org:`) and permissions, one per line, in one
    /// allocation; `None` without an active organization.
    pub(crate) org_index: Option<Box<str>>,
    pub(crate) details: Box<Details>,
}

/// The parts of [`Authorization`] that are read less often.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Details {
    pub(crate) organization: Option<ActiveOrganization>,
    pub(crate) features: Entitlements,
    pub(crate) plans: Entitlements,
    /// `None`: absent or malformed (a reverification check fails).
    pub(crate) factor_ages: Option<FactorAges>,
}

impl Authorization {
    /// Reads the claims; malformed values are dropped (they grant nothing), never an error.
    pub(crate) fn read(claims: &SessionClaims) -> Self {
        let custom = &claims.custom;
        if claims.v == Some(2) && unreadable_v2(custom) {
            tracing::debug!(user.id = %claims.sub, "malformed organization claims: nothing granted");
            return Self::default();
        }
        let features = scoped(custom.get("fea"));
        let organization = match claims.v {
            Some(2) => custom
                .get("o")
                .and_then(|o| v2_organization(o, &features.org)),
            _ => v1_organization(custom),
        };
        let org_index = organization.as_ref().map(|org| {
            let role = org.role.as_deref().map_or("", without_org);
            let mut index = String::from(role);
            for permission in &org.permissions {
                index.push('\n');
                index.push_str(permission);
            }
            index.into_boxed_str()
        });
        Self {
            org_index,
            details: Box::new(Details {
                organization,
                features,
                plans: scoped(custom.get("pla")),
                factor_ages: custom.get("fva").and_then(factor_ages),
            }),
        }
    }

    /// The same without the active organization and what belongs to it (its role,
    /// permissions, and the `o:` features and plans): for a session whose organization was
    /// deleted here, or whose membership was deleted after the token was issued.
    pub(crate) fn without_organization(mut self) -> Self {
        self.org_index = None;
        let details = &mut *self.details;
        details.organization = None;
        details.features.org.clear();
        details.plans.org.clear();
        self
    }
}

/// The session's active organization, as [`Authorization::read`] reads it.
pub(crate) fn active_organization(claims: &SessionClaims) -> Option<ActiveOrganization> {
    Authorization::read(claims).details.organization
}

/// The value without its leading `org:` prefixes: two values are equal under Clerk's
/// `prefixWithOrg` exactly when these are.
pub(crate) fn without_org(value: &str) -> &str {
    let mut rest = value;
    while let Some(stripped) = rest.strip_prefix("org:") {
        rest = stripped;
    }
    rest
}

/// Whether Clerk's SDK fails to read these v2 claims at all (it throws, and grants nothing):
/// with an `o` claim, a `fea` that is not a string or has an entry without a colon, or a
/// `per`/`fpm` (both present) that is not a string.
fn unreadable_v2(custom: &serde_json::Map<String, Value>) -> bool {
    let Some(o) = custom.get("o").filter(|o| truthy(o)) else {
        return false;
    };
    let fea_broken = match custom.get("fea") {
        Some(Value::String(list)) => {
            !list.is_empty() && list.split(',').any(|entry| !entry.contains(':'))
        }
        Some(other) => truthy(other),
        None => false,
    };
    let (per, fpm) = (o.get("per"), o.get("fpm"));
    let both = per.is_some_and(truthy) && fpm.is_some_and(truthy);
    let not_text = |value: Option<&Value>| value.is_some_and(|v| !v.is_string());
    fea_broken || (both && (not_text(per) || not_text(fpm)))
}

/// JavaScript's truthiness of a JSON value.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0 && !n.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// `fea`/`pla`: comma-separated `scope:name` entries. Clerk's SDK throws on an entry without a
/// colon (the whole claim is then unusable); here such a claim grants nothing at all either.
/// Entries of unknown scopes are skipped, as in the SDK.
fn scoped(value: Option<&Value>) -> Entitlements {
    let Some(list) = value
        .and_then(Value::as_str)
        .filter(|list| !list.is_empty())
    else {
        return Entitlements::default();
    };
    let mut scoped = Entitlements::default();
    for entry in list.split(',').map(str::trim) {
        let Some((scope, name)) = entry.split_once(':') else {
            return Entitlements::default();
        };
        match scope {
            "o" => scoped.org.push(name.to_owned()),
            "u" => scoped.user.push(name.to_owned()),
            "ou" | "uo" => {
                scoped.org.push(name.to_owned());
                scoped.user.push(name.to_owned());
            }
            _ => {}
        }
    }
    scoped
}

/// v2's `o`: `id`, `slg`, `rol` (without the `org:` prefix), `per` (permission names) and `fpm`
/// (one decimal bitmask per organization-scoped entry of `fea`, in order: bit i set means
/// `org:<feature>:<per[i]>`). This is the JS SDK's reading; Clerk's Go and Python SDKs index
/// `fpm` against every `fea` entry instead, which differs when `fea` has user-scoped entries.
fn v2_organization(o: &Value, org_features: &[String]) -> Option<ActiveOrganization> {
    let id = o.get("id")?.as_str().filter(|id| !id.is_empty())?;
    let text = |name: &str| {
        o.get(name)
            .and_then(Value::as_str)
            .filter(|value| !value.is_empty())
    };
    let mut permissions = Vec::new();
    if let (Some(per), Some(fpm)) = (text("per"), text("fpm")) {
        let names: Vec<&str> = per.split(',').map(str::trim).collect();
        for (feature, mask) in org_features.iter().zip(fpm.split(',')) {
            for (index, name) in names.iter().enumerate() {
                if bit(mask.trim(), index) {
                    permissions.push(format!("org:{feature}:{name}"));
                }
            }
        }
    }
    Some(ActiveOrganization {
        id: id.to_owned(),
        slug: text("slg").map(str::to_owned),
        role: text("rol").map(|role| format!("org:{role}")),
        permissions,
    })
}

/// Bit `index` (least significant first) of a non-negative decimal of any length; `false`
/// for anything that is not all digits, as the JS SDK reads it.
fn bit(decimal: &str, index: usize) -> bool {
    if decimal.is_empty() || !decimal.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    // Long division by 2, `index + 1` times, on the decimal digits.
    let mut digits: Vec<u8> = decimal.bytes().map(|b| b - b'0').collect();
    for step in 0..=index {
        let mut remainder = 0;
        for digit in &mut digits {
            let value = remainder * 10 + *digit;
            *digit = value / 2;
            remainder = value % 2;
        }
        if step == index {
            return remainder == 1;
        }
        if digits.iter().all(|d| *d == 0) {
            return false;
        }
    }
    false
}

/// v1: `org_id`, `org_role` (prefixed already), `org_slug`, `org_permissions` (an array).
fn v1_organization(custom: &serde_json::Map<String, Value>) -> Option<ActiveOrganization> {
    let text = |name: &str| {
        custom
            .get(name)
            .and_then(Value::as_str)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
    };
    let permissions = match custom.get("org_permissions") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    Some(ActiveOrganization {
        id: text("org_id")?,
        slug: text("org_slug"),
        role: text("org_role"),
        permissions,
    })
}

/// `fva`: `[first, second]` minutes, each a non-negative integer or -1.
fn factor_ages(value: &Value) -> Option<FactorAges> {
    let Value::Array(items) = value else {
        return None;
    };
    let [first, second] = items.as_slice() else {
        return None;
    };
    let age = |value: &Value| -> Option<Option<u64>> {
        match value.as_i64() {
            Some(-1) => Some(None),
            Some(minutes) if minutes >= 0 => Some(u64::try_from(minutes).ok()),
            _ => value
                .as_f64()
                // Fractional minutes (the SDK allows them): for whole-minute thresholds,
                // `threshold > age` is `threshold > floor(age)`.
                .filter(|m| m.is_finite() && *m >= 0.0)
                .map(|m| Some(m.floor() as u64)),
        }
    };
    Some(FactorAges {
        first: age(first)?,
        second: age(second)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_of_long_decimals() {
        assert!(bit("1", 0) && !bit("1", 1));
        assert!(!bit("2", 0) && bit("2", 1));
        assert!(bit("5", 0) && !bit("5", 1) && bit("5", 2) && !bit("5", 3));
        // 2^70 + 1: beyond u64, as the SDK's string arithmetic allows.
        assert!(bit("1180591620717411303425", 0) && bit("1180591620717411303425", 70));
        assert!(!bit("1180591620717411303425", 69));
        for bad in ["", "-1", "1.5", "0x3", " 3"] {
            assert!(!bit(bad, 0), "{bad}");
        }
    }
}
