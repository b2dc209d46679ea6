//! `POST /v2/models/{name}[/versions/{v}]/infer`: authentication and rate limits, the body
//! parsed as it arrives (JSON, or JSON then raw tensors with the binary tensor extension),
//! one run of the model on a core, and the response in the encoding each output asked for.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::batcher::{BatchError, Batcher};
use super::kserve::parse::{Parameter, ParsedRequest};
use super::kserve::{self, Framing, InferResponse, OutputTensor, ParseError};
use super::{App, Conn, INLINE_RUN_NS, Ready, Reject, Shared, body};

/// The binary tensor extension's header: the length of the body's JSON part.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

pub(super) async fn infer(
    State(app): Shared,
    Extension(conn): Extension<Conn>,
    Path(path): Path<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let t = Instant::now();
    let r = match super::model_of_path(&app, &path) {
        Ok(ready) => {
            let r = infer_inner(&app, &ready, &conn, &headers, body, t).await;
            let stats = &app.stats;
            match &r {
                Ok(_) => stats.success.add(t.elapsed()),
                Err(_) => stats.fail.add(t.elapsed()),
            }
            r
        }
        Err(e) => Err(e),
    };
    app.finish("infer", t, r)
}

async fn infer_inner(
    app: &App,
    ready: &Arc<Ready>,
    conn: &Conn,
    headers: &HeaderMap,
    body: Body,
    _arrived: Instant,
) -> Result<Response, Reject> {
    let identity = app.client(conn, headers)?;
    let framing = framing(headers)?;
    if let Some(declared) = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok())
        && declared.parse::<u64>().map_or(true, |n| n > app.max_request as u64)
    {
        return Err(Reject::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the request body exceeds {} bytes", app.max_request),
        ));
    }
    // Parsed as it arrives, straight into typed tensors paid for from the budget; the first
    // refusal ends the request without reading the rest of the body.
    let meta = &ready.metadata;
    let schema = kserve::Schema::new(&meta.inputs, &meta.outputs)
        .map_err(|e| Reject::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let options = kserve::Options { allow_non_finite: app.allow_non_finite };
    let mut held = app.budget.reservation();
    let (request, held) = body::parse(body, app.max_request, move |reader| {
        let request = kserve::parse_request(reader, framing, &schema, options, &mut held)?;
        Ok::<_, ParseError>((request, held))
    })
    .await
    .map_err(|e| match e {
        body::Streamed::Parse(e) => parse_reject(e),
        body::Streamed::Body(e) => body_reject(e),
    })?;
    let ParsedRequest { id, parameters, inputs, outputs: wanted, .. } = request;
    let selected = select_outputs(&meta.outputs, &parameters, wanted.as_deref())?;
    let inputs = inputs.into_iter().map(|t| nacre_model::Tensor { shape: t.shape, data: t.data }).collect();
    let (outputs, flag) = app.run_guarded(ready, inputs, identity).await?;
    let outputs = meta
        .outputs
        .iter()
        .zip(outputs)
        .zip(selected)
        .filter_map(|((spec, out), binary)| {
            binary.map(|binary| OutputTensor {
                name: spec.name.clone(),
                shape: out.shape,
                data: out.data,
                binary,
            })
        })
        .collect();
    let response = InferResponse {
        model_name: meta.name.clone(),
        model_version: meta.versions.first().cloned(),
        id,
        parameters: flag.map(|f| f.parameters()),
        outputs,
    };
    // The inputs' share of the budget comes back once inference has dropped them.
    drop(held);
    let (body, json_len) = response
        .encode()
        .map_err(|e| Reject::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(match json_len {
        None => {
            ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
        }
        Some(n) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
                (header::HeaderName::from_static(HEADER_LENGTH), HeaderValue::from(n)),
            ],
            body,
        )
            .into_response(),
    })
}

/// JSON alone, or the binary tensor extension with the JSON part's length.
fn framing(headers: &HeaderMap) -> Result<Framing, Reject> {
    let Some(value) = headers.get(HEADER_LENGTH) else { return Ok(Framing::Json) };
    let json_len = value
        .to_str()
        .ok()
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<usize>().ok())
        .ok_or_else(|| Reject::bad("bad_header", "Inference-Header-Content-Length is not a byte count"))?;
    if json_len == 0 {
        // Triton's "the whole body is the one input's raw data": it needs a model
        // configuration that fixes the input's shape, which requests cannot then vary.
        return Err(Reject::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported",
            "Inference-Header-Content-Length: 0 (a body of raw data only) is not supported; send the JSON header",
        ));
    }
    Ok(Framing::Binary { json_len })
}

/// For each of the model's outputs, whether it is sent and how: `None` not asked for,
/// `Some(true)` raw after the JSON. No `outputs` means all of them; an output's `binary_data`
/// parameter overrides the request's `binary_data_output`.
fn select_outputs(
    outputs: &[kserve::TensorSpec],
    parameters: &kserve::parse::Parameters,
    wanted: Option<&[kserve::parse::RequestedOutput]>,
) -> Result<Vec<Option<bool>>, Reject> {
    let flag = |params: &kserve::parse::Parameters, key: &str, whose: &str| match params.get(key) {
        None => Ok(None),
        Some(Parameter::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(Reject::bad("invalid_input", format!("{whose}: parameter {key:?} is not a boolean"))),
    };
    let default = flag(parameters, "binary_data_output", "the request")?.unwrap_or(false);
    let Some(wanted) = wanted else { return Ok(vec![Some(default); outputs.len()]) };
    let mut selected = vec![None; outputs.len()];
    for w in wanted {
        let whose = format!("output {:?}", w.name);
        if w.parameters.get("classification").is_some() {
            return Err(Reject::bad("invalid_input", format!("{whose}: classification is not supported")));
        }
        // The parser has checked that each is an output of the model, once.
        if let Some(i) = outputs.iter().position(|o| o.name == w.name) {
            selected[i] = Some(flag(&w.parameters, "binary_data", &whose)?.unwrap_or(default));
        }
    }
    Ok(selected)
}

/// A request the parser refused, as the client sees it.
pub(super) fn parse_reject(e: ParseError) -> Reject {
    match e {
        ParseError::Malformed(_) => Reject::bad("malformed", e.to_string()),
        ParseError::Invalid(e) => Reject::bad("invalid_input", e.to_string()),
        ParseError::Busy(e) => Reject {
            retry_after: Some(1),
            ..Reject::new(StatusCode::SERVICE_UNAVAILABLE, "busy", format!("the server is busy: {e}"))
        },
        ParseError::Read(e) => Reject::bad("bad_body", format!("reading the request body: {e}")),
    }
}

/// A body that could not be read. (A body past its deadline or a request past the handler cap
/// gets the HTTP layer's own answer, 408 or 503, whatever this says.)
fn body_reject(e: body::BodyError) -> Reject {
    match e {
        body::BodyError::TooLarge { .. } => {
            Reject::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
        }
        body::BodyError::Read(_) => Reject::bad("bad_body", e.to_string()),
        body::BodyError::Parser => Reject::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// A tract failure as the client sees it: the kind's code and message, never tract's text
/// (which can quote the model's constant tensors).
pub(super) fn model_reject(e: &nacre_model::ModelError) -> Reject {
    Reject::new(StatusCode::INTERNAL_SERVER_ERROR, e.code(), e.to_string())
}

impl App {
    /// Runs the model once on a core (waiting for one first), recording Triton's statistics.
    /// Dynamic batching in force for `ready`'s model: configured, and the model batchable.
    pub(super) fn batching_of(&self, ready: &Ready) -> Option<super::batcher::BatchConfig> {
        self.batching.filter(|_| ready.model.batchable())
    }

    /// [`App::run_model`] behind the model's guard, when it has one: the inputs checked first
    /// (a rejection never reaches the model), the client admitted and charged a model
    /// evaluation per row, its rows observed by the extraction detector after the run, and
    /// the outputs hardened last.
    pub(super) async fn run_guarded(
        &self,
        ready: &Arc<Ready>,
        inputs: Vec<nacre_model::Tensor>,
        client: Option<[u8; 32]>,
    ) -> Result<(Vec<nacre_model::Tensor>, Option<super::guard::Flag>), Reject> {
        let Some(guard) = &ready.guard else { return Ok((self.run_model(ready, inputs).await?, None)) };
        let found = guard.check(&inputs, &mut Vec::new())?;
        let rows = guard.rows(&inputs);
        let features = guard.manifest().features().max(1);
        let now = self.now_ms();
        guard.admit(client.as_ref(), (rows.len() / features).max(1) as u64, now)?;
        let kept = if guard.observes() { rows.to_vec() } else { Vec::new() };
        let mut outputs = self.run_model(ready, inputs).await?;
        guard.observe(client.as_ref(), &kept, &outputs, now)?;
        // Before hardening: the monitor sees the model's own scores.
        guard.monitor_request(&kept, &outputs, found.as_ref(), now);
        guard.harden(&mut outputs);
        Ok((outputs, found.filter(|f| f.respond)))
    }

    pub(super) async fn run_model(
        &self,
        ready: &Arc<Ready>,
        inputs: Vec<nacre_model::Tensor>,
    ) -> Result<Vec<nacre_model::Tensor>, Reject> {
        let internal = || Reject::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "inference failed");
        let batcher = self.batcher.get_or_init(|| {
            let config = self.batching_of(ready)?;
            Some(Batcher::start(ready.model.clone(), config, self.infer_slots.clone(), self.stats.clone()))
        });
        if let Some(batcher) = batcher {
            // The batcher counts queueing and executions itself (one per merged run).
            let (outputs, times) = batcher.run(inputs).await.map_err(|e| match e {
                BatchError::Model(e) => model_reject(&e),
                BatchError::Internal => internal(),
                BatchError::Closed => Reject::unavailable("the server is shutting down"),
            })?;
            self.stats.compute_input.add(times.input);
            self.stats.compute_infer.add(times.infer);
            self.stats.compute_output.add(times.output);
            return Ok(outputs);
        }
        let queued = Instant::now();
        let _slot = self
            .infer_slots
            .acquire()
            .await
            .map_err(|_| Reject::unavailable("the server is shutting down"))?;
        self.stats.queue.add(queued.elapsed());
        let batch = inputs.first().and_then(|t| t.shape.first().copied()).unwrap_or(1) as u64;
        let model = ready.model.clone();
        let typical = self.typical_run_ns.load(Ordering::Relaxed);
        let (outputs, times) = if typical <= INLINE_RUN_NS {
            // A run this short costs less than the hand-off to a blocking thread and back.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.run_timed(inputs)))
                .map_err(|_| internal())?
        } else {
            tokio::task::spawn_blocking(move || model.run_timed(inputs))
                .await
                // A panic's message is tract's text too: not passed on.
                .map_err(|_| internal())?
        }
        .map_err(|e| model_reject(&e))?;
        let took = u64::try_from((times.input + times.infer + times.output).as_nanos()).unwrap_or(u64::MAX);
        // A moving average over about the last 8 runs; the first run sets it.
        let next =
            if typical == u64::MAX { took } else { (typical / 8).saturating_mul(7).saturating_add(took / 8) };
        self.typical_run_ns.store(next, Ordering::Relaxed);
        self.stats.compute_input.add(times.input);
        self.stats.compute_infer.add(times.infer);
        self.stats.compute_output.add(times.output);
        self.stats.executed(batch);
        Ok(outputs)
    }
}
