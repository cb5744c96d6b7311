//! The retry policy: how many attempts a webhook gets and how long to wait between them.
//!
//! Pure. The default is the seed's: attempt 1 at once, then 1 minute, 10 minutes, 1 hour and
//! 24 hours after the previous attempt failed (five attempts in all).

use std::fmt;
use std::time::Duration;

/// Delays before attempts 2..=n, each counted from the failure of the attempt before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        RetrySchedule {
            delays: vec![
                Duration::from_secs(60),
                Duration::from_secs(10 * 60),
                Duration::from_secs(3600),
                Duration::from_secs(24 * 3600),
            ],
        }
    }
}

impl RetrySchedule {
    /// Parses `1m,10m,1h,24h` or `50ms,50ms,50ms,50ms`; an empty text means a single attempt.
    pub fn parse(s: &str) -> Result<Self, String> {
        let delays = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                humantime::parse_duration(p).map_err(|e| format!("`{p}` is not a duration ({e})"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if delays.len() > 20 {
            return Err("at most 20 retries".into());
        }
        Ok(RetrySchedule { delays })
    }

    /// How many attempts a webhook gets in all.
    pub fn max_attempts(&self) -> u32 {
        self.delays.len() as u32 + 1
    }

    /// The wait before the next attempt after attempt `attempt` (1-based) failed, or `None`
    /// if that was the last one.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        attempt
            .checked_sub(1)
            .and_then(|i| self.delays.get(i as usize))
            .copied()
    }
}

impl fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .delays
            .iter()
            .map(|d| humantime::format_duration(*d).to_string())
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl serde::Serialize for RetrySchedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for RetrySchedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RetrySchedule::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_seeds_five_attempts() {
        let s = RetrySchedule::default();
        assert_eq!(s.max_attempts(), 5);
        assert_eq!(s.delay_after(1), Some(Duration::from_secs(60)));
        assert_eq!(s.delay_after(2), Some(Duration::from_secs(600)));
        assert_eq!(s.delay_after(3), Some(Duration::from_secs(3600)));
        assert_eq!(s.delay_after(4), Some(Duration::from_secs(86_400)));
        assert_eq!(s.delay_after(5), None);
        assert_eq!(s.delay_after(0), None);
        assert_eq!(RetrySchedule::parse("1m,10m,1h,24h").unwrap(), s);
    }

    #[test]
    fn schedules_parse_from_configuration() {
        let s = RetrySchedule::parse("50ms, 50ms,50ms,50ms").unwrap();
        assert_eq!(s.max_attempts(), 5);
        assert_eq!(s.delay_after(4), Some(Duration::from_millis(50)));
        assert_eq!(RetrySchedule::parse("").unwrap().max_attempts(), 1);
        assert!(RetrySchedule::parse("1m,soon")
            .unwrap_err()
            .contains("soon"));
    }
}
