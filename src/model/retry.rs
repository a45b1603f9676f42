//! Retry policy: exponential backoff with jitter, then the dead letter.
//!
//! The delay before attempt `n + 1` (after `n` failed attempts) is
//! `min(cap, base * factor^(n-1))`, spread by +/- `jitter` (a fraction) so that a burst of
//! failures does not come back as a burst. A task's own policy overrides its queue's, which
//! overrides the built-in default, key by key.

use crate::model::error::{Error, Result};
use crate::model::time::MAX_DURATION_S;

/// The largest growth factor of a retry policy.
pub const MAX_FACTOR: f64 = 1000.0;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Seconds before the first retry.
    pub base: f64,
    pub factor: f64,
    /// Upper bound in seconds.
    pub cap: f64,
    /// Fraction in 0..=1: the delay is multiplied by a uniform factor in [1 - jitter, 1 + jitter].
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: 1.0,
            factor: 2.0,
            cap: 3600.0,
            jitter: 0.1,
        }
    }
}

/// Partial policy as given by a user: only the keys present override.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cap: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f64>,
}

impl RetryOverrides {
    pub fn validate(&self) -> Result<()> {
        let check = |name: &str, v: Option<f64>, ok: bool, rule: &str| -> Result<()> {
            match v {
                Some(x) if !x.is_finite() || !ok => Err(Error::invalid(format!(
                    "retry policy {name} must be {rule}, got {x}"
                ))),
                _ => Ok(()),
            }
        };
        check(
            "base",
            self.base,
            self.base.is_none_or(|x| x >= 0.0),
            "a number of seconds >= 0",
        )?;
        for (name, v) in [("base", self.base), ("cap", self.cap)] {
            if v.is_some_and(|x| x > MAX_DURATION_S as f64) {
                return Err(Error::invalid(crate::model::time::duration_message(
                    &format!("retry policy {name}"),
                    crate::model::time::Least::Zero,
                    v.unwrap(),
                )));
            }
        }
        check(
            "factor",
            self.factor,
            self.factor.is_none_or(|x| x >= 1.0),
            ">= 1",
        )?;
        // Past a few hundred the cap is reached at the second retry anyway.
        check(
            "factor",
            self.factor,
            self.factor.is_none_or(|x| x <= MAX_FACTOR),
            "between 1 and 1000",
        )?;
        check(
            "cap",
            self.cap,
            self.cap.is_none_or(|x| x >= 0.0),
            "a number of seconds >= 0",
        )?;
        check(
            "jitter",
            self.jitter,
            self.jitter.is_none_or(|x| (0.0..=1.0).contains(&x)),
            "a fraction between 0 and 1",
        )?;
        Ok(())
    }

    pub fn apply(&self, p: RetryPolicy) -> RetryPolicy {
        RetryPolicy {
            base: self.base.unwrap_or(p.base),
            factor: self.factor.unwrap_or(p.factor),
            cap: self.cap.unwrap_or(p.cap),
            jitter: self.jitter.unwrap_or(p.jitter),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == RetryOverrides::default()
    }
}

impl RetryPolicy {
    /// Delay in milliseconds after `failed_attempts` (>= 1) attempts have failed.
    /// Never more than `MAX_DURATION_MS`, whatever a policy stored by an earlier version says.
    pub fn delay_ms(&self, failed_attempts: i64, unit_random: f64) -> i64 {
        let n = (failed_attempts.max(1) - 1).min(1000) as i32;
        let raw = (self.base * self.factor.powi(n)).min(self.cap);
        let spread = 1.0 + self.jitter * (2.0 * unit_random - 1.0);
        let ms = ((raw * spread).max(0.0) * 1000.0).round();
        if ms.is_nan() {
            return 0;
        }
        (ms as i64).min(crate::model::time::MAX_DURATION_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        let p = RetryPolicy {
            base: 1.0,
            factor: 2.0,
            cap: 10.0,
            jitter: 0.0,
        };
        let d: Vec<i64> = (1..=6).map(|n| p.delay_ms(n, 0.5)).collect();
        assert_eq!(d, vec![1000, 2000, 4000, 8000, 10000, 10000]);
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let p = RetryPolicy {
            jitter: 0.25,
            ..RetryPolicy::default()
        };
        assert_eq!(p.delay_ms(1, 0.0), 750);
        assert_eq!(p.delay_ms(1, 1.0), 1250);
    }

    #[test]
    fn overrides_apply_key_by_key_and_validate() {
        let o = RetryOverrides {
            base: Some(5.0),
            ..Default::default()
        };
        assert_eq!(o.apply(RetryPolicy::default()).base, 5.0);
        assert_eq!(o.apply(RetryPolicy::default()).factor, 2.0);
        assert!(RetryOverrides {
            jitter: Some(1.5),
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(RetryOverrides {
            factor: Some(0.5),
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}
