//! `POST /v2/models/{name}[/versions/{v}]/explain`: KernelSHAP attributions of one input row,
//! computed inside the enclave (guard part 2), for a model whose owner's manifest offers
//! explanations. The request is a KServe v2 inference request in JSON with one row of the
//! guarded input; the input guard checks it as it checks inference.
//!
//! An explanation evaluates the model many times, and explanations make extraction cheaper
//! (Milli et al. 2018), so each one is charged to the client's budget at its number of model
//! evaluations before any runs, the row itself joins the client's extraction history, and it
//! runs under the manifest's own deadline on one of the inference cores. Under the `round`
//! output policy the numbers are rounded as outputs are; under `top_k` and `label` the manifest
//! cannot offer explanations at all (they would give the hidden scores away).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use nacre_guard::manifest::OutputPolicy;
use nacre_model::guarded::ExplainError;
use serde::Serialize;

use super::kserve::{self, Framing, ParseError};
use super::{App, Conn, Ready, Reject, Shared, body};

/// The response body.
#[derive(Debug, Serialize)]
struct ExplainResponse {
    model_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    /// The explained output (the model's first) and the features, by the manifest's names.
    output: String,
    features: Vec<String>,
    /// Per value of the output's row: E[f(background)], f(x), and one attribution per feature
    /// (they sum to value − base).
    base_value: Vec<f64>,
    value: Vec<f64>,
    attributions: Vec<Vec<f64>>,
    /// What it cost (charged to the client's budget) and whether every coalition was evaluated.
    evaluations: u64,
    coalitions: usize,
    exact: bool,
}

pub(super) async fn explain(
    State(app): Shared,
    Extension(conn): Extension<Conn>,
    Path(path): Path<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let t = Instant::now();
    let r = match super::model_of_path(&app, &path) {
        Ok(ready) => explain_inner(&app, ready, &conn, &headers, body).await,
        Err(e) => Err(e),
    };
    app.finish("explain", t, r)
}

async fn explain_inner(
    app: &App,
    ready: Arc<Ready>,
    conn: &Conn,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Reject> {
    let identity = app.client(conn, headers)?;
    let Some(guard) = ready.guard.as_ref().filter(|g| g.manifest().document().explanation.is_some()) else {
        return Err(Reject::new(
            StatusCode::NOT_FOUND,
            "no_explanations",
            "the model owner's guard manifest offers no explanations for this model",
        ));
    };
    let meta = &ready.metadata;
    let schema = kserve::Schema::new(&meta.inputs, &meta.outputs)
        .map_err(|e| Reject::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let options = kserve::Options { allow_non_finite: app.allow_non_finite };
    let mut held = app.budget.reservation();
    let (request, held) = body::parse(body, app.max_request, move |reader| {
        let request = kserve::parse_request(reader, Framing::Json, &schema, options, &mut held)?;
        Ok::<_, ParseError>((request, held))
    })
    .await
    .map_err(|e| match e {
        body::Streamed::Parse(e) => super::infer::parse_reject(e),
        body::Streamed::Body(e) => Reject::bad("bad_body", e.to_string()),
    })?;
    let inputs: Vec<nacre_model::Tensor> =
        request.inputs.into_iter().map(|t| nacre_model::Tensor { shape: t.shape, data: t.data }).collect();
    drop(held);
    guard.check(&inputs, &mut Vec::new())?;
    let x = guard.rows(&inputs).to_vec();
    let manifest = guard.manifest();
    if x.len() != manifest.features() {
        return Err(Reject::bad(
            "invalid_input",
            format!("an explanation is of one row: {} values for {} features", x.len(), manifest.features()),
        ));
    }
    let plan = nacre_model::guarded::explanation_plan(manifest, &x).map_err(|e| internal(&e))?;
    let now = app.now_ms();
    guard.admit(identity.as_ref(), plan.evaluations(), now)?;

    let settings = manifest.document().explanation.as_ref().map_or(0, |e| e.deadline_ms);
    let deadline = Instant::now() + Duration::from_millis(u64::from(settings));
    let _slot =
        app.infer_slots.acquire().await.map_err(|_| Reject::unavailable("the server is shutting down"))?;
    let (model_ready, x_run) = (ready.clone(), x.clone());
    let explained = tokio::task::spawn_blocking(move || {
        let Some(guard) = &model_ready.guard else { return Err(ExplainError::NotConfigured) };
        nacre_model::guarded::explain(&model_ready.model, guard.manifest(), &plan, &x_run, deadline)
    })
    .await
    // A panic's message is tract's text: not passed on.
    .map_err(|_| Reject::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "explanation failed"))?;
    let mut e = match explained {
        Ok(e) => e,
        Err(ExplainError::Deadline(ms)) => {
            return Err(Reject::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "explanation_deadline",
                format!(
                    "the explanation did not finish within its deadline of {ms} ms (the model owner's setting)"
                ),
            ));
        }
        Err(ExplainError::Model(e)) => return Err(super::infer::model_reject(&e)),
        Err(e) => return Err(internal(&e)),
    };
    // The row joins the client's history under the class the model gave it.
    let scores = nacre_model::Tensor {
        shape: vec![1, e.value.len()],
        data: nacre_model::TensorData::Fp32(e.value.iter().map(|&v| v as f32).collect()),
    };
    guard.observe(identity.as_ref(), &x, &[scores], now)?;
    if let OutputPolicy::Round { decimals } = manifest.document().output {
        let scale = 10f64.powi(i32::from(decimals));
        let round = |v: &mut f64| *v = (*v * scale).round() / scale;
        e.base
            .iter_mut()
            .chain(e.value.iter_mut())
            .chain(e.attributions.iter_mut().flatten())
            .for_each(round);
    }
    let response = ExplainResponse {
        model_name: meta.name.clone(),
        model_version: meta.versions.first().cloned(),
        id: request.id,
        output: meta.outputs.first().map(|o| o.name.clone()).unwrap_or_default(),
        features: manifest.document().input.features.iter().map(|f| f.name.clone()).collect(),
        base_value: e.base,
        value: e.value,
        attributions: e.attributions,
        evaluations: e.evaluations,
        coalitions: e.coalitions,
        exact: e.exact,
    };
    Ok(super::json(StatusCode::OK, &response).into_response())
}

fn internal(e: &ExplainError) -> Reject {
    Reject::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("explanation failed: {e}"))
}
