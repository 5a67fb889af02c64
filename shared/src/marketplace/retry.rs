use std::time::Duration;

use chrono::{DateTime, Utc};

/// Exponential backoff with jitter for 408, 429, 5xx and lost connections (docs/marketplace-api.md#throttling-and-limits: Mona
/// retries 3 times, 2, 4, 8 s), always cut short by the call's deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    /// The first pause; each retry doubles it, up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// The longest `Retry-After` honoured as given; a longer one is cut to this.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The pause before retry number `retry` (1 for the first): Microsoft's `Retry-After` when it
    /// gave one, else the exponential delay with "equal jitter" (between half and all of it).
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(asked) = retry_after {
            return asked.min(self.max_retry_after);
        }
        let exponential = self.base_delay.saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)));
        let capped = exponential.min(self.max_delay);
        let half = capped / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

/// A `Retry-After` value: delay seconds, or an HTTP date (a date in the past means now).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = Utc.with_ymd_and_hms(2015, 10, 21, 7, 28, 0).single().expect("time");
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn delays_double_with_jitter_up_to_the_cap() {
        let policy = RetryPolicy {
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(8),
            ..RetryPolicy::default()
        };
        for (retry, full) in [(1, 2), (2, 4), (3, 8), (4, 8), (30, 8)] {
            for _ in 0..50 {
                let delay = policy.delay(retry, None);
                let full = Duration::from_secs(full);
                assert!(delay >= full / 2 && delay <= full, "retry {retry}: {delay:?}");
            }
        }
    }

    #[test]
    fn retry_after_wins_but_is_capped() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay(1, Some(Duration::from_secs(5))), Duration::from_secs(5));
        assert_eq!(policy.delay(1, Some(Duration::from_secs(3600))), policy.max_retry_after);
    }
}
