//! Wall-clock timestamps and the [`Clock`] the controller reads them from.
//!
//! State machines never read a clock: they take `now: Timestamp` as an
//! argument. Only the controller asks a [`Clock`], so tests can drive time
//! with tokio's paused clock through [`TokioClock`].

use std::fmt;
use std::ops::{Add, Sub};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch. Stored in records, so it is wall-clock
/// time that means the same thing to every host sharing a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The epoch itself.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// A timestamp from milliseconds since the epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Timestamp(millis)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// The current system time.
    pub fn now_system() -> Self {
        Timestamp::from(SystemTime::now())
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// `self + d`, saturating at the far future.
    pub fn saturating_add(self, d: Duration) -> Timestamp {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }

    /// As a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Timestamp(ms)
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        self.saturating_add(d)
    }
}

impl Sub<Timestamp> for Timestamp {
    type Output = Duration;
    fn sub(self, earlier: Timestamp) -> Duration {
        self.saturating_since(earlier)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            humantime::format_rfc3339_millis(self.to_system_time())
        )
    }
}

/// Where the controller reads the time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock: the right clock for production.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now_system()
    }
}

/// A clock that follows tokio's time, so `tokio::time::pause()` and
/// `advance()` move it. Starts at the wall-clock time of its creation.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    wall_at_start: Timestamp,
    tokio_at_start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads the wall time now and then advances with tokio's clock.
    pub fn new() -> Self {
        Self::starting_at(Timestamp::now_system())
    }

    /// A clock that reads `start` now and then advances with tokio's clock.
    pub fn starting_at(start: Timestamp) -> Self {
        TokioClock {
            wall_at_start: start,
            tokio_at_start: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.wall_at_start + self.tokio_at_start.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_millis(1_000);
        assert_eq!(t + Duration::from_secs(1), Timestamp::from_millis(2_000));
        assert_eq!(Timestamp::EPOCH - t, Duration::ZERO);
        assert_eq!(t - Timestamp::EPOCH, Duration::from_secs(1));
        assert_eq!(
            Timestamp::from_millis(u64::MAX) + Duration::from_secs(5),
            Timestamp::from_millis(u64::MAX)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = TokioClock::starting_at(Timestamp::from_millis(10_000));
        assert_eq!(clock.now(), Timestamp::from_millis(10_000));
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(clock.now(), Timestamp::from_millis(40_000));
    }
}
