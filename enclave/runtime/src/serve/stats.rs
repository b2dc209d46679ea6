//! Per-model inference statistics, kept as Triton keeps them: served as its statistics
//! extension (`GET /v2/models[/{m}[/versions/{v}]]/stats`) and as the Prometheus metrics that
//! operators' Triton dashboards read (`nv_inference_*`, labelled by model and version).
//!
//! Counts and durations only: never input data, tokens or client addresses.

use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use serde_json::json;

/// A count and the time it took in all, as Triton's `StatisticDuration`.
#[derive(Debug, Default)]
pub struct Timed {
    count: AtomicU64,
    ns: AtomicU64,
}

impl Timed {
    pub fn add(&self, d: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.ns.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The count and the nanoseconds in all.
    pub fn get(&self) -> (u64, u64) {
        (self.count.load(Ordering::Relaxed), self.ns.load(Ordering::Relaxed))
    }

    fn json(&self) -> serde_json::Value {
        json!({"count": self.count.load(Ordering::Relaxed), "ns": self.ns.load(Ordering::Relaxed)})
    }
}

/// One model version's statistics.
#[derive(Debug, Default)]
pub struct ModelStats {
    /// Requests answered with outputs, and their whole time in the server (from the request's
    /// arrival to its response).
    pub success: Timed,
    /// Requests that reached the model's route and failed (refused input, inference error).
    pub fail: Timed,
    /// Waiting for a core.
    pub queue: Timed,
    /// Handing the inputs to tract, running the plan, taking the outputs back.
    pub compute_input: Timed,
    pub compute_infer: Timed,
    pub compute_output: Timed,
    /// Inferences: the batch sizes summed (a request of batch 4 counts 4).
    inference_count: AtomicU64,
    /// Runs of the model (one per request until requests are batched together).
    execution_count: AtomicU64,
    /// When the last inference finished, milliseconds since the epoch (0: none yet).
    last_inference_ms: AtomicU64,
    /// The model's name and version once it is served (the metrics' labels).
    label: RwLock<Option<(String, String)>>,
}

impl ModelStats {
    pub fn serving(&self, name: &str, version: &str) {
        *self.label.write().unwrap_or_else(|p| p.into_inner()) = Some((name.to_owned(), version.to_owned()));
    }

    /// One run of the model over `batch` inferences.
    pub fn executed(&self, batch: u64) {
        self.inference_count.fetch_add(batch, Ordering::Relaxed);
        self.execution_count.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        self.last_inference_ms.store(u64::try_from(now.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Inferences, executions, and when the last finished (ms since the epoch).
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.inference_count.load(Ordering::Relaxed),
            self.execution_count.load(Ordering::Relaxed),
            self.last_inference_ms.load(Ordering::Relaxed),
        )
    }

    /// Triton's `ModelStatistics` as JSON.
    pub fn json(&self, name: &str, version: &str) -> serde_json::Value {
        json!({
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms.load(Ordering::Relaxed),
            "inference_count": self.inference_count.load(Ordering::Relaxed),
            "execution_count": self.execution_count.load(Ordering::Relaxed),
            "inference_stats": {
                "success": self.success.json(),
                "fail": self.fail.json(),
                "queue": self.queue.json(),
                "compute_input": self.compute_input.json(),
                "compute_infer": self.compute_infer.json(),
                "compute_output": self.compute_output.json(),
                "cache_hit": {"count": 0, "ns": 0},
                "cache_miss": {"count": 0, "ns": 0},
            },
            "batch_stats": [],
        })
    }

    /// The `nv_inference_*` metrics of this model version. Triton exposes them in the text
    /// format without OpenMetrics' `_total` suffix, and dashboards query those exact names: they
    /// are written here as `unknown`-typed samples so that the names stay Triton's.
    fn encode(&self, name: &str, version: &str, encoder: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        let labels = [("model", name), ("version", version)];
        let micros = |t: &Timed| t.ns.load(Ordering::Relaxed) / 1_000;
        let series: [(&str, &str, u64); 9] = [
            (
                "nv_inference_request_success",
                "Number of successful inference requests, all batch sizes",
                self.success.count.load(Ordering::Relaxed),
            ),
            (
                "nv_inference_request_failure",
                "Number of failed inference requests, all batch sizes",
                self.fail.count.load(Ordering::Relaxed),
            ),
            (
                "nv_inference_count",
                "Number of inferences performed",
                self.inference_count.load(Ordering::Relaxed),
            ),
            (
                "nv_inference_exec_count",
                "Number of model executions performed",
                self.execution_count.load(Ordering::Relaxed),
            ),
            (
                "nv_inference_request_duration_us",
                "Cumulative inference request duration in microseconds",
                micros(&self.success) + micros(&self.fail),
            ),
            (
                "nv_inference_queue_duration_us",
                "Cumulative inference queuing duration in microseconds",
                micros(&self.queue),
            ),
            (
                "nv_inference_compute_input_duration_us",
                "Cumulative compute input duration in microseconds",
                micros(&self.compute_input),
            ),
            (
                "nv_inference_compute_infer_duration_us",
                "Cumulative compute inference duration in microseconds",
                micros(&self.compute_infer),
            ),
            (
                "nv_inference_compute_output_duration_us",
                "Cumulative inference compute output duration in microseconds",
                micros(&self.compute_output),
            ),
        ];
        for (metric, help, value) in series {
            let sample = Untyped(value);
            let mut family = encoder.encode_descriptor(metric, help, None, sample.metric_type())?;
            sample.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// A sample written under its exact name (`# TYPE … unknown`).
struct Untyped(u64);

impl EncodeMetric for Untyped {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> std::fmt::Result {
        encoder.encode_gauge(&(i64::try_from(self.0).unwrap_or(i64::MAX)))
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Unknown
    }
}

/// The `nv_inference_*` metrics, registered as a collector on the root registry (unprefixed);
/// nothing until a model is served.
#[derive(Debug)]
pub struct TritonMetrics(pub std::sync::Arc<ModelStats>);

impl Collector for TritonMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let label = self.0.label.read().unwrap_or_else(|p| p.into_inner()).clone();
        match label {
            Some((name, version)) => self.0.encode(&name, &version, &mut encoder),
            None => Ok(()),
        }
    }
}
