//! Prometheus metrics (`GET /metrics`, text exposition format). Labels carry route names,
//! stages and denial codes only: never key material, evidence or source addresses.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Route {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Stage {
    /// `verify` (evidence + policy), `wrap` (envelope open, HPKE, result signature),
    /// `storage` (the commit).
    pub stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Action {
    pub action: String,
}

fn latency() -> Histogram {
    // 50 µs … ~1.6 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub releases: Counter,
    pub denials: Family<Reason, Counter>,
    pub requests: Family<Route, Histogram, fn() -> Histogram>,
    pub release_stages: Family<Stage, Histogram, fn() -> Histogram>,
    pub admin_actions: Family<Action, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("nacre_attestation");
        let releases = Counter::default();
        let denials = Family::<Reason, Counter>::default();
        let requests = Family::<Route, Histogram, fn() -> Histogram>::new_with_constructor(latency);
        let release_stages = Family::<Stage, Histogram, fn() -> Histogram>::new_with_constructor(latency);
        let admin_actions = Family::<Action, Counter>::default();
        registry.register("releases", "Data keys released", releases.clone());
        registry.register("denials", "Requests refused, by reason", denials.clone());
        registry.register("request_duration_seconds", "Request latency by route", requests.clone());
        registry.register(
            "release_stage_duration_seconds",
            "Where key-release time goes: verify, wrap, storage",
            release_stages.clone(),
        );
        registry.register("admin_actions", "Admin changes, by action", admin_actions.clone());
        Metrics { registry, releases, denials, requests, release_stages, admin_actions }
    }
}

impl Metrics {
    /// Adds the connection table's metrics ([`nacre_http::metrics::ConnMetrics`]).
    pub fn with_connections(mut self, admission: std::sync::Arc<nacre_http::conns::Admission>) -> Self {
        self.registry.register_collector(Box::new(nacre_http::metrics::ConnMetrics(admission)));
        self
    }

    pub fn deny(&self, reason: &str) {
        self.denials.get_or_create(&Reason { reason: reason.to_owned() }).inc();
    }

    pub fn stage(&self, stage: &str, seconds: f64) {
        self.release_stages.get_or_create(&Stage { stage: stage.to_owned() }).observe(seconds);
    }

    pub fn route(&self, route: &str, seconds: f64) {
        self.requests.get_or_create(&Route { route: route.to_owned() }).observe(seconds);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
