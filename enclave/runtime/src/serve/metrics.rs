//! Prometheus metrics (`GET /metrics`). Labels are route names, status codes and rejection
//! reasons from a fixed set: never input data, tokens or client addresses.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Request {
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Route {
    pub route: &'static str,
}

/// Where the way to serving stopped ([`crate::lifecycle::Failure::stage`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Stage {
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

fn latency() -> Histogram {
    // 25 µs … ~0.8 s
    Histogram::new(exponential_buckets(0.000_025, 2.0, 16))
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<Request, Counter>,
    pub latency: Family<Route, Histogram, fn() -> Histogram>,
    pub rejections: Family<Reason, Counter>,
    /// The model guard's findings by kind and action (counts only).
    pub guard: Family<crate::serve::guard::Finding, Counter>,
    /// Failures on the way to serving, by stage (a model the scan refuses: `model_refused`).
    pub failures: Family<Stage, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        // The root is unprefixed for Triton's `nv_*` names ([`Metrics::with_model_stats`]);
        // Nacre's own metrics are `nacre_enclave_*`.
        let mut registry = Registry::default();
        let requests = Family::<Request, Counter>::default();
        let latency = Family::<Route, Histogram, fn() -> Histogram>::new_with_constructor(latency);
        let rejections = Family::<Reason, Counter>::default();
        let ours = registry.sub_registry_with_prefix("nacre_enclave");
        ours.register("requests", "Requests by route and status", requests.clone());
        ours.register("request_duration_seconds", "Request latency by route", latency.clone());
        ours.register("rejections", "Requests refused, by reason", rejections.clone());
        let guard = Family::<crate::serve::guard::Finding, Counter>::default();
        ours.register("guard_findings", "Model guard findings by kind and the action taken", guard.clone());
        let failures = Family::<Stage, Counter>::default();
        ours.register("failures", "Failures on the way to serving, by stage", failures.clone());
        Metrics { registry, requests, latency, rejections, guard, failures }
    }
}

impl Metrics {
    /// Adds the connection table's metrics ([`nacre_http::metrics::ConnMetrics`]).
    pub fn with_connections(mut self, admission: std::sync::Arc<nacre_http::conns::Admission>) -> Self {
        let ours = self.registry.sub_registry_with_prefix("nacre_enclave");
        ours.register_collector(Box::new(nacre_http::metrics::ConnMetrics(admission)));
        self
    }

    /// Adds Triton's per-model metrics ([`crate::serve::stats::TritonMetrics`]), unprefixed.
    pub fn with_model_stats(mut self, stats: std::sync::Arc<crate::serve::stats::ModelStats>) -> Self {
        self.registry.register_collector(Box::new(crate::serve::stats::TritonMetrics(stats)));
        self
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
