//! Evidence appraisal on a fixed set of threads, one per CPU, fed first come, first served.
//!
//! Appraisal is CPU-bound (a P-384 or RSA signature check per release) and may read the
//! collateral cache from disk, so it does not run on the async workers. A dedicated pool
//! rather than tokio's blocking pool because each thread takes the next queued appraisal
//! as soon as it finishes one: with a semaphore in front of `spawn_blocking`, a freed slot
//! stays idle until the waiting request's task is polled and hands its work to a blocking
//! thread, and more threads than cores only preempt each other and let late requests
//! overtake early ones. The threads run at a lower priority ([`NICE`]).

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, mpsc};

type Job = Box<dyn FnOnce() + Send>;

/// The appraisal threads' nice value. Appraisal is the bulk of a release's CPU time; the
/// other steps (TLS, HTTP, the HPKE wrap, the group commit's round trips to SQLite) are short
/// and each one a request waits on. At equal priority they queue for a core behind
/// appraisals, the group commit's cycle stretches and the cores idle while releases wait for
/// it. Measured (`scripts/bench-release.sh`, 4 interleaved runs each, concurrency 32): nice 0
/// 1,279–1,708 releases/s, 63–80 % CPU busy; nice 10 1,614–1,825/s, 83–93 % busy, with a
/// lower p99 in every pair. Appraisals are not starved: they run whenever nothing shorter
/// is ready.
const NICE: i32 = 10;

#[derive(Debug)]
pub struct AppraisalPool {
    jobs: mpsc::Sender<Job>,
}

impl AppraisalPool {
    /// Starts `threads` threads (at least one). They stop when the pool is dropped.
    pub fn start(threads: usize) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new().name(format!("appraise-{i}")).spawn(move || {
                // Best effort (on Linux the nice value is per thread): without it, fewer
                // releases per second, not wrong ones.
                let _ = rustix::process::setpriority_process(None, NICE);
                loop {
                    // The lock is held only while waiting for the next job, not while running it.
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(poisoned) => poisoned.into_inner().recv(),
                    };
                    let Ok(job) = job else { return };
                    // A panicking appraisal drops its reply (the caller sees `None`); the
                    // thread goes on with the next one.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                }
            })?;
        }
        Ok(AppraisalPool { jobs: tx })
    }

    /// Runs `f` on the pool after the appraisals queued before it. `None` if it panicked.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = reply.send(f());
        });
        self.jobs.send(job).ok()?;
        answer.await.ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)] // test code

    use super::*;

    #[tokio::test]
    async fn runs_in_order_survives_a_panic_and_uses_its_threads() {
        let pool = AppraisalPool::start(1).unwrap();
        let name = pool.run(|| std::thread::current().name().map(str::to_owned)).await.unwrap();
        assert_eq!(name.as_deref(), Some("appraise-0"));
        let nice = pool.run(|| rustix::process::getpriority_process(None).unwrap()).await.unwrap();
        assert!(nice >= NICE, "appraisal thread at nice {nice}");
        assert!(rustix::process::getpriority_process(None).unwrap() < NICE, "only the pool's threads");
        assert_eq!(pool.run(|| -> u8 { panic!("appraisal bug") }).await, None);
        // One thread: queued jobs run one after the other, in order, after the panic.
        let order = Arc::new(Mutex::new(Vec::new()));
        let runs: Vec<_> = (0..8)
            .map(|i| {
                let order = order.clone();
                pool.run(move || order.lock().unwrap().push(i))
            })
            .collect();
        for r in runs {
            r.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<_>>());
    }
}
