//! `inference.GRPCInferenceService` (Triton's `grpc_service.proto`, [`nacre_oip`]) on the same
//! TLS port as REST, over HTTP/2 (ALPN `h2`): one attested certificate, one connection table,
//! and — because every REST route is served on HTTP/2 too — the fresh, channel-bound
//! attestation (`GET /v1/attestation`) reachable on the very connection that carries the
//! inference.
//!
//! Requests pass the same checks as REST: the bearer token (`authorization` metadata), the
//! rate limits, the model's names, datatypes and shapes, values as strict as JSON's (raw
//! contents decoded by [`super::kserve::binary`]), the buffered-bytes budget. Outputs go out in
//! `raw_output_contents`, which is what tritonclient's `as_numpy` reads.

use std::sync::Arc;
use std::time::Instant;

use axum::http::{HeaderMap, StatusCode};
use nacre_model::{Datatype, TensorData};
use nacre_oip::inference as pb;
use pb::grpc_inference_service_server::GrpcInferenceService;
use tonic::{Code, Request, Response, Status};

use super::kserve::binary;
use super::kserve::parse::{Parameters, Tensor};
use super::kserve::{self, Invalid, Subject, TensorSpec};
use super::{App, Conn, EXTENSIONS, Ready, Reject};

/// The gRPC service of one enclave.
#[derive(Debug)]
pub struct Grpc {
    pub app: Arc<App>,
}

/// The gRPC status a REST refusal maps to (Triton's mapping of HTTP codes).
fn status(r: Reject) -> Status {
    let code = match r.status {
        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => Code::InvalidArgument,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::UNPROCESSABLE_ENTITY => Code::InvalidArgument,
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::TOO_MANY_REQUESTS => Code::ResourceExhausted,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Code::Unimplemented,
        _ => Code::Internal,
    };
    Status::new(code, r.message)
}

fn ready_model(app: &App, name: &str, version: &str) -> Result<Arc<Ready>, Reject> {
    let mut path = vec![("name".to_owned(), name.to_owned())];
    if !version.is_empty() {
        path.push(("version".to_owned(), version.to_owned()));
    }
    super::model_of_path(app, &path)
}

impl Grpc {
    /// Counts the call as REST's routes are counted, and answers it.
    fn finish<T>(
        &self,
        route: &'static str,
        t: Instant,
        r: Result<T, Reject>,
    ) -> Result<Response<T>, Status> {
        match r {
            Ok(v) => {
                self.app.record(route, t, 200, None);
                Ok(Response::new(v))
            }
            Err(reject) => {
                self.app.record(route, t, reject.status.as_u16(), Some(reject.reason));
                Err(status(reject))
            }
        }
    }
}

fn tensor_metadata(t: &TensorSpec) -> pb::model_metadata_response::TensorMetadata {
    pb::model_metadata_response::TensorMetadata {
        name: t.name.clone(),
        datatype: t.datatype.clone(),
        shape: t.shape.clone(),
    }
}

fn duration(t: &super::stats::Timed) -> Option<pb::StatisticDuration> {
    let (count, ns) = t.get();
    Some(pb::StatisticDuration { count, ns })
}

#[tonic::async_trait]
impl GrpcInferenceService for Grpc {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse { ready: self.app.ready().is_ok() }))
    }

    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let r = request.get_ref();
        let ready = ready_model(&self.app, &r.name, &r.version).is_ok();
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: "nacre-enclave".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: EXTENSIONS.iter().map(|e| (*e).to_owned()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let t = Instant::now();
        let r = request.get_ref();
        let answer = ready_model(&self.app, &r.name, &r.version).map(|ready| {
            let m = &ready.metadata;
            pb::ModelMetadataResponse {
                name: m.name.clone(),
                versions: m.versions.clone(),
                platform: m.platform.clone(),
                inputs: m.inputs.iter().map(tensor_metadata).collect(),
                outputs: m.outputs.iter().map(tensor_metadata).collect(),
            }
        });
        self.finish("grpc_model_metadata", t, answer)
    }

    async fn model_config(
        &self,
        request: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let t = Instant::now();
        let r = request.get_ref();
        let answer = ready_model(&self.app, &r.name, &r.version).map(|ready| {
            let m = &ready.metadata;
            let batching = self.app.batching_of(&ready);
            let data_type = |d: &str| {
                Datatype::parse(d)
                    .ok()
                    .and_then(|d| pb::DataType::from_str_name(d.config_name()))
                    .unwrap_or(pb::DataType::TypeInvalid) as i32
            };
            pb::ModelConfigResponse {
                config: Some(pb::ModelConfig {
                    name: m.name.clone(),
                    platform: m.platform.clone(),
                    backend: "tract".into(),
                    max_batch_size: batching.map_or(0, |b| b.max_batch_size as i32),
                    scheduling_choice: batching.map(|b| {
                        pb::model_config::SchedulingChoice::DynamicBatching(pb::ModelDynamicBatching {
                            max_queue_delay_microseconds: b.max_queue_delay.as_micros() as u64,
                            ..Default::default()
                        })
                    }),
                    input: m
                        .inputs
                        .iter()
                        .map(|i| pb::ModelInput {
                            name: i.name.clone(),
                            data_type: data_type(&i.datatype),
                            dims: super::triton::dims(i, batching),
                            ..Default::default()
                        })
                        .collect(),
                    output: m
                        .outputs
                        .iter()
                        .map(|o| pb::ModelOutput {
                            name: o.name.clone(),
                            data_type: data_type(&o.datatype),
                            dims: super::triton::dims(o, batching),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }),
            }
        });
        self.finish("grpc_model_config", t, answer)
    }

    async fn model_statistics(
        &self,
        request: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        let t = Instant::now();
        let r = request.get_ref();
        let ready =
            if r.name.is_empty() { self.app.ready() } else { ready_model(&self.app, &r.name, &r.version) };
        let answer = ready.map(|ready| {
            let s = &self.app.stats;
            let (inference_count, execution_count, last_inference) = s.counts();
            pb::ModelStatisticsResponse {
                model_stats: vec![pb::ModelStatistics {
                    name: ready.metadata.name.clone(),
                    version: ready.metadata.versions.first().cloned().unwrap_or_default(),
                    last_inference,
                    inference_count,
                    execution_count,
                    inference_stats: Some(pb::InferStatistics {
                        success: duration(&s.success),
                        fail: duration(&s.fail),
                        queue: duration(&s.queue),
                        compute_input: duration(&s.compute_input),
                        compute_infer: duration(&s.compute_infer),
                        compute_output: duration(&s.compute_output),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
            }
        });
        self.finish("grpc_model_statistics", t, answer)
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let t = Instant::now();
        let app = &self.app;
        let answer = match ready_model(app, &request.get_ref().model_name, &request.get_ref().model_version) {
            Ok(ready) => {
                let r = infer(app, &ready, request).await;
                match &r {
                    Ok(_) => app.stats.success.add(t.elapsed()),
                    Err(_) => app.stats.fail.add(t.elapsed()),
                }
                r
            }
            Err(e) => Err(e),
        };
        self.finish("grpc_infer", t, answer)
    }
}

async fn infer(
    app: &App,
    ready: &Arc<Ready>,
    request: Request<pb::ModelInferRequest>,
) -> Result<pb::ModelInferResponse, Reject> {
    let conn = request
        .extensions()
        .get::<Conn>()
        .cloned()
        .ok_or_else(|| Reject::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "no connection"))?;
    let headers: HeaderMap = request.metadata().clone().into_headers();
    let identity = app.client(&conn, &headers)?;
    let request = request.into_inner();
    let meta = &ready.metadata;
    let mut held = app.budget.reservation();
    let inputs = inputs(app, &meta.inputs, &request, &mut held).map_err(super::infer::parse_reject)?;
    let wanted = outputs(&meta.outputs, &request.outputs)?;
    let (outputs, flag) = app.run_guarded(ready, inputs, identity).await?;
    drop(held);
    let mut response = pb::ModelInferResponse {
        model_name: meta.name.clone(),
        model_version: meta.versions.first().cloned().unwrap_or_default(),
        id: request.id,
        ..Default::default()
    };
    if let Some(flag) = flag {
        use pb::infer_parameter::ParameterChoice;
        let param = |choice| pb::InferParameter { parameter_choice: Some(choice) };
        response
            .parameters
            .insert("nacre_guard".into(), param(ParameterChoice::StringParam(flag.finding.into())));
        if let Some(score) = flag.ood_score {
            response.parameters.insert("nacre_ood_score".into(), param(ParameterChoice::DoubleParam(score)));
        }
    }
    for ((spec, out), wanted) in meta.outputs.iter().zip(outputs).zip(wanted) {
        if !wanted {
            continue;
        }
        response.outputs.push(pb::model_infer_response::InferOutputTensor {
            name: spec.name.clone(),
            datatype: out.data.datatype().name().into(),
            shape: out.shape.iter().map(|&d| d as i64).collect(),
            ..Default::default()
        });
        let mut raw = Vec::with_capacity(out.data.wire_len());
        out.data.write_le(&mut raw);
        response.raw_output_contents.push(raw.into());
    }
    Ok(response)
}

/// Which of the model's outputs to send: the ones named, or all.
fn outputs(
    specs: &[TensorSpec],
    wanted: &[pb::model_infer_request::InferRequestedOutputTensor],
) -> Result<Vec<bool>, Reject> {
    if wanted.is_empty() {
        return Ok(vec![true; specs.len()]);
    }
    let mut selected = vec![false; specs.len()];
    for w in wanted {
        let i = specs.iter().position(|s| s.name == w.name).ok_or_else(|| {
            Reject::bad("invalid_input", Invalid::UnknownOutput(kserve::clip(&w.name)).to_string())
        })?;
        if std::mem::replace(&mut selected[i], true) {
            return Err(Reject::bad("invalid_input", Invalid::DuplicateOutput(w.name.clone()).to_string()));
        }
    }
    Ok(selected)
}

/// The request's inputs in the model's order, checked as REST checks them.
fn inputs(
    app: &App,
    specs: &[TensorSpec],
    request: &pb::ModelInferRequest,
    held: &mut super::budget::Reservation,
) -> Result<Vec<nacre_model::Tensor>, kserve::ParseError> {
    let raw = &request.raw_input_contents;
    if !raw.is_empty() && raw.len() != request.inputs.len() {
        return Err(Invalid::RawCount { inputs: request.inputs.len(), raw: raw.len() }.into());
    }
    let options = kserve::Options { allow_non_finite: app.allow_non_finite };
    let mut slots: Vec<Option<nacre_model::Tensor>> = specs.iter().map(|_| None).collect();
    for (i, input) in request.inputs.iter().enumerate() {
        let index = specs
            .iter()
            .position(|s| s.name == input.name)
            .ok_or_else(|| Invalid::UnknownInput(kserve::clip(&input.name)))?;
        if slots[index].is_some() {
            return Err(Invalid::DuplicateInput(input.name.clone()).into());
        }
        let spec = &specs[index];
        let datatype = match Datatype::parse(&input.datatype) {
            Ok(d) => d,
            Err(nacre_model::DatatypeError::Unsupported(datatype)) => {
                let subject = Subject(Some(input.name.clone()));
                return Err(Invalid::UnsupportedDatatype { input: subject, datatype }.into());
            }
            Err(nacre_model::DatatypeError::Unknown) => {
                let subject = Subject(Some(input.name.clone()));
                return Err(
                    Invalid::UnknownDatatype { input: subject, got: kserve::clip(&input.datatype) }.into()
                );
            }
        };
        if datatype.name() != spec.datatype {
            let (name, got, want) = (input.name.clone(), datatype.name().into(), spec.datatype.clone());
            return Err(Invalid::Datatype { name, got, want }.into());
        }
        let count = kserve::count_for(spec, &input.shape)?;
        let shape: Vec<usize> = input.shape.iter().map(|&d| d as usize).collect();
        let data = match (raw.get(i), &input.contents) {
            (Some(_), Some(_)) => return Err(Invalid::RawAndContents(input.name.clone()).into()),
            (Some(bytes), None) => {
                let fits = match datatype {
                    Datatype::Bytes => bytes.len() >= 4 * count,
                    _ => bytes.len() == count * datatype.element_size(),
                };
                if !fits {
                    let (name, got) = (input.name.clone(), bytes.len());
                    return Err(Invalid::BinarySize {
                        name,
                        got,
                        shape: input.shape.clone(),
                        datatype: datatype.name(),
                    }
                    .into());
                }
                let pending = Tensor {
                    name: input.name.clone(),
                    shape: shape.clone(),
                    data: TensorData::empty(datatype),
                    binary: Some(bytes.len()),
                    parameters: Parameters::default(),
                };
                binary::read(&mut &bytes[..], &pending, bytes.len(), options, held)?
            }
            (None, Some(contents)) => typed(&input.name, datatype, count, contents, options, held)?,
            (None, None) => return Err(Invalid::NoData(input.name.clone()).into()),
        };
        slots[index] = Some(nacre_model::Tensor { shape, data });
    }
    slots
        .into_iter()
        .zip(specs)
        .map(|(slot, spec)| slot.ok_or_else(|| Invalid::MissingInput(spec.name.clone()).into()))
        .collect()
}

/// An input given in the typed `contents` fields (tritonclient fills raw contents; other
/// clients may not). FP16 has no typed field: it comes raw.
fn typed(
    name: &str,
    datatype: Datatype,
    count: usize,
    c: &pb::InferTensorContents,
    options: kserve::Options,
    held: &mut super::budget::Reservation,
) -> Result<TensorData, kserve::ParseError> {
    fn narrow<S: Copy, T: TryFrom<S>>(name: &str, v: &[S], what: &'static str) -> Result<Vec<T>, Invalid> {
        v.iter()
            .enumerate()
            .map(|(index, &x)| {
                T::try_from(x).map_err(|_| Invalid::Value {
                    input: Subject(Some(name.to_owned())),
                    index,
                    what,
                })
            })
            .collect()
    }
    let finite = |index: Option<usize>| match index {
        Some(index) if !options.allow_non_finite => Err(Invalid::Value {
            input: Subject(Some(name.to_owned())),
            index,
            what: "not finite (NaN or ±inf)",
        }),
        _ => Ok(()),
    };
    held.grow(count.saturating_mul(datatype.element_size()))?;
    let data = match datatype {
        Datatype::Bool => TensorData::Bool(c.bool_contents.clone()),
        Datatype::Int8 => TensorData::Int8(narrow(name, &c.int_contents, "out of range for INT8")?),
        Datatype::Int16 => TensorData::Int16(narrow(name, &c.int_contents, "out of range for INT16")?),
        Datatype::Int32 => TensorData::Int32(c.int_contents.clone()),
        Datatype::Int64 => TensorData::Int64(c.int64_contents.clone()),
        Datatype::Uint8 => TensorData::Uint8(narrow(name, &c.uint_contents, "out of range for UINT8")?),
        Datatype::Uint16 => TensorData::Uint16(narrow(name, &c.uint_contents, "out of range for UINT16")?),
        Datatype::Uint32 => TensorData::Uint32(c.uint_contents.clone()),
        Datatype::Uint64 => TensorData::Uint64(c.uint64_contents.clone()),
        Datatype::Fp32 => {
            finite(c.fp32_contents.iter().position(|x| !x.is_finite()))?;
            TensorData::Fp32(c.fp32_contents.clone())
        }
        Datatype::Fp64 => {
            finite(c.fp64_contents.iter().position(|x| !x.is_finite()))?;
            TensorData::Fp64(c.fp64_contents.clone())
        }
        Datatype::Bytes => {
            let mut strings = Vec::with_capacity(c.bytes_contents.len());
            for (index, b) in c.bytes_contents.iter().enumerate() {
                let s = String::from_utf8(b.to_vec()).map_err(|_| Invalid::Value {
                    input: Subject(Some(name.to_owned())),
                    index,
                    what: "not UTF-8 (the model takes strings)",
                })?;
                strings.push(s);
            }
            held.grow(strings.iter().map(String::len).sum())?;
            TensorData::Bytes(strings.into_iter().collect())
        }
        Datatype::Fp16 => return Err(Invalid::NoData(name.to_owned()).into()),
    };
    if data.len() != count {
        return Err(
            Invalid::Count { name: name.to_owned(), got: data.len(), want: count, shape: vec![] }.into()
        );
    }
    Ok(data)
}
