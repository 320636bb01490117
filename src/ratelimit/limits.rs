//! [`Limit`], [`TierLimit`] and [`TierLimits`]: how many requests each tier may make.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::ConfigError;

/// `count` requests per `period`, with bursts of up to `count` (GCRA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    count: u32,
    period: Duration,
}

/// A [`Limit`] with a zero count or a zero period: an error, never "unlimited" (say
/// [`TierLimit::Unlimited`] for that).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a rate limit needs a count and a period above zero (use TierLimit::Unlimited for none)")]
pub struct InvalidLimit;

impl Limit {
    /// `count` requests per `period`; both must be above zero.
    pub fn new(count: u32, period: Duration) -> Result<Self, InvalidLimit> {
        if count == 0 || period.is_zero() {
            return Err(InvalidLimit);
        }
        Ok(Self { count, period })
    }

    /// `count` requests per second.
    pub fn per_second(count: u32) -> Result<Self, InvalidLimit> {
        Self::new(count, Duration::from_secs(1))
    }

    /// `count` requests per minute.
    pub fn per_minute(count: u32) -> Result<Self, InvalidLimit> {
        Self::new(count, Duration::from_secs(60))
    }

    /// `count` requests per hour.
    pub fn per_hour(count: u32) -> Result<Self, InvalidLimit> {
        Self::new(count, Duration::from_secs(3600))
    }

    /// Requests allowed per period (also the burst).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Time between two requests at the sustained rate.
    pub(crate) fn emission_interval(&self) -> Duration {
        self.period / self.count
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.period.as_secs();
        match secs {
            1 => write!(f, "{}/s", self.count),
            60 => write!(f, "{}/m", self.count),
            3600 => write!(f, "{}/h", self.count),
            86_400 => write!(f, "{}/d", self.count),
            _ => write!(f, "{} per {:?}", self.count, self.period),
        }
    }
}

impl FromStr for Limit {
    type Err = String;

    /// `60/m`, `10/s`, `1000/h`, `50000/d`.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let (count, unit) = value
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("`{value}`: expected <count>/<s|m|h|d>, e.g. 60/m"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("`{value}`: the count is not a positive whole number"))?;
        let secs = match unit.trim() {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            other => {
                return Err(format!(
                    "`{value}`: unknown unit `{other}`; use s, m, h or d"
                ));
            }
        };
        Self::new(count, Duration::from_secs(secs))
            .map_err(|_| format!("`{value}`: the count must be at least 1"))
    }
}

/// The limit of one tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierLimit {
    /// At most this many requests per period.
    Limited(Limit),
    /// No limit (no store call either).
    Unlimited,
}

impl From<Limit> for TierLimit {
    fn from(limit: Limit) -> Self {
        Self::Limited(limit)
    }
}

impl TierLimit {
    /// The limit, `None` when unlimited.
    pub fn limit(self) -> Option<Limit> {
        match self {
            Self::Limited(limit) => Some(limit),
            Self::Unlimited => None,
        }
    }
}

/// The limit of each tier, a default for tiers not listed, and unlimited tiers; and the limit
/// of machine callers and of organization-owned API keys, which have no tier.
///
/// Built in code (`TierLimits::new(Limit::per_minute(60)?).tier("pro", Limit::per_minute(600)?)
/// .tier("staff", TierLimit::Unlimited)`) or parsed from a string such as `RATE_LIMITS` (see
/// [`TierLimits::from_str`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierLimits {
    tiers: HashMap<String, TierLimit>,
    default: TierLimit,
    machines: Option<TierLimit>,
    organizations: Option<TierLimit>,
}

impl TierLimits {
    /// Tiers not listed get `default` (a [`Limit`] or [`TierLimit::Unlimited`]).
    pub fn new(default: impl Into<TierLimit>) -> Self {
        Self {
            tiers: HashMap::new(),
            default: default.into(),
            machines: None,
            organizations: None,
        }
    }

    /// The limit of each machine (M2M tokens, API keys with a `mch_…` subject), by machine
    /// id. Default: the default tier's limit.
    pub fn machines(mut self, limit: impl Into<TierLimit>) -> Self {
        self.machines = Some(limit.into());
        self
    }

    /// The limit of each organization's API keys (subject `org_…`), by organization id.
    /// Default: the default tier's limit.
    pub fn organizations(mut self, limit: impl Into<TierLimit>) -> Self {
        self.organizations = Some(limit.into());
        self
    }

    /// The limit of a machine caller.
    pub fn for_machine(&self) -> TierLimit {
        self.machines.unwrap_or(self.default)
    }

    /// The limit of an organization's API keys.
    pub fn for_organization(&self) -> TierLimit {
        self.organizations.unwrap_or(self.default)
    }

    /// Sets the limit of `tier` (a [`Limit`] or [`TierLimit::Unlimited`]).
    pub fn tier(mut self, tier: impl Into<String>, limit: impl Into<TierLimit>) -> Self {
        self.tiers.insert(tier.into(), limit.into());
        self
    }

    /// The limit for `tier`.
    pub fn for_tier(&self, tier: &str) -> TierLimit {
        self.tiers.get(tier).copied().unwrap_or(self.default)
    }
}

impl FromStr for TierLimits {
    type Err = ConfigError;

    /// Comma-separated `tier=limit` pairs: `free=60/m,pro=600/m,enterprise=unlimited,*=30/m`.
    /// `*` is the default for tiers not listed (unlimited when absent). Errors name
    /// `RATE_LIMITS`.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let error = |reason: String| ConfigError::new("RATE_LIMITS", reason);
        let mut limits = Self::new(TierLimit::Unlimited);
        for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (tier, limit) = pair
                .split_once('=')
                .ok_or_else(|| error(format!("`{pair}`: expected tier=limit, e.g. free=60/m")))?;
            let limit = match limit.trim() {
                "unlimited" => TierLimit::Unlimited,
                limit => TierLimit::Limited(limit.parse::<Limit>().map_err(error)?),
            };
            match tier.trim() {
                "" => return Err(error(format!("`{pair}`: the tier name is empty"))),
                "*" => limits.default = limit,
                tier => limits = limits.tier(tier, limit),
            }
        }
        Ok(limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_strings_parse() {
        let limits: TierLimits = "free=60/m, pro=600/m,enterprise=unlimited,*=30/h"
            .parse()
            .unwrap();
        assert_eq!(limits.for_tier("free").limit(), Limit::per_minute(60).ok());
        assert_eq!(limits.for_tier("pro").limit(), Limit::per_minute(600).ok());
        assert_eq!(limits.for_tier("enterprise"), TierLimit::Unlimited);
        assert_eq!(limits.for_tier("trial").limit(), Limit::per_hour(30).ok());
        let no_default: TierLimits = "free=1/s".parse().unwrap();
        assert_eq!(no_default.for_tier("other"), TierLimit::Unlimited);
    }

    #[test]
    fn bad_rate_limits_name_the_variable() {
        for bad in [
            "free",
            "free=60",
            "free=0/m",
            "free=x/m",
            "free=60/w",
            "=60/m",
        ] {
            let error = bad.parse::<TierLimits>().unwrap_err();
            assert_eq!(error.setting(), "RATE_LIMITS", "{bad}");
        }
    }

    #[test]
    fn a_zero_count_or_period_is_an_error_not_unlimited() {
        assert_eq!(Limit::per_minute(0), Err(InvalidLimit));
        assert_eq!(Limit::new(5, Duration::ZERO), Err(InvalidLimit));
        assert!(Limit::per_second(1).is_ok());
    }

    #[test]
    fn limits_display_like_they_parse() {
        for text in ["60/m", "10/s", "1000/h", "5/d"] {
            assert_eq!(text.parse::<Limit>().unwrap().to_string(), text);
        }
        let limit = Limit::per_minute(60).unwrap();
        assert_eq!(limit.emission_interval(), Duration::from_secs(1));
    }
}
