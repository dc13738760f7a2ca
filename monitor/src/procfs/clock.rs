//! Clocks: `CLOCK_BOOTTIME` (the probes' clock and the model's `Ktime`),
//! /proc start times, and wall time for output.
//!
//! Wall time is computed at conversion time from a fresh BOOTTIME/REALTIME
//! pair, never from a cached offset: a suspend or a `settimeofday` moves the
//! offset between the two clocks (clock_gettime(2)).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use monitor_model::Ktime;

const NS_PER_SEC: u64 = 1_000_000_000;

fn read(clock: libc::clockid_t) -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return None;
    }
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u64::try_from(ts.tv_nsec).ok()?;
    Some(secs.saturating_mul(NS_PER_SEC).saturating_add(nanos))
}

/// `CLOCK_BOOTTIME` now, in ns. Counts suspend, like `bpf_ktime_get_boot_ns`.
/// CLOCK_BOOTTIME exists since Linux 2.6.39; it cannot fail on a kernel this
/// program runs on, and 0 stands for "unknown" if it ever does.
pub fn boottime_ns() -> Ktime {
    read(libc::CLOCK_BOOTTIME).unwrap_or(0)
}

/// Clock ticks per second of /proc times (`USER_HZ`, sysconf(_SC_CLK_TCK)).
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|&hz| hz > 0).unwrap_or(100)
}

/// Converts `/proc/PID/stat` field 22 (`starttime`, ticks since boot) to
/// boottime ns. The kernel computes it from the task's boottime start
/// (`task->start_boottime` since 5.5, commit cf25e24db61c; `real_start_time`,
/// also boot-based, before), so it lines up with [`boottime_ns`] to within a
/// tick (10 ms at USER_HZ=100).
pub fn ticks_to_boottime_ns(ticks: u64, ticks_per_second: u64) -> Ktime {
    let hz = ticks_per_second.max(1);
    // Split to avoid overflowing for very long uptimes.
    let whole = (ticks / hz).saturating_mul(NS_PER_SEC);
    let frac = (ticks % hz).saturating_mul(NS_PER_SEC) / hz;
    whole.saturating_add(frac)
}

/// Wall time of a boottime instant, using the offset between the two clocks
/// as it is now. Reads BOOTTIME on both sides of REALTIME and uses the
/// midpoint, so the error is bounded by half the read window.
pub fn boottime_to_wall(at: Ktime) -> SystemTime {
    let pair = (
        read(libc::CLOCK_BOOTTIME),
        read(libc::CLOCK_REALTIME),
        read(libc::CLOCK_BOOTTIME),
    );
    let (Some(before), Some(real), Some(after)) = pair else {
        // No clocks: nothing better than "now".
        return SystemTime::now();
    };
    let boot_now = before + (after.saturating_sub(before)) / 2;
    let wall_now = UNIX_EPOCH + Duration::from_nanos(real);
    if at <= boot_now {
        wall_now
            .checked_sub(Duration::from_nanos(boot_now - at))
            .unwrap_or(UNIX_EPOCH)
    } else {
        wall_now
            .checked_add(Duration::from_nanos(at - boot_now))
            .unwrap_or(wall_now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_convert_exactly() {
        assert_eq!(ticks_to_boottime_ns(0, 100), 0);
        assert_eq!(ticks_to_boottime_ns(1, 100), 10_000_000);
        assert_eq!(ticks_to_boottime_ns(12_345, 100), 123_450_000_000);
        assert_eq!(ticks_to_boottime_ns(3, 1000), 3_000_000);
        assert_eq!(ticks_to_boottime_ns(7, 0), 7 * NS_PER_SEC);
        // ~5800 years of uptime at 100 Hz still does not overflow.
        assert_eq!(ticks_to_boottime_ns(u64::MAX, 100), u64::MAX);
    }

    #[test]
    fn boottime_is_monotonic_and_nonzero() {
        let a = boottime_ns();
        let b = boottime_ns();
        assert!(a > 0 && b >= a);
    }

    #[test]
    fn own_start_time_is_in_the_past() {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
        // Field 22 overall is the 20th after the comm.
        let ticks: u64 = after_comm.split(' ').nth(19).unwrap().parse().unwrap();
        let start = ticks_to_boottime_ns(ticks, ticks_per_second());
        let now = boottime_ns();
        assert!(start <= now, "start {start} now {now}");
        // The test binary started within the last hour.
        assert!(now - start < 3600 * NS_PER_SEC);
    }

    /// Like ebpf_exporter's ktime_test: the conversion of "now" must land
    /// within a few ms of the wall clock.
    #[test]
    fn wall_conversion_drift_is_bounded() {
        for _ in 0..100 {
            let before = SystemTime::now();
            let wall = boottime_to_wall(boottime_ns());
            let after = SystemTime::now();
            let slack = Duration::from_millis(5);
            assert!(wall + slack >= before, "{wall:?} < {before:?}");
            assert!(wall <= after + slack, "{wall:?} > {after:?}");
        }
    }

    #[test]
    fn wall_conversion_of_the_past_and_future() {
        let now = boottime_ns();
        let past = boottime_to_wall(now - 10 * NS_PER_SEC);
        let future = boottime_to_wall(now + 10 * NS_PER_SEC);
        let span = future.duration_since(past).unwrap();
        assert!(span >= Duration::from_millis(19_990) && span <= Duration::from_millis(20_010));
        assert!(boottime_to_wall(0) < SystemTime::now());
    }
}
