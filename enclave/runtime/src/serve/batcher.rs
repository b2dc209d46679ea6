//! Dynamic batching: concurrent requests for a model with a batch dimension are stacked along
//! it and run as one, up to `max_batch_size` rows, waiting at most `max_queue_delay` after the
//! first request of a batch arrived (Triton's `dynamic_batching`). Both come from the measured
//! configuration, so a client sees in the attested image how long its request may be held.
//!
//! One collector task forms batches; each batch runs on the blocking pool under one of the
//! server's inference slots, so batches and unbatched runs share the cores alike. Requests
//! whose tensors cannot be stacked with the batch being formed (another shape past the batch
//! dimension) start the next batch. A request's outputs are exactly its rows of the batch's
//! outputs: rows never mix, since every output of a batchable model carries the batch first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nacre_model::{Model, ModelError, RunTimes, Tensor};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::stats::ModelStats;

/// Requests waiting for the collector at most; more wait for room (their deadline still runs).
const QUEUE: usize = 1024;

/// The `[batching]` settings of the enclave configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    pub max_batch_size: usize,
    pub max_queue_delay: Duration,
}

#[derive(Debug)]
pub enum BatchError {
    Model(ModelError),
    /// The run panicked, or its outputs did not split back into the requests' rows.
    Internal,
    /// The collector is gone (shutting down).
    Closed,
}

type Outcome = Result<(Vec<Tensor>, RunTimes), BatchError>;

struct Job {
    inputs: Vec<Tensor>,
    rows: usize,
    arrived: Instant,
    reply: oneshot::Sender<Outcome>,
}

impl Job {
    /// Whether this job's inputs stack with `other`'s, input by input.
    fn stacks_with(&self, other: &Job) -> bool {
        self.inputs.len() == other.inputs.len()
            && self.inputs.iter().zip(&other.inputs).all(|(a, b)| a.stacks_with(b))
    }
}

pub struct Batcher {
    jobs: mpsc::Sender<Job>,
    config: BatchConfig,
}

impl core::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Batcher").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Batcher {
    /// Starts the collector (on the current tokio runtime).
    pub fn start(model: Model, config: BatchConfig, slots: Arc<Semaphore>, stats: Arc<ModelStats>) -> Self {
        let (jobs, rx) = mpsc::channel(QUEUE);
        tokio::spawn(collect(model, config, rx, slots, stats));
        Batcher { jobs, config }
    }

    /// Runs `inputs` (already validated against the model) as part of a batch; returns this
    /// request's outputs and the batch's run times.
    pub async fn run(&self, inputs: Vec<Tensor>) -> Outcome {
        let rows = inputs.first().and_then(|t| t.shape.first().copied()).unwrap_or(1);
        let (reply, answer) = oneshot::channel();
        let job = Job { inputs, rows, arrived: Instant::now(), reply };
        self.jobs.send(job).await.map_err(|_| BatchError::Closed)?;
        answer.await.unwrap_or(Err(BatchError::Closed))
    }
}

async fn collect(
    model: Model,
    config: BatchConfig,
    mut rx: mpsc::Receiver<Job>,
    slots: Arc<Semaphore>,
    stats: Arc<ModelStats>,
) {
    let mut next: Option<Job> = None;
    loop {
        let first = match next.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let deadline = tokio::time::Instant::from_std(first.arrived + config.max_queue_delay);
        let mut rows = first.rows;
        let mut batch = vec![first];
        while rows < config.max_batch_size {
            let job = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(job)) => job,
                Ok(None) | Err(_) => break,
            };
            if rows + job.rows <= config.max_batch_size && batch[0].stacks_with(&job) {
                rows += job.rows;
                batch.push(job);
            } else {
                next = Some(job);
                break;
            }
        }
        // Waiting for a slot here holds the next batch back too: requests queue in the channel
        // (and the batch that forms behind grows), as they would wait for a slot unbatched.
        let queued = Instant::now();
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        stats.queue.add(queued.elapsed());
        let model = model.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::task::spawn_blocking(move || execute(&model, batch, rows, &stats)).await;
        });
    }
}

/// Runs one batch and answers each of its requests.
fn execute(model: &Model, mut batch: Vec<Job>, rows: usize, stats: &ModelStats) {
    if batch.len() == 1 {
        if let Some(job) = batch.pop() {
            let outcome = model.run_timed(job.inputs).map_err(BatchError::Model);
            if outcome.is_ok() {
                stats.executed(rows as u64);
            }
            let _ = job.reply.send(outcome);
        }
        return;
    }
    let counts: Vec<usize> = batch.iter().map(|j| j.rows).collect();
    let width = batch[0].inputs.len();
    let mut columns: Vec<Vec<Tensor>> = (0..width).map(|_| Vec::with_capacity(batch.len())).collect();
    let mut replies = Vec::with_capacity(batch.len());
    for job in batch {
        for (column, t) in columns.iter_mut().zip(job.inputs) {
            column.push(t);
        }
        replies.push(job.reply);
    }
    let merged: Option<Vec<Tensor>> = columns.into_iter().map(Tensor::concat_rows).collect();
    let fail = |replies: Vec<oneshot::Sender<Outcome>>, e: &dyn Fn() -> BatchError| {
        for r in replies {
            let _ = r.send(Err(e()));
        }
    };
    let Some(merged) = merged else { return fail(replies, &|| BatchError::Internal) };
    let (outputs, times) = match model.run_timed(merged) {
        Ok(done) => done,
        Err(e) => return fail(replies, &|| BatchError::Model(e.clone())),
    };
    // Output k of request j is rows counts[..j] .. counts[..=j] of output k.
    let split: Option<Vec<Vec<Tensor>>> = outputs.into_iter().map(|t| t.split_rows(&counts)).collect();
    let Some(split) = split else { return fail(replies, &|| BatchError::Internal) };
    stats.executed(rows as u64);
    let mut per_request: Vec<Vec<Tensor>> =
        (0..replies.len()).map(|_| Vec::with_capacity(split.len())).collect();
    for output in split {
        for (mine, piece) in per_request.iter_mut().zip(output) {
            mine.push(piece);
        }
    }
    for (reply, outputs) in replies.into_iter().zip(per_request) {
        let _ = reply.send(Ok((outputs, times)));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use nacre_model::TensorData;

    fn x(rows: &[[f32; 4]]) -> Vec<Tensor> {
        vec![Tensor {
            shape: vec![rows.len(), 4],
            data: TensorData::Fp32(rows.iter().flatten().copied().collect()),
        }]
    }

    /// Concurrent requests are merged into one run (the stats count one execution of every
    /// row), and each gets exactly its own rows back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_run_as_one_batch_and_get_their_own_rows() {
        let model = Model::load(&nacre_model::sample::mlp_onnx_batched()).unwrap();
        let stats = Arc::new(ModelStats::default());
        let config = BatchConfig { max_batch_size: 8, max_queue_delay: Duration::from_millis(200) };
        let batcher = Arc::new(Batcher::start(model, config, Arc::new(Semaphore::new(1)), stats.clone()));
        let rows: Vec<[f32; 4]> = (0..6).map(|i| [i as f32, 1.0, -(i as f32), 0.5]).collect();
        let mut tasks = Vec::new();
        for chunk in [&rows[0..1], &rows[1..3], &rows[3..6]] {
            let (b, chunk) = (batcher.clone(), chunk.to_vec());
            tasks.push(tokio::spawn(async move { (chunk.clone(), b.run(x(&chunk)).await) }));
        }
        for task in tasks {
            let (chunk, outcome) = task.await.unwrap();
            let (outputs, _) = outcome.unwrap();
            assert_eq!(outputs[0].shape, vec![chunk.len(), 2]);
            let TensorData::Fp32(y) = &outputs[0].data else { panic!() };
            for (i, row) in chunk.iter().enumerate() {
                let want = nacre_model::sample::mlp_reference(row);
                assert!((y[2 * i] - want[0]).abs() < 1e-5 && (y[2 * i + 1] - want[1]).abs() < 1e-5);
            }
        }
        let (inferences, executions, _) = stats.counts();
        assert_eq!(inferences, 6);
        assert_eq!(executions, 1, "three concurrent requests within the delay ran as one batch");
    }

    /// A batch is cut at max_batch_size: a request that would pass it starts the next one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_batch_runs_without_waiting_for_more() {
        let model = Model::load(&nacre_model::sample::mlp_onnx_batched()).unwrap();
        let stats = Arc::new(ModelStats::default());
        let config = BatchConfig { max_batch_size: 2, max_queue_delay: Duration::from_secs(30) };
        let batcher = Arc::new(Batcher::start(model, config, Arc::new(Semaphore::new(2)), stats.clone()));
        let started = Instant::now();
        let a = tokio::spawn({
            let b = batcher.clone();
            async move { b.run(x(&[[1.0; 4], [2.0; 4]])).await }
        });
        a.await.unwrap().unwrap();
        // Two rows filled the batch: it did not wait out the 30 s delay.
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(stats.counts().1, 1);
    }
}
