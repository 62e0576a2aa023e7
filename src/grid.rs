//! The probe grid: every canary's probes fall on multiples of [`GRID`] of
//! one process-wide origin, so that the probes due within the same 10 ms
//! go out together. The kernel then wakes each server, and the agent,
//! once per batch instead of once per probe: at 10,000 targets, about half
//! the context switches and 27–29 % of a core instead of 33–42 %
//! (docs/benchmarks.md, "The probe grid"). A probe
//! moves by less than [`GRID`], once, when its connection opens; what the
//! probes measure does not change (each round trip is timed by itself).
//! It moves earlier, never later: the time between two probes, and so the
//! bounds of a silent loss, never grows past the interval.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// The grid's step. Probe intervals are whole multiples of it in practice
/// (`1s`, `500ms`): the probes of every canary stay on it.
pub const GRID: Duration = Duration::from_millis(10);

/// The last moment of the grid at or before `t`.
pub fn on_grid(t: Instant) -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    align(*ORIGIN.get_or_init(Instant::now), t, GRID)
}

/// The last moment of `origin + k·step` (any whole `k`, negative too) at
/// or before `t`.
fn align(origin: Instant, t: Instant, step: Duration) -> Instant {
    let step_ns = step.as_nanos();
    let past = if t >= origin {
        (t - origin).as_nanos() % step_ns
    } else {
        let before = (origin - t).as_nanos() % step_ns;
        if before == 0 { 0 } else { step_ns - before }
    };
    t - Duration::from_nanos(u64::try_from(past).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn moments_round_down_to_the_last_step_of_the_origin() {
        let o = Instant::now();
        assert_eq!(align(o, o, ms(10)), o);
        assert_eq!(align(o, o + ms(3), ms(10)), o);
        assert_eq!(align(o, o + ms(10), ms(10)), o + ms(10));
        assert_eq!(align(o, o + ms(1_239), ms(10)), o + ms(1_230));
    }

    #[test]
    fn moments_before_the_origin_land_on_the_same_grid() {
        let o = Instant::now() + ms(1_000);
        assert_eq!(align(o, o - ms(3), ms(10)), o - ms(10));
        assert_eq!(align(o, o - ms(10), ms(10)), o - ms(10));
        assert_eq!(align(o, o - ms(997), ms(10)), o - ms(1_000));
    }

    #[test]
    fn every_canary_shares_one_grid() {
        let t = Instant::now() + ms(1_000);
        let first = on_grid(t);
        assert!(first <= t && t - first < GRID);
        for later in [ms(3), ms(7), ms(25), ms(1_001)] {
            let g = on_grid(t + later);
            assert!(g <= t + later && t + later - g < GRID);
            assert_eq!(
                (g.max(first) - g.min(first)).as_nanos() % GRID.as_nanos(),
                0
            );
        }
    }
}
