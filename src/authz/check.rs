//! [`Check`]: what a caller must have — role, permission, feature, plan, a recent enough
//! verification — and how `has()` decides it, with `@clerk/shared`'s semantics.

use super::claims::{Authorization, Entitlements, FactorAges, without_org};

/// How strongly a session must have been verified recently, for [`Reverification::Custom`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactorLevel {
    /// The first factor (`first_factor`).
    FirstFactor,
    /// The second factor, or the first when the user has none (`second_factor`).
    SecondFactor,
    /// Both factors, or the first when the user has no second (`multi_factor`).
    MultiFactor,
}

impl FactorLevel {
    /// Clerk's name of the level.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FirstFactor => "first_factor",
            Self::SecondFactor => "second_factor",
            Self::MultiFactor => "multi_factor",
        }
    }
}

/// A reverification requirement: one of Clerk's presets or a custom level and age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reverification {
    /// Both factors within 10 minutes (`strict_mfa`).
    StrictMfa,
    /// The second factor within 10 minutes (`strict`).
    Strict,
    /// The second factor within an hour (`moderate`).
    Moderate,
    /// The second factor within a day (`lax`).
    Lax,
    /// `level` within `after_minutes` (at least 1).
    Custom {
        /// Which factors.
        level: FactorLevel,
        /// How recent, in minutes.
        after_minutes: u32,
    },
}

impl Reverification {
    /// The preset of Clerk's name: `strict_mfa`, `strict`, `moderate` or `lax`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "strict_mfa" => Some(Self::StrictMfa),
            "strict" => Some(Self::Strict),
            "moderate" => Some(Self::Moderate),
            "lax" => Some(Self::Lax),
            _ => None,
        }
    }

    /// The level and the age in minutes, as Clerk's presets define them.
    pub fn requirement(self) -> (FactorLevel, u32) {
        match self {
            Self::StrictMfa => (FactorLevel::MultiFactor, 10),
            Self::Strict => (FactorLevel::SecondFactor, 10),
            Self::Moderate => (FactorLevel::SecondFactor, 60),
            Self::Lax => (FactorLevel::SecondFactor, 1440),
            Self::Custom {
                level,
                after_minutes,
            } => (level, after_minutes),
        }
    }

    /// Whether the session's factor ages satisfy this requirement; `None` ages (absent or
    /// malformed `fva`) never do.
    fn passes(self, ages: Option<FactorAges>) -> bool {
        let Some(FactorAges { first, second }) = ages else {
            return false;
        };
        let (level, after_minutes) = self.requirement();
        if after_minutes == 0 {
            return false;
        }
        let fresh = |age: Option<u64>| age.is_some_and(|age| u64::from(after_minutes) > age);
        match (level, first, second) {
            (_, None, None) => false,
            (FactorLevel::FirstFactor, ..) => fresh(first),
            (FactorLevel::SecondFactor, _, None) => fresh(first),
            (FactorLevel::SecondFactor, None, _) => fresh(second),
            (FactorLevel::SecondFactor, ..) => fresh(second),
            (FactorLevel::MultiFactor, _, None) => fresh(first),
            (FactorLevel::MultiFactor, None, _) => false,
            (FactorLevel::MultiFactor, ..) => fresh(first) && fresh(second),
        }
    }
}

/// What a caller must have. Build one per dimension and combine with [`and`](Self::and):
/// every dimension asked must pass, as in Clerk's `has()`.
///
/// ```
/// use clerk_sync::authz::{Check, Reverification};
///
/// let admins = Check::role("admin");
/// let billing = Check::permission("org:invoices:read").and(Check::plan("o:pro"));
/// let sensitive = Check::reverification(Reverification::Strict);
/// # let _ = (admins, billing, sensitive);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Check {
    role: Option<String>,
    permission: Option<String>,
    feature: Option<String>,
    plan: Option<String>,
    reverification: Option<Reverification>,
}

impl Check {
    /// The member's role in the active organization (`admin` and `org:admin` are the same).
    pub fn role(role: impl AsRef<str>) -> Self {
        Self {
            // Prefixed once here, so that a check costs no allocation.
            role: Some(with_org(role.as_ref())),
            ..Self::default()
        }
    }

    /// A permission in the active organization (`org:invoices:read`; the `org:` prefix is
    /// added when missing).
    pub fn permission(permission: impl AsRef<str>) -> Self {
        Self {
            permission: Some(with_org(permission.as_ref())),
            ..Self::default()
        }
    }

    /// A feature (`fea`): `o:name` the organization's, `u:name` the user's (also spelled
    /// `org:`/`organization:` and `user:`), bare `name` either.
    pub fn feature(feature: impl Into<String>) -> Self {
        Self {
            feature: Some(feature.into()),
            ..Self::default()
        }
    }

    /// A plan (`pla`), scoped as [`feature`](Self::feature).
    pub fn plan(plan: impl Into<String>) -> Self {
        Self {
            plan: Some(plan.into()),
            ..Self::default()
        }
    }

    /// A recent enough verification of the session's factors (`fva`).
    pub fn reverification(reverification: Reverification) -> Self {
        Self {
            reverification: Some(reverification),
            ..Self::default()
        }
    }

    /// Both checks: each dimension of `other` is asked too (one of `other`'s replaces this
    /// check's for a dimension both ask).
    pub fn and(mut self, other: Self) -> Self {
        self.role = other.role.or(self.role);
        self.permission = other.permission.or(self.permission);
        self.feature = other.feature.or(self.feature);
        self.plan = other.plan.or(self.plan);
        self.reverification = other.reverification.or(self.reverification);
        self
    }

    /// The reverification asked, if any.
    pub fn reverification_asked(&self) -> Option<Reverification> {
        self.reverification
    }

    /// Decides the check; `Ok` when every dimension asked passes (and at least one is asked).
    pub(crate) fn decide(&self, authz: &Authorization) -> Result<(), Denial> {
        let org_asked = self.role.is_some() || self.permission.is_some();
        let billing_asked = self.feature.is_some() || self.plan.is_some();
        if !org_asked && !billing_asked && self.reverification.is_none() {
            return Err(Denial::Missing(
                "nothing (an empty check never passes)".to_owned(),
            ));
        }
        if org_asked {
            let Some(index) = &authz.org_index else {
                return Err(Denial::NoOrganization);
            };
            // Split by bytes: a few instructions per byte for these short lines, where
            // `str::split` sets up a searcher (~240 instructions per guarded request).
            let mut lines = index.as_bytes().split(|byte| *byte == b'\n');
            let held_role = lines.next().unwrap_or_default();
            if let Some(role) = &self.role
                && (held_role.is_empty() || held_role != without_org(role).as_bytes())
            {
                return Err(Denial::Missing(format!("the role {role}")));
            }
            if let Some(permission) = &self.permission
                && !lines.any(|held| held == permission.as_bytes())
            {
                return Err(Denial::Missing(format!("the permission {permission}")));
            }
        }
        for (asked, claim, kind) in [
            (&self.feature, &authz.details.features, "feature"),
            (&self.plan, &authz.details.plans, "plan"),
        ] {
            if let Some(asked) = asked
                && !entitled(claim, asked)
            {
                return Err(Denial::Missing(format!("the {kind} {asked}")));
            }
        }
        if let Some(reverification) = self.reverification
            && !reverification.passes(authz.details.factor_ages)
        {
            return Err(Denial::Reverification(reverification));
        }
        Ok(())
    }
}

/// Why a [`Check`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Denial {
    /// A role or permission was asked and the session has no active organization.
    NoOrganization,
    /// What is missing, for the message.
    Missing(String),
    /// The session's factors were not verified recently enough.
    Reverification(Reverification),
}

/// `org:` once at the front, however many the value had (Clerk's `prefixWithOrg`).
fn with_org(value: &str) -> String {
    format!("org:{}", without_org(value))
}

/// Clerk's `checkForFeatureOrPlan`: `scope:id` looks in that scope only, a bare `id` in both;
/// an unknown scope never passes.
fn entitled(claim: &Entitlements, asked: &str) -> bool {
    let mut parts = asked.split(':');
    let first = parts.next().unwrap_or_default();
    match parts.next() {
        None => claim
            .org
            .iter()
            .chain(&claim.user)
            .any(|have| have == first),
        Some(id) => {
            // The SDK's `split(":")` destructuring: an empty id falls back to the scope.
            let id = if id.is_empty() { first } else { id };
            match first {
                "o" | "org" | "organization" => claim.org.iter().any(|have| have == id),
                "u" | "user" => claim.user.iter().any(|have| have == id),
                _ => false,
            }
        }
    }
}
