//! A scoped pool that hands out per-shard work items to a fixed number of threads; the first
//! error stops the others at their next item.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use crate::error::SealError;

/// All the cores this process may use (at least one).
pub fn available() -> usize {
    thread::available_parallelism().map_or(1, usize::from)
}

/// Runs `work(&mut state, item)` for every item on `workers` threads (the calling thread is
/// one of them), each with its own `state` from `init`. Returns the error of the lowest item
/// that failed, so that a report names the earliest damage whatever the scheduling.
pub fn run<I, S>(
    items: Vec<I>,
    workers: usize,
    init: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, I) -> Result<(), SealError> + Sync,
) -> Result<(), SealError>
where
    I: Send,
{
    let workers = workers.clamp(1, items.len().max(1));
    let queue = Mutex::new(items.into_iter().enumerate());
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<(usize, SealError)>> = Mutex::new(None);
    let worker = || {
        let mut state = init();
        loop {
            if failed.load(Ordering::Relaxed) {
                return;
            }
            // A poisoned lock means another worker panicked; the scope re-raises that panic.
            let Some((n, item)) = queue.lock().ok().and_then(|mut q| q.next()) else { return };
            if let Err(e) = work(&mut state, item) {
                failed.store(true, Ordering::Relaxed);
                if let Ok(mut first) = first_error.lock()
                    && first.as_ref().is_none_or(|(m, _)| n < *m)
                {
                    *first = Some((n, e));
                }
            }
        }
    };
    thread::scope(|scope| {
        for _ in 1..workers {
            thread::Builder::new()
                .name("nacre-seal".into())
                .spawn_scoped(scope, worker)
                .map_err(SealError::Io)?;
        }
        worker();
        Ok::<(), SealError>(())
    })?;
    match first_error.into_inner() {
        Ok(Some((_, e))) => Err(e),
        Ok(None) => Ok(()),
        Err(_) => Err(SealError::Crypto),
    }
}
