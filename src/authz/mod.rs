//! Authorization: the v2 (and v1) organization, feature, plan and factor-age claims of a
//! session, and `has()` checks with the semantics of Clerk's JS SDK (`@clerk/shared`). The
//! route guards over them are [`crate::RequireLayer`] and [`crate::Authorized`].

mod check;
mod claims;

pub(crate) use check::Denial;
pub use check::{Check, FactorLevel, Reverification};
pub use claims::{ActiveOrganization, Entitlements, FactorAges};
pub(crate) use claims::{Authorization, active_organization};

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::token::SessionClaims;

    /// A check of the corpus (the parameters of Clerk's `has()`) as a [`Check`].
    fn check(params: &Value) -> Check {
        let mut check = Check::default();
        let text = |name: &str| params.get(name).and_then(Value::as_str);
        if let Some(role) = text("role") {
            check = check.and(Check::role(role));
        }
        if let Some(permission) = text("permission") {
            check = check.and(Check::permission(permission));
        }
        if let Some(feature) = text("feature") {
            check = check.and(Check::feature(feature));
        }
        if let Some(plan) = text("plan") {
            check = check.and(Check::plan(plan));
        }
        let reverification = match params.get("reverification") {
            Some(Value::String(preset)) => {
                Some(Reverification::preset(preset).unwrap_or_else(|| panic!("preset {preset}")))
            }
            Some(custom) => Some(Reverification::Custom {
                level: match custom["level"].as_str() {
                    Some("first_factor") => FactorLevel::FirstFactor,
                    Some("second_factor") => FactorLevel::SecondFactor,
                    _ => FactorLevel::MultiFactor,
                },
                after_minutes: u32::try_from(custom["afterMinutes"].as_u64().unwrap()).unwrap(),
            }),
            None => None,
        };
        if let Some(reverification) = reverification {
            check = check.and(Check::reverification(reverification));
        }
        check
    }

    /// Every claim set × check of the corpus answers as `@clerk/shared` answered
    /// (`scripts/js-sdk/has-corpus.cjs` recorded it), the `fpm` reading included.
    #[test]
    fn has_answers_as_clerks_js_sdk_on_the_corpus() {
        let corpus: Value =
            serde_json::from_str(include_str!("../../tests/fixtures/has_corpus.json")).unwrap();
        let checks: Vec<Check> = corpus["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(check)
            .collect();
        let mut compared = 0;
        for set in corpus["claims"].as_array().unwrap() {
            let mut claims = set["claims"].clone();
            claims["iss"] = "https://x".into();
            claims["exp"] = 2_000_000_000.into();
            claims["iat"] = 1_999_999_940.into();
            let claims: SessionClaims = serde_json::from_value(claims).unwrap();
            let authorization = Authorization::read(&claims);
            for (index, (check, expected)) in checks
                .iter()
                .zip(set["expected"].as_array().unwrap())
                .enumerate()
            {
                assert_eq!(
                    check.decide(&authorization).is_ok(),
                    expected.as_bool().unwrap(),
                    "{}: check {} {:?}",
                    set["name"],
                    index,
                    corpus["checks"][index]
                );
                compared += 1;
            }
        }
        assert_eq!(compared, 16 * 40);
    }

    #[test]
    fn the_active_organization_and_its_permissions_are_typed() {
        let claims: SessionClaims = serde_json::from_value(serde_json::json!({
            "v": 2, "sub": "user_1", "iss": "https://x", "exp": 2, "iat": 1,
            "fea": "u:profile,o:invoices,o:dashboard", "pla": "o:pro",
            "o": {"id": "org_1", "slg": "acme", "rol": "admin", "per": "read,manage", "fpm": "3,2"},
            "fva": [3, -1]
        }))
        .unwrap();
        let authorization = Authorization::read(&claims);
        let org = authorization.details.organization.clone().unwrap();
        assert_eq!(
            (org.id.as_str(), org.slug.as_deref(), org.role.as_deref()),
            ("org_1", Some("acme"), Some("org:admin"))
        );
        assert_eq!(
            org.permissions,
            [
                "org:invoices:read",
                "org:invoices:manage",
                "org:dashboard:manage"
            ]
        );
        assert_eq!(authorization.details.features.user, ["profile"]);
        assert_eq!(authorization.details.plans.org, ["pro"]);
        assert_eq!(
            authorization.details.factor_ages,
            Some(FactorAges {
                first: Some(3),
                second: None
            })
        );
    }
}
