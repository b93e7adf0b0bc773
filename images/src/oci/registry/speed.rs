//! A floor under a transfer's speed, as curl's `--speed-limit`/`--speed-time`: an attempt whose
//! average rate over a whole window is below the floor is abandoned. A stall timeout alone lets
//! a server that sends one byte just before each timeout hold a transfer for ever; with the
//! floor, the slowest attempt that goes on moves at least `bytes_per_sec` on average.

use std::io::Read;
use std::time::{Duration, Instant};

/// The slowest a transfer may go, averaged over a window, before its attempt is abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpeedFloor {
    /// The lowest average rate accepted, in bytes per second.
    pub bytes_per_sec: u64,
    /// How long the rate is averaged over; a transfer is judged once a whole window has passed,
    /// so a slow start (a TCP window opening, a disk waking) is not cut off at once.
    pub window: Duration,
}

impl SpeedFloor {
    /// The fewest bytes that meet the floor over `elapsed` (saturating: a window too long to
    /// count in bytes asks for more than any transfer moves).
    fn bytes_for(&self, elapsed: Duration) -> u64 {
        let bytes = u128::from(self.bytes_per_sec).saturating_mul(elapsed.as_millis()) / 1000;
        u64::try_from(bytes).unwrap_or(u64::MAX)
    }
}

/// An attempt that moved too little over a window.
#[derive(Debug, thiserror::Error)]
#[error(
    "only {moved} bytes moved in {} s, under the floor of {} bytes/s: the transfer is too slow",
    elapsed.as_secs_f32(),
    floor.bytes_per_sec
)]
pub struct TooSlow {
    /// Bytes moved in the window.
    pub moved: u64,
    /// How long the window lasted (at least the floor's window).
    pub elapsed: Duration,
    /// The floor.
    pub floor: SpeedFloor,
}

impl From<TooSlow> for std::io::Error {
    fn from(slow: TooSlow) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::TimedOut, slow)
    }
}

impl TooSlow {
    /// The [`TooSlow`] inside an I/O error, if that is what it is.
    pub fn inside(error: &std::io::Error) -> Option<&TooSlow> {
        error.get_ref().and_then(|e| e.downcast_ref::<TooSlow>())
    }
}

/// Measures one attempt against a floor, window after window.
#[derive(Debug)]
pub struct Pace {
    floor: SpeedFloor,
    window_start: Instant,
    moved: u64,
}

impl Pace {
    /// Starts measuring now.
    pub fn new(floor: SpeedFloor) -> Pace {
        Pace {
            floor,
            window_start: Instant::now(),
            moved: 0,
        }
    }

    /// Counts `n` more bytes. Once a whole window has passed since the last judgement, the
    /// bytes moved in it are judged against the floor and a new window starts.
    pub fn count(&mut self, n: usize) -> Result<(), TooSlow> {
        self.moved = self
            .moved
            .saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        let elapsed = self.window_start.elapsed();
        if elapsed < self.floor.window {
            return Ok(());
        }
        if self.moved < self.floor.bytes_for(elapsed) {
            return Err(TooSlow {
                moved: self.moved,
                elapsed,
                floor: self.floor,
            });
        }
        self.window_start = Instant::now();
        self.moved = 0;
        Ok(())
    }
}

/// A reader that fails with [`TooSlow`] (as a `TimedOut` I/O error) when what it reads falls
/// under a floor.
pub struct Paced<R> {
    inner: R,
    pace: Pace,
}

impl<R: Read> Paced<R> {
    /// `inner`, measured from now.
    pub fn new(inner: R, floor: SpeedFloor) -> Paced<R> {
        Paced {
            inner,
            pace: Pace::new(floor),
        }
    }
}

impl<R: Read> Read for Paced<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        // The end of the body is never too slow: there is nothing left to wait for.
        if n > 0 {
            self.pace.count(n)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const FLOOR: SpeedFloor = SpeedFloor {
        bytes_per_sec: 1000,
        window: Duration::from_millis(100),
    };

    #[test]
    fn bytes_within_the_first_window_are_not_judged() {
        let mut pace = Pace::new(FLOOR);
        pace.count(1).unwrap();
    }

    #[test]
    fn a_window_under_the_floor_is_too_slow_and_one_over_it_is_not() {
        let mut pace = Pace::new(FLOOR);
        std::thread::sleep(Duration::from_millis(120));
        // 120 ms at 1000 bytes/s is 120 bytes.
        pace.count(500).unwrap();
        std::thread::sleep(Duration::from_millis(120));
        let slow = pace.count(10).unwrap_err();
        assert_eq!(slow.moved, 10);
        assert!(slow.to_string().contains("too slow"), "{slow}");
        let io: std::io::Error = slow.into();
        assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
        assert!(TooSlow::inside(&io).is_some());
    }

    #[test]
    fn an_endless_window_never_overflows() {
        let floor = SpeedFloor {
            bytes_per_sec: u64::MAX,
            window: Duration::MAX,
        };
        assert_eq!(floor.bytes_for(Duration::MAX), u64::MAX);
    }
}
