//! One rate limiter per Front company, shared by every task that calls Front with that token.
//!
//! Front counts requests per company (50, 100 or 200 per minute by plan), so the poller,
//! webhook preview enrichment and CLI commands of one connection must draw from a single
//! budget. The limiter spends it evenly: a token bucket (implemented as GCRA, the "virtual
//! scheduling" form) refilled at `rpm / 60` per second with a small burst. Each caller
//! reserves its own slot, so concurrent acquirers are served in arrival order and a backfill
//! runs at exactly the allowed pace instead of hitting 429s.
//!
//! It also learns from Front: `x-ratelimit-limit` lowers the pace when the plan is smaller
//! than configured, `x-ratelimit-remaining`/`x-ratelimit-reset` hold requests when another
//! client of the same company drained the window, and a 429 pauses everything for
//! `retry-after`.
//!
//! Time is `tokio::time::Instant`, so a test runtime with a paused clock drives it too. The
//! scheduling core ([`State`]) takes `now` as a parameter and is tested with synthetic times.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use tokio::time::Instant;

/// Longest pause we accept from `retry-after` or `x-ratelimit-reset`. Front's window is one
/// minute; a much larger value is more likely a unit mix-up (milliseconds) than intent, and
/// must not stall a connection for an hour.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
const MAX_RESET_HOLD: Duration = Duration::from_secs(61);

/// Counters for `/metrics` and `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateStats {
    /// The pace in requests per minute: the configured limit, or Front's lower one.
    pub limit: u32,
    /// `x-ratelimit-remaining` of the latest response that carried it.
    pub remaining: Option<u32>,
    /// Requests let through since start.
    pub requests_total: u64,
    /// 429 responses seen since start.
    pub throttled_total: u64,
}

/// Paces the requests of one Front company. Share it with `Arc`.
#[derive(Debug)]
pub struct RateLimiter {
    state: Mutex<State>,
    /// Responses by HTTP status, for metrics.
    statuses: Mutex<std::collections::BTreeMap<u16, u64>>,
}

impl RateLimiter {
    /// A limiter for a plan of `rpm` requests per minute (0 is treated as 1).
    pub fn new(rpm: u32) -> Arc<RateLimiter> {
        Arc::new(RateLimiter {
            state: Mutex::new(State::new(rpm, Instant::now())),
            statuses: Mutex::new(std::collections::BTreeMap::new()),
        })
    }

    /// Waits until one more request may be sent, then counts it.
    ///
    /// Dropping the future while it waits gives up the reserved slot unused (the budget is
    /// under-spent, never over-spent).
    pub async fn acquire(&self) {
        loop {
            let slot = self.lock().reserve(Instant::now());
            // A due slot skips the timer: an elapsed sleep still waits for the next timer tick.
            if slot > Instant::now() {
                tokio::time::sleep_until(slot).await;
            }
            let mut state = self.lock();
            // A 429 or an exhausted window may have paused everything while we slept; our slot
            // predates that pause, so take a new one behind it.
            if state.paused_at(Instant::now()) {
                continue;
            }
            state.requests_total += 1;
            return;
        }
    }

    /// Learns from the `x-ratelimit-*` headers of any response (call it for every one).
    pub fn observe(&self, headers: &HeaderMap) {
        self.lock()
            .observe(&RateHeaders::parse(headers), Instant::now(), unix_now());
    }

    /// Pauses every request after a 429. `retry_after` is Front's `retry-after` in (possibly
    /// fractional) seconds; `tier` its `x-front-tier`, present when a per-route burst limit was
    /// hit rather than the company's limit.
    pub fn on_429(&self, retry_after: Option<f64>, tier: Option<&str>) {
        let jitter = jitter_fraction();
        self.lock()
            .on_429(retry_after, tier, Instant::now(), jitter);
    }

    /// Counts one response by its HTTP status (for metrics).
    pub fn record_status(&self, status: u16) {
        let mut m = self.statuses.lock().unwrap_or_else(PoisonError::into_inner);
        *m.entry(status).or_default() += 1;
    }

    /// Responses so far, by HTTP status.
    pub fn status_counts(&self) -> std::collections::BTreeMap<u16, u64> {
        self.statuses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> RateStats {
        let state = self.lock();
        RateStats {
            limit: state.rpm,
            remaining: state.remaining,
            requests_total: state.requests_total,
            throttled_total: state.throttled_total,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements, so a panic elsewhere while holding
        // the lock leaves nothing half-done worth refusing service over.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `x-ratelimit-*` headers of one response, parsed leniently (absent or garbled = `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct RateHeaders {
    limit: Option<u32>,
    remaining: Option<u32>,
    /// Unix seconds, possibly fractional.
    reset: Option<f64>,
}

impl RateHeaders {
    fn parse(headers: &HeaderMap) -> RateHeaders {
        let number = |name: &str| -> Option<f64> {
            let value = headers
                .get(name)?
                .to_str()
                .ok()?
                .trim()
                .parse::<f64>()
                .ok()?;
            (value.is_finite() && value >= 0.0).then_some(value)
        };
        // Saturating float-to-int casts: a huge value becomes u32::MAX, harmless here.
        RateHeaders {
            limit: number("x-ratelimit-limit").map(|v| v as u32),
            remaining: number("x-ratelimit-remaining").map(|v| v as u32),
            reset: number("x-ratelimit-reset"),
        }
    }
}

/// The scheduling core. Every method takes the current time, so tests need no clock.
#[derive(Debug)]
struct State {
    configured_rpm: u32,
    /// The pace in use: `configured_rpm`, or Front's `x-ratelimit-limit` when lower.
    rpm: u32,
    /// GCRA's theoretical arrival time: when the next request would be due if there were no
    /// burst allowance. Slots are handed out from `tat - tolerance` onwards.
    tat: Instant,
    paused_until: Option<Instant>,
    remaining: Option<u32>,
    requests_total: u64,
    throttled_total: u64,
}

impl State {
    fn new(rpm: u32, now: Instant) -> State {
        let rpm = rpm.max(1);
        State {
            configured_rpm: rpm,
            rpm,
            tat: now,
            paused_until: None,
            remaining: None,
            requests_total: 0,
            throttled_total: 0,
        }
    }

    /// Time between two requests at the current pace.
    fn interval(&self) -> Duration {
        Duration::from_secs_f64(60.0 / f64::from(self.rpm))
    }

    /// Requests that may go back to back after an idle spell: small, so even a burst stays
    /// far below what Front would notice (5 at 50 rpm is 10% of the minute's budget).
    fn burst(&self) -> u32 {
        (self.rpm / 10).clamp(1, 5)
    }

    /// How far ahead of `tat` a request may go: the burst, in time.
    fn tolerance(&self) -> Duration {
        self.interval() * (self.burst() - 1)
    }

    fn paused_at(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|until| until > now)
    }

    /// Reserves the next free slot at or after `now` and returns it.
    fn reserve(&mut self, now: Instant) -> Instant {
        let mut earliest = now;
        if let Some(until) = self.paused_until {
            if until > now {
                earliest = until;
            } else {
                self.paused_until = None;
            }
        }
        let conforming = self.tat.checked_sub(self.tolerance()).unwrap_or(earliest);
        let slot = earliest.max(conforming);
        self.tat = self.tat.max(slot) + self.interval();
        slot
    }

    /// Holds every request until `until`, and restarts at the steady pace afterwards (no
    /// burst right after being told to stop).
    fn pause(&mut self, until: Instant) -> bool {
        let extended = self.paused_until.is_none_or(|current| until > current);
        if extended {
            self.paused_until = Some(until);
        }
        self.tat = self.tat.max(until + self.tolerance());
        extended
    }

    fn observe(&mut self, headers: &RateHeaders, now: Instant, unix_now: f64) {
        if let Some(limit) = headers.limit.filter(|&l| l > 0) {
            // Follow Front's figure down (and back up after a plan upgrade), never above the
            // configured one: the operator's number may deliberately leave room for other
            // integrations of the same company.
            let rpm = limit.min(self.configured_rpm);
            if rpm != self.rpm {
                tracing::info!(
                    configured_rpm = self.configured_rpm,
                    front_limit = limit,
                    rpm,
                    "front rate limit differs from the configured one; pacing at front's"
                );
                self.rpm = rpm;
            }
        }
        if let Some(remaining) = headers.remaining {
            self.remaining = Some(remaining);
            // Below the burst, the requests we may already have in flight could use up the
            // rest of the window (other clients of the company count too): wait for the reset.
            if remaining < self.burst()
                && let Some(hold) = headers.reset.and_then(|r| reset_delay(r, unix_now))
            {
                tracing::debug!(
                    remaining,
                    hold_secs = hold.as_secs_f64(),
                    "front rate-limit window nearly spent; holding requests until it resets"
                );
                self.pause(now + hold);
            }
        }
    }

    /// `jitter` is a fraction in `[0, 1)`.
    fn on_429(&mut self, retry_after: Option<f64>, tier: Option<&str>, now: Instant, jitter: f64) {
        self.throttled_total += 1;
        let base = match retry_after.filter(|s| s.is_finite() && *s >= 0.0) {
            // Fractional seconds are allowed; the floor keeps us from hammering on `0`.
            Some(secs) => Duration::from_secs_f64(secs.max(1.0)).min(MAX_RETRY_AFTER),
            // Without a hint, wait long enough for a burst's worth of budget to come back.
            None => (self.interval() * self.burst()).max(Duration::from_secs(2)),
        };
        // Up to 10% (at most 1 s) more, so several daemons of one company don't resume in step.
        let spread = base.mul_f64(0.1).min(Duration::from_secs(1));
        let wait = base + spread.mul_f64(jitter.clamp(0.0, 1.0));
        let new_pause = self.pause(now + wait);
        let wait_secs = wait.as_secs_f64();
        match (tier, new_pause) {
            (Some(tier), true) => tracing::warn!(
                tier,
                wait_secs,
                "front burst limit of one route hit (429, x-front-tier); pausing all requests"
            ),
            (None, true) => tracing::warn!(
                wait_secs,
                rpm = self.rpm,
                "front rate limit hit (429); pausing all requests"
            ),
            (_, false) => tracing::debug!(wait_secs, "another 429 during the same pause"),
        }
    }
}

/// How long to hold for `x-ratelimit-reset`, or `None` if it is in the past.
fn reset_delay(reset: f64, unix_now: f64) -> Option<Duration> {
    // Documented as Unix seconds; accept milliseconds and a relative "seconds from now" too,
    // rather than stalling or ignoring the hint when Front's format drifts.
    let secs = if reset > 1e11 {
        reset / 1000.0 - unix_now
    } else if reset < 1e9 {
        reset
    } else {
        reset - unix_now
    };
    (secs > 0.0).then(|| Duration::from_secs_f64(secs).min(MAX_RESET_HOLD))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A fraction in `[0, 1)`, different on every call. Jitter needs spread, not quality:
/// `RandomState` is randomly keyed per process and advanced per instance.
pub(crate) fn jitter_fraction() -> f64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(d: Duration) -> f64 {
        d.as_secs_f64()
    }

    /// A caller that sends its next request as soon as the previous slot came up.
    fn sequential(state: &mut State, start: Instant, n: usize) -> Instant {
        let mut now = start;
        for _ in 0..n {
            now = state.reserve(now);
        }
        now
    }

    #[test]
    fn burst_then_even_pace() {
        let start = Instant::now();
        let mut state = State::new(50, start);
        assert_eq!(state.burst(), 5);
        let slots: Vec<_> = (0..8).map(|_| state.reserve(start)).collect();
        for slot in &slots[..5] {
            assert_eq!(*slot, start, "the burst goes at once");
        }
        for pair in slots[4..].windows(2) {
            assert!(
                (secs(pair[1] - pair[0]) - 1.2).abs() < 1e-6,
                "then one per 1.2 s"
            );
        }
    }

    #[test]
    fn pacing_takes_m_over_n_minutes() {
        let start = Instant::now();
        let mut state = State::new(50, start);
        // 105 requests at 50 rpm: the burst of 5 is free, the other 100 take two minutes.
        let last = sequential(&mut state, start, 105);
        assert!(
            (secs(last - start) - 120.0).abs() < 0.01,
            "{:?}",
            last - start
        );

        let mut state = State::new(200, start);
        let last = sequential(&mut state, start, 605);
        assert!(
            (secs(last - start) - 180.0).abs() < 0.01,
            "{:?}",
            last - start
        );
    }

    #[test]
    fn burst_comes_back_after_idle_but_never_exceeds_the_cap() {
        let start = Instant::now();
        let mut state = State::new(100, start);
        sequential(&mut state, start, 50);
        let later = start + Duration::from_secs(3600);
        let slots: Vec<_> = (0..6).map(|_| state.reserve(later)).collect();
        assert!(slots[..5].iter().all(|s| *s == later));
        assert!((secs(slots[5] - later) - 0.6).abs() < 1e-6);
    }

    #[test]
    fn tiny_plans_have_a_burst_of_one() {
        let start = Instant::now();
        let mut state = State::new(0, start);
        assert_eq!((state.rpm, state.burst()), (1, 1));
        assert_eq!(state.reserve(start), start);
        assert_eq!(secs(state.reserve(start) - start), 60.0);
    }

    #[test]
    fn lower_header_limit_slows_the_pace_and_never_raises_it() {
        let start = Instant::now();
        let mut state = State::new(100, start);
        let headers = RateHeaders {
            limit: Some(20),
            ..RateHeaders::default()
        };
        state.observe(&headers, start, 1e9 + 5e8);
        assert_eq!(state.rpm, 20);
        assert_eq!(state.burst(), 2);
        let last = sequential(&mut state, start, 12);
        // 2 in the burst, then 10 at 3 s each.
        assert!(
            (secs(last - start) - 30.0).abs() < 1e-6,
            "{:?}",
            last - start
        );

        let higher = RateHeaders {
            limit: Some(500),
            ..RateHeaders::default()
        };
        state.observe(&higher, start, 1.5e9);
        assert_eq!(state.rpm, 100, "capped at the configured figure");
    }

    #[test]
    fn exhausted_window_waits_for_reset() {
        let start = Instant::now();
        let unix = 1_764_000_000.25;
        let mut state = State::new(100, start);
        let headers = RateHeaders {
            limit: Some(100),
            remaining: Some(0),
            reset: Some(unix + 5.5),
        };
        state.observe(&headers, start, unix);
        let slot = state.reserve(start);
        assert!(
            (secs(slot - start) - 5.5).abs() < 1e-6,
            "{:?}",
            slot - start
        );
        // After the hold: one at a time, not a burst.
        assert!((secs(state.reserve(start) - start) - 6.1).abs() < 1e-6);
        assert_eq!(state.remaining, Some(0));
    }

    #[test]
    fn plenty_remaining_or_past_reset_does_not_hold() {
        let start = Instant::now();
        let unix = 1_764_000_000.0;
        let mut state = State::new(100, start);
        state.observe(
            &RateHeaders {
                limit: Some(100),
                remaining: Some(40),
                reset: Some(unix + 30.0),
            },
            start,
            unix,
        );
        state.observe(
            &RateHeaders {
                limit: Some(100),
                remaining: Some(0),
                reset: Some(unix - 1.0),
            },
            start,
            unix,
        );
        assert_eq!(state.reserve(start), start);
    }

    #[test]
    fn reset_in_milliseconds_or_far_future_is_bounded() {
        let unix = 1_764_000_000.0;
        let ms = reset_delay((unix + 2.0) * 1000.0, unix).map(secs);
        assert!(ms.is_some_and(|d| (d - 2.0).abs() < 1e-3), "{ms:?}");
        assert_eq!(reset_delay(unix + 3600.0, unix), Some(MAX_RESET_HOLD));
        assert_eq!(reset_delay(4.0, unix), Some(Duration::from_secs(4)));
    }

    #[test]
    fn fractional_retry_after_pauses_that_long_with_a_one_second_floor() {
        let start = Instant::now();
        let mut state = State::new(100, start);
        state.on_429(Some(2.5), None, start, 0.0);
        assert!((secs(state.reserve(start) - start) - 2.5).abs() < 1e-6);
        assert_eq!(state.throttled_total, 1);

        let mut state = State::new(100, start);
        state.on_429(Some(0.5), Some("tier-2"), start, 0.0);
        assert!((secs(state.reserve(start) - start) - 1.0).abs() < 1e-6);

        // Jitter adds at most 10%.
        let mut state = State::new(100, start);
        state.on_429(Some(4.0), None, start, 0.999);
        let wait = secs(state.reserve(start) - start);
        assert!((4.0..=4.4).contains(&wait), "{wait}");
    }

    #[test]
    fn missing_retry_after_waits_a_burst_of_intervals_at_least_two_seconds() {
        let start = Instant::now();
        let mut state = State::new(50, start);
        state.on_429(None, None, start, 0.0);
        // 5 × 1.2 s.
        assert!((secs(state.reserve(start) - start) - 6.0).abs() < 1e-6);

        let mut state = State::new(200, start);
        state.on_429(None, None, start, 0.0);
        // 5 × 0.3 s = 1.5 s, raised to the 2 s minimum.
        assert!((secs(state.reserve(start) - start) - 2.0).abs() < 1e-6);
    }

    #[test]
    fn a_shorter_429_does_not_shorten_a_longer_pause() {
        let start = Instant::now();
        let mut state = State::new(100, start);
        state.on_429(Some(10.0), None, start, 0.0);
        state.on_429(Some(1.0), None, start, 0.0);
        assert!((secs(state.reserve(start) - start) - 10.0).abs() < 1e-6);
        assert_eq!(state.throttled_total, 2);
    }

    #[test]
    fn headers_parse_leniently() {
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-limit", "100".parse().unwrap());
        headers.insert("x-ratelimit-remaining", " 7 ".parse().unwrap());
        headers.insert("x-ratelimit-reset", "1764000000.512".parse().unwrap());
        let parsed = RateHeaders::parse(&headers);
        assert_eq!(parsed.limit, Some(100));
        assert_eq!(parsed.remaining, Some(7));
        assert_eq!(parsed.reset, Some(1_764_000_000.512));

        headers.insert("x-ratelimit-limit", "lots".parse().unwrap());
        headers.insert("x-ratelimit-remaining", "-3".parse().unwrap());
        let parsed = RateHeaders::parse(&headers);
        assert_eq!((parsed.limit, parsed.remaining), (None, None));
    }

    #[test]
    fn jitter_is_a_fraction() {
        for _ in 0..100 {
            let j = jitter_fraction();
            assert!((0.0..1.0).contains(&j));
        }
    }

    /// Real time, kept short by a high rate: 30 concurrent acquirers at 6000 rpm (one per
    /// 10 ms, burst 5) share one budget, so the last one gets through after ~250 ms.
    #[tokio::test]
    async fn concurrent_acquirers_share_one_budget() {
        let limiter = RateLimiter::new(6000);
        let start = std::time::Instant::now();
        let tasks: Vec<_> = (0..30)
            .map(|_| {
                let limiter = Arc::clone(&limiter);
                tokio::spawn(async move { limiter.acquire().await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(240), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
        assert_eq!(limiter.stats().requests_total, 30);
    }

    /// An acquirer that reserved its slot before a 429 arrived waits for the pause too.
    #[tokio::test]
    async fn pause_applies_to_waiting_acquirers() {
        let limiter = RateLimiter::new(600);
        for _ in 0..5 {
            limiter.acquire().await;
        }
        let start = std::time::Instant::now();
        let waiting = {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move { limiter.acquire().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        limiter.on_429(Some(1.0), None);
        waiting.await.unwrap();
        assert!(
            start.elapsed() >= Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        let stats = limiter.stats();
        assert_eq!((stats.requests_total, stats.throttled_total), (6, 1));
    }
}
