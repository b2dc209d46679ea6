//! Renewal of the attested certificate. Each certificate is valid for the measured
//! configuration's `certificate_lifetime_secs` (default 24 h); at half-life the enclave makes
//! a new one exactly as it made the first ([`App::renew_certificate`]: a new key, fresh
//! evidence binding it and the model, a new certificate) and swaps it in for new connections.
//! A failed attempt is retried after a backoff (1 s doubling to 5 min). If renewal keeps
//! failing until the certificate expires, readiness turns false: clients would refuse it.
//!
//! Time comes from the app's [`crate::clock::Clock`]: [`Schedule`] decides, [`run`] only
//! sleeps between looks, in steps of at most a minute so that a wall clock that jumps is
//! noticed.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use time::{Duration, OffsetDateTime};

use super::App;
use crate::lifecycle::backoff;

/// The longest sleep between two looks at the clock.
const MAX_SLEEP: StdDuration = StdDuration::from_secs(60);

/// When the next renewal is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    lifetime: Duration,
    next: OffsetDateTime,
    failures: u32,
}

/// What one look at the schedule did.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    NotDue,
    Renewed { issued_at: OffsetDateTime },
    Failed { reason: String, retry_in: StdDuration },
}

impl Schedule {
    /// For a certificate issued at `issued_at`: due at half its lifetime.
    pub fn new(lifetime: Duration, issued_at: OffsetDateTime) -> Self {
        Schedule { lifetime, next: issued_at + lifetime / 2, failures: 0 }
    }

    pub fn due(&self, now: OffsetDateTime) -> bool {
        now >= self.next
    }

    /// How long until due (zero if due).
    pub fn until_due(&self, now: OffsetDateTime) -> StdDuration {
        StdDuration::try_from(self.next - now).unwrap_or(StdDuration::ZERO)
    }

    fn renewed(&mut self, issued_at: OffsetDateTime) {
        *self = Schedule::new(self.lifetime, issued_at);
    }

    fn failed(&mut self, now: OffsetDateTime) -> StdDuration {
        let delay = backoff(self.failures);
        self.failures = self.failures.saturating_add(1);
        self.next = now + delay;
        delay
    }
}

/// Renews the certificate if it is due. Blocking (the attester answers synchronously).
pub fn step(app: &App, schedule: &mut Schedule) -> Step {
    if !schedule.due(app.clock.now()) {
        return Step::NotDue;
    }
    match app.renew_certificate() {
        Ok(issued_at) => {
            schedule.renewed(issued_at);
            Step::Renewed { issued_at }
        }
        Err(reason) => Step::Failed { retry_in: schedule.failed(app.clock.now()), reason },
    }
}

/// Renews the certificate on `schedule` until the process ends, saying so on the console.
pub async fn run(app: Arc<App>, mut schedule: Schedule) {
    loop {
        tokio::time::sleep(schedule.until_due(app.clock.now()).min(MAX_SLEEP)).await;
        let (worker, mut next) = (app.clone(), schedule);
        let outcome = tokio::task::spawn_blocking(move || {
            let outcome = step(&worker, &mut next);
            (outcome, next)
        })
        .await;
        match outcome {
            Ok((Step::NotDue, next)) => schedule = next,
            Ok((Step::Renewed { issued_at }, next)) => {
                schedule = next;
                let valid_until = issued_at + schedule.lifetime;
                println!("NACRE-ENCLAVE-CERTIFICATE renewed, valid until {valid_until}");
            }
            Ok((Step::Failed { reason, retry_in }, next)) => {
                schedule = next;
                println!(
                    "NACRE-ENCLAVE-WARNING certificate renewal failed: {reason} (retrying in {} s)",
                    retry_in.as_secs()
                );
            }
            Err(_) => {
                let retry_in = schedule.failed(app.clock.now());
                println!(
                    "NACRE-ENCLAVE-WARNING certificate renewal stopped unexpectedly (retrying in {} s)",
                    retry_in.as_secs()
                );
            }
        }
    }
}
