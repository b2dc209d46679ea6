//! The connection table's state as Prometheus metrics, registered as a collector by each server
//! (`registry.register_collector(Box::new(ConnMetrics(admission)))`). Counts only: never
//! addresses.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::conns::Admission;

#[derive(Debug)]
pub struct ConnMetrics(pub Arc<Admission>);

impl Collector for ConnMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let open = ConstGauge::new(i64::try_from(self.0.open()).unwrap_or(i64::MAX));
        open.encode(encoder.encode_descriptor(
            "connections_open",
            "Open connections",
            None,
            open.metric_type(),
        )?)?;
        let c = &self.0.counters;
        let counters: [(&str, &str, &AtomicU64); 7] = [
            ("connections_admitted", "Connections admitted", &c.admitted),
            (
                "connections_refused",
                "Connections closed at once: every slot of the source or server in a handler",
                &c.refused,
            ),
            ("connections_displaced", "Stalled connections closed to admit a new one", &c.displaced),
            (
                "requests_at_capacity",
                "Requests answered 503 because handlers were at capacity",
                &c.at_capacity,
            ),
            (
                "connections_handshake_timeouts",
                "Connections closed past the handshake deadline",
                &c.timed_out_handshake,
            ),
            ("connections_idle_timeouts", "Connections closed waiting for a request", &c.timed_out_waiting),
            ("connections_body_timeouts", "Connections closed past the body deadline", &c.timed_out_body),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value.load(Ordering::Relaxed));
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        Ok(())
    }
}
