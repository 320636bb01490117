//! v2 organization, feature, plan and factor-age claims for [`TokenBuilder`].

use serde_json::{Value, json};

use super::TokenBuilder;

impl TokenBuilder<'_> {
    /// Features (`fea`), e.g. `"o:invoices,u:profile"`. Call before
    /// [`organization`](Self::organization), which adds the features of its permissions.
    pub fn features(self, list: &str) -> Self {
        self.claim("fea", list)
    }

    /// Plans (`pla`), e.g. `"o:pro,u:free"`.
    pub fn plans(self, list: &str) -> Self {
        self.claim("pla", list)
    }

    /// Minutes since the first and second factor were verified (`fva`); -1 for "not verified".
    pub fn factor_ages(self, first: i64, second: i64) -> Self {
        self.claim("fva", json!([first, second]))
    }

    /// An active organization as Clerk's v2 tokens carry it: `o` with `id`, `slg`, `rol` (given
    /// without the `org:` prefix) and the permissions (`org:<feature>:<permission>`) encoded
    /// as Clerk encodes them: each permission's feature is added to `fea` as `o:<feature>`
    /// when missing, `per` lists the permission names, and `fpm` holds one decimal bitmask
    /// per organization-scoped entry of `fea`, in order.
    pub fn organization(self, id: &str, slug: &str, role: &str, permissions: &[&str]) -> Self {
        let mut entries: Vec<String> = match self.claims.get("fea").and_then(Value::as_str) {
            Some(list) if !list.is_empty() => list.split(',').map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        let mut names: Vec<&str> = Vec::new();
        let parsed: Vec<(&str, &str)> = permissions
            .iter()
            .filter_map(|permission| {
                let rest = permission.strip_prefix("org:")?;
                rest.split_once(':')
            })
            .collect();
        for (feature, name) in &parsed {
            let entry = format!("o:{feature}");
            if !entries.contains(&entry) {
                entries.push(entry);
            }
            if !names.contains(name) {
                names.push(name);
            }
        }
        let org_features: Vec<&str> = entries
            .iter()
            .filter_map(|entry| {
                let (scope, name) = entry.split_once(':')?;
                matches!(scope, "o" | "ou" | "uo").then_some(name)
            })
            .collect();
        let masks: Vec<String> = org_features
            .iter()
            .map(|feature| {
                let mask: u128 = parsed
                    .iter()
                    .filter(|(f, _)| f == feature)
                    .filter_map(|(_, name)| names.iter().position(|n| n == name))
                    .fold(0, |mask, bit| mask | (1u128 << bit));
                mask.to_string()
            })
            .collect();
        let mut o = json!({"id": id, "slg": slug, "rol": role});
        if !names.is_empty() {
            o["per"] = names.join(",").into();
            o["fpm"] = masks.join(",").into();
        }
        self.claim("fea", entries.join(",")).claim("o", o)
    }
}
