//! Ends the process when no step has finished for a while. A hung driver cannot be cancelled
//! from the host, so a long run that stops making progress exits with an error naming the step
//! it was on; outputs are only ever renamed into place at the end ([`crate::files`]), so none is
//! left half-written.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// A thread that exits the process with an error when [`Watchdog::step`] or
/// [`Watchdog::alive`] has not been called for the timeout. Dropping the watchdog stops the
/// thread. Meant for a program's main job (the CLI's runs): it ends the whole process.
pub struct Watchdog {
    /// The step under way and when the previous one finished.
    progress: Arc<Mutex<(usize, Instant)>>,
    /// Set when the watchdog is dropped: the thread then ends without judging.
    stopped: Arc<AtomicBool>,
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
    }
}

impl Watchdog {
    /// Starts watching `what` (named in the error) with `timeout` seconds; `None` watches
    /// nothing. Fails on a timeout that is not a positive number.
    pub fn start(timeout: Option<f64>, what: String) -> Result<Option<Self>> {
        let Some(timeout) = timeout else {
            return Ok(None);
        };
        if !(timeout.is_finite() && timeout > 0.0) {
            return Err(Error::InvalidArgument(
                "--timeout must be a positive number of seconds".into(),
            ));
        }
        let progress = Arc::new(Mutex::new((0, Instant::now())));
        let stopped = Arc::new(AtomicBool::new(false));
        let (watched, stop) = (Arc::clone(&progress), Arc::clone(&stopped));
        let limit = Duration::from_secs_f64(timeout);
        std::thread::spawn(move || loop {
            std::thread::sleep(limit.min(Duration::from_millis(200)));
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let (step, since) = *watched.lock().unwrap_or_else(|e| e.into_inner());
            if since.elapsed() > limit {
                eprintln!("error: {what}: no progress for {timeout} s at step {step}; stopping");
                std::process::exit(1);
            }
        });
        Ok(Some(Watchdog { progress, stopped }))
    }

    /// Records progress without moving to another step (the profile after the timed steps).
    pub fn alive(watchdog: &Option<Self>) {
        if let Some(w) = watchdog {
            w.progress.lock().unwrap_or_else(|e| e.into_inner()).1 = Instant::now();
        }
    }

    /// Records that `step` is now under way.
    pub fn step(watchdog: &Option<Self>, step: usize) {
        if let Some(w) = watchdog {
            *w.progress.lock().unwrap_or_else(|e| e.into_inner()) = (step, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Watchdog;

    #[test]
    fn a_dropped_watchdog_never_fires() {
        // Were the thread still judging after the drop, it would end this test process.
        let watchdog = Watchdog::start(Some(0.05), "test".into()).unwrap();
        Watchdog::step(&watchdog, 1);
        drop(watchdog);
        std::thread::sleep(std::time::Duration::from_millis(400));
    }

    #[test]
    fn the_timeout_must_be_a_positive_number() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(Watchdog::start(Some(bad), "test".into()).is_err());
        }
        assert!(Watchdog::start(None, "test".into()).unwrap().is_none());
    }
}
