//! The inference request parser: JSON read from any [`Read`] (the request body as it arrives)
//! straight into typed tensors, with no `serde_json::Value` tree in between.
//!
//! What it holds is bounded before it is allocated:
//! - an input's values go into a buffer of its datatype, at most as many as its shape allows
//!   when `name`, `datatype` and `shape` come before `data` (the usual order), else as many as
//!   the model's inputs can take; the first value past that, or the first bad value, stops
//!   the parse, and nothing after it is read;
//! - every buffer's growth is paid for from the request's [`Reservation`] first, and the
//!   request is refused when the budget cannot pay ([`ParseError::Busy`]);
//! - no JSON string may be longer than 8 KiB, 2 MiB when the model takes BYTES (checked on
//!   the bytes as they are read, before serde_json buffers a string whole); nesting is at
//!   most the shape's rank + 1 levels; parameters are at most [`MAX_PARAMETERS`] scalars of
//!   [`MAX_PARAMETER_TEXT`] bytes; inputs and outputs must be the model's, each once.
//!
//! The JSON structure is as strict as a `deny_unknown_fields` struct: unknown and duplicate
//! keys are refused.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, BufReader, Read};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::sink::{Collected, Loose, Sink, Stop, sink_for};
use super::tensor::{Datatype, DatatypeError, TensorData};
use super::{Invalid, MAX_ELEMENTS, Scope, Subject, TensorSpec, clip};
use crate::serve::budget::{Exhausted, Reservation};

/// Most dimensions of a shape; also the most levels of nested data.
pub const MAX_RANK: usize = 32;
/// Longest request `id`, bytes (it is echoed in the response).
pub const MAX_ID: usize = 256;
/// Most entries of one `parameters` object.
pub const MAX_PARAMETERS: usize = 64;
/// Most bytes of one parameter: its key and, for a string, its value.
pub const MAX_PARAMETER_TEXT: usize = 4096;
/// Longest BYTES element, bytes.
pub const MAX_BYTES_ELEMENT: usize = 1 << 20;
/// The reader's buffer: also how far past a refused value the parser may have read.
const READ_BUFFER: usize = 8 * 1024;

/// The model's declared inputs and outputs, as the parser checks requests against them.
#[derive(Clone, Debug)]
pub struct Schema {
    inputs: Vec<InputSpec>,
    outputs: Vec<String>,
    /// The most values any input may take: the cap on data read before its input's name.
    max_count: usize,
    max_rank: usize,
    /// The datatype all inputs share, if they do: data read before its input's datatype is
    /// typed as that.
    common: Option<Datatype>,
    /// The longest JSON string accepted anywhere in a request, as [`StringBound`] counts.
    max_string: usize,
}

#[derive(Clone, Debug)]
struct InputSpec {
    name: String,
    datatype: Datatype,
    shape: Vec<i64>,
    /// The product of the static shape, or [`MAX_ELEMENTS`] with a dynamic dimension.
    max_count: usize,
}

/// A model tensor whose datatype requests cannot carry (the model is not servable).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the model's tensor {tensor:?} has datatype {datatype:?}, which requests cannot carry")]
pub struct Unservable {
    pub tensor: String,
    pub datatype: String,
}

impl Schema {
    pub fn new(inputs: &[TensorSpec], outputs: &[TensorSpec]) -> Result<Self, Unservable> {
        let inputs = inputs
            .iter()
            .map(|t| {
                let datatype = Datatype::parse(&t.datatype)
                    .map_err(|_| Unservable { tensor: t.name.clone(), datatype: t.datatype.clone() })?;
                let max_count = if t.shape.iter().any(|&d| d < 0) {
                    MAX_ELEMENTS
                } else {
                    t.shape
                        .iter()
                        .try_fold(1usize, |n, &d| n.checked_mul(d as usize))
                        .map_or(MAX_ELEMENTS, |n| n.min(MAX_ELEMENTS))
                };
                Ok(InputSpec { name: t.name.clone(), datatype, shape: t.shape.clone(), max_count })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let common = match inputs.split_first() {
            Some((first, rest)) if rest.iter().all(|i| i.datatype == first.datatype) => Some(first.datatype),
            _ => None,
        };
        let bytes = inputs.iter().any(|i| i.datatype == Datatype::Bytes);
        Ok(Schema {
            max_count: inputs.iter().map(|i| i.max_count).max().unwrap_or(0),
            max_rank: inputs.iter().map(|i| i.shape.len()).max().unwrap_or(0),
            common,
            // Twice the longest string a request may carry: escapes such as `\u00e9` count
            // more than they decode to.
            max_string: 2 * if bytes { MAX_BYTES_ELEMENT } else { MAX_PARAMETER_TEXT },
            outputs: outputs.iter().map(|t| t.name.clone()).collect(),
            inputs,
        })
    }

    /// What parsing needs besides the tensors, reserved before it starts: the reader's
    /// buffer and serde_json's string buffer (which may grow to twice the longest string).
    pub fn overhead(&self) -> usize {
        READ_BUFFER + 2 * self.max_string
    }

    fn input(&self, name: &str) -> Option<usize> {
        self.inputs.iter().position(|i| i.name == name)
    }
}

/// How values are checked.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Accept floats beyond FP16/FP32's range as ±infinity.
    pub allow_non_finite: bool,
}

/// A request that passed every check, its inputs in the model's order.
#[derive(Debug)]
pub struct ParsedRequest {
    pub id: Option<String>,
    /// The model's input indices in the order the request gave them: the order of their
    /// binary data.
    pub order: Vec<usize>,
    pub parameters: Parameters,
    pub inputs: Vec<Tensor>,
    /// The outputs asked for (all when absent).
    pub outputs: Option<Vec<RequestedOutput>>,
}

/// One input: its datatype and shape are the model's (dynamic dimensions filled in) and
/// `data` holds exactly as many elements as the shape says.
#[derive(Debug)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    /// Empty until [`super::binary`] reads it when the input came with `binary_data_size`.
    pub data: TensorData,
    /// `binary_data_size`: the data follows the JSON, this many bytes.
    pub binary: Option<usize>,
    #[allow(dead_code, reason = "accepted and bounded; nothing served reads parameters yet")]
    pub parameters: Parameters,
}

#[derive(Debug)]
pub struct RequestedOutput {
    pub name: String,
    pub parameters: Parameters,
}

/// A `parameters` object: at most [`MAX_PARAMETERS`] scalar values, keys unique.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parameters(Vec<(String, Parameter)>);

#[derive(Clone, Debug, PartialEq)]
pub enum Parameter {
    Bool(bool),
    Number(serde_json::Number),
    String(String),
}

impl Parameters {
    pub fn get(&self, key: &str) -> Option<&Parameter> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Why a request was not parsed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Not JSON, or not an inference request: unknown, duplicate or missing fields, a value of
    /// the wrong JSON type where the protocol fixes one.
    #[error("malformed request: {0}")]
    Malformed(serde_json::Error),
    /// An inference request this model cannot take.
    #[error(transparent)]
    Invalid(Invalid),
    /// The server's bound on buffered request data is reached: retry later.
    #[error(transparent)]
    Busy(Exhausted),
    /// The reader failed.
    #[error("reading the request body: {0}")]
    Read(io::Error),
}

impl From<Invalid> for ParseError {
    fn from(e: Invalid) -> Self {
        ParseError::Invalid(e)
    }
}

impl From<Exhausted> for ParseError {
    fn from(e: Exhausted) -> Self {
        ParseError::Busy(e)
    }
}

/// Where the request's JSON ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// The whole body is JSON.
    Json,
    /// The binary tensor extension: the first `json_len` bytes are JSON
    /// (`Inference-Header-Content-Length`), the inputs with `binary_data_size` follow it raw,
    /// in the request's order.
    Binary { json_len: usize },
}

/// Parses one inference request from `reader` against `schema`, paying for what it holds
/// from `held` (which the caller keeps until the tensors are dropped). Reads to the end of
/// the input on success (trailing bytes are refused) and stops at the first error.
pub fn parse_request<R: Read>(
    mut reader: R,
    framing: Framing,
    schema: &Schema,
    options: Options,
    held: &mut Reservation,
) -> Result<ParsedRequest, ParseError> {
    let mut request = match framing {
        Framing::Json => parse_json(&mut reader, schema, options, held)?,
        Framing::Binary { json_len } => {
            parse_json((&mut reader).take(json_len as u64), schema, options, held)?
        }
    };
    let binary = request.inputs.iter().any(|t| t.binary.is_some());
    if binary && framing == Framing::Json {
        return Err(Invalid::BinaryWithoutHeader.into());
    }
    for &index in &request.order {
        let tensor = &mut request.inputs[index];
        if let Some(size) = tensor.binary {
            tensor.data = super::binary::read(&mut reader, tensor, size, options, held)?;
        }
    }
    if framing != Framing::Json {
        super::binary::end(&mut reader)?;
    }
    Ok(request)
}

fn parse_json<R: Read>(
    reader: R,
    schema: &Schema,
    options: Options,
    held: &mut Reservation,
) -> Result<ParsedRequest, ParseError> {
    held.grow(schema.overhead())?;
    let reader = BufReader::with_capacity(READ_BUFFER, StringBound::new(reader, schema.max_string));
    let ctx = Ctx {
        schema,
        options,
        held: RefCell::new(held),
        stop: RefCell::new(None),
        order: RefCell::default(),
    };
    let mut de = serde_json::Deserializer::from_reader(reader);
    let parsed = RequestSeed { ctx: &ctx }.deserialize(&mut de).and_then(|r| de.end().map(|()| r));
    let (id, parameters, slots, outputs) = match parsed {
        Ok(r) => r,
        Err(e) => return Err(ctx.stop.take().unwrap_or_else(|| classify(e))),
    };
    let inputs = slots
        .into_iter()
        .zip(&schema.inputs)
        .map(|(slot, spec)| slot.ok_or_else(|| Invalid::MissingInput(spec.name.clone())))
        .collect::<Result<_, _>>()?;
    Ok(ParsedRequest { id, order: ctx.order.take(), parameters, inputs, outputs })
}

/// serde_json's own error: malformed JSON, or the reader's failure (the string bound's
/// refusal among them).
fn classify(e: serde_json::Error) -> ParseError {
    if !e.is_io() {
        return ParseError::Malformed(e);
    }
    let e = io::Error::from(e);
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Invalid>()) {
        Some(invalid) => ParseError::Invalid(invalid.clone()),
        None => ParseError::Read(e),
    }
}

/// What every part of the parse shares: the schema, the reservation, and the first refusal
/// (serde's error type cannot carry ours, so it waits here while serde unwinds).
pub(super) struct Ctx<'a> {
    schema: &'a Schema,
    pub(super) options: Options,
    held: RefCell<&'a mut Reservation>,
    stop: RefCell<Option<ParseError>>,
    /// Input indices in request order.
    order: RefCell<Vec<usize>>,
}

impl Ctx<'_> {
    fn fail<E: de::Error>(&self, why: impl Into<ParseError>) -> E {
        let mut stop = self.stop.borrow_mut();
        if stop.is_none() {
            *stop = Some(why.into());
        }
        E::custom("refused")
    }

    pub(super) fn reserve(&self, bytes: usize) -> Result<(), Exhausted> {
        self.held.borrow_mut().grow(bytes)
    }

    pub(super) fn release(&self, bytes: usize) {
        self.held.borrow_mut().shrink(bytes)
    }
}

/// Refuses a JSON string longer than `limit` bytes as it passes, before serde_json gathers it
/// whole in its string buffer. It counts the raw bytes but an escape's backslash, at least
/// the decoded length (`\n` decodes to 1 byte, `\uXXXX` to at most 3, a surrogate pair to
/// 4). The scan follows the JSON string syntax; where the JSON before is malformed,
/// serde_json refuses it first.
struct StringBound<R> {
    inner: R,
    limit: usize,
    lex: Lex,
    run: usize,
}

#[derive(Clone, Copy)]
enum Lex {
    Outside,
    Inside,
    Escape,
}

impl<R> StringBound<R> {
    fn new(inner: R, limit: usize) -> Self {
        StringBound { inner, limit, lex: Lex::Outside, run: 0 }
    }
}

impl<R: Read> Read for StringBound<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        for &b in &buf[..n] {
            self.lex = match (self.lex, b) {
                (Lex::Outside, b'"') => {
                    self.run = 0;
                    Lex::Inside
                }
                (Lex::Outside, _) => Lex::Outside,
                (Lex::Inside, b'"') => Lex::Outside,
                (Lex::Inside, b'\\') => Lex::Escape,
                (Lex::Inside | Lex::Escape, _) => {
                    self.run += 1;
                    if self.run > self.limit {
                        let refused = Invalid::StringTooLong { limit: self.limit };
                        return Err(io::Error::new(io::ErrorKind::InvalidData, refused));
                    }
                    Lex::Inside
                }
            };
        }
        Ok(n)
    }
}

/// An object's key as its index in the field names `.0`; any other key is refused.
struct Field(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for Field {
    type Value = usize;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl Visitor<'_> for Field {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
        self.0.iter().position(|&k| k == v).ok_or_else(|| E::unknown_field(&clip(v), self.0))
    }
}

/// Marks `field` seen; a second occurrence is refused.
fn once<E: de::Error>(seen: &mut u32, fields: &'static [&'static str], field: usize) -> Result<(), E> {
    if *seen & (1 << field) != 0 {
        return Err(E::duplicate_field(fields[field]));
    }
    *seen |= 1 << field;
    Ok(())
}

type Parts = (Option<String>, Parameters, Vec<Option<Tensor>>, Option<Vec<RequestedOutput>>);

struct RequestSeed<'c, 'a> {
    ctx: &'c Ctx<'a>,
}

const REQUEST_FIELDS: &[&str] = &["id", "parameters", "inputs", "outputs"];

impl<'de> DeserializeSeed<'de> for RequestSeed<'_, '_> {
    type Value = Parts;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Parts, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RequestSeed<'_, '_> {
    type Value = Parts;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an inference request")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parts, A::Error> {
        let ctx = self.ctx;
        let mut seen = 0;
        let mut id = None;
        let mut parameters = None;
        let mut slots = None;
        let mut outputs = None;
        while let Some(field) = map.next_key_seed(Field(REQUEST_FIELDS))? {
            once(&mut seen, REQUEST_FIELDS, field)?;
            match field {
                0 => {
                    let v: String = map.next_value()?;
                    if v.len() > MAX_ID {
                        return Err(ctx.fail(Invalid::IdTooLong));
                    }
                    id = Some(v);
                }
                1 => parameters = Some(map.next_value_seed(ParamsSeed { ctx, scope: Scope::Request })?),
                2 => slots = Some(map.next_value_seed(InputsSeed { ctx })?),
                _ => outputs = Some(map.next_value_seed(OutputsSeed { ctx })?),
            }
        }
        let slots = slots.ok_or_else(|| de::Error::missing_field("inputs"))?;
        Ok((id, parameters.unwrap_or_default(), slots, outputs))
    }
}

/// The `inputs` array: each element is one of the model's inputs, each at most once.
struct InputsSeed<'c, 'a> {
    ctx: &'c Ctx<'a>,
}

impl<'de> DeserializeSeed<'de> for InputsSeed<'_, '_> {
    type Value = Vec<Option<Tensor>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for InputsSeed<'_, '_> {
    type Value = Vec<Option<Tensor>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of input tensors")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut slots: Vec<Option<Tensor>> = self.ctx.schema.inputs.iter().map(|_| None).collect();
        while let Some((index, tensor)) = seq.next_element_seed(InputSeed { ctx: self.ctx, slots: &slots })? {
            slots[index] = Some(tensor);
            self.ctx.order.borrow_mut().push(index);
        }
        Ok(slots)
    }
}

/// One input tensor object. Its header (`name`, `datatype`, `shape`) is checked against the
/// model as soon as the name and each other part are known; `data` is read into a buffer
/// chosen from what is known when it starts ([`InputSeed::data`]).
struct InputSeed<'c, 'a> {
    ctx: &'c Ctx<'a>,
    /// Inputs already read, for duplicates.
    slots: &'c [Option<Tensor>],
}

const INPUT_FIELDS: &[&str] = &["name", "shape", "datatype", "parameters", "data"];

/// The header of an input as far as it has been read.
#[derive(Default)]
struct Header {
    /// The model's index of the input, and its name.
    name: Option<(usize, String)>,
    datatype: Option<Datatype>,
    shape: Option<Vec<i64>>,
    /// The element count, once the name and shape are known and checked.
    count: Option<usize>,
}

impl Header {
    fn subject(&self) -> Subject {
        Subject(self.name.as_ref().map(|(_, n)| n.clone()))
    }

    /// Checks what is known so far against the model's input.
    fn check(&mut self, schema: &Schema) -> Result<(), Invalid> {
        let Some((index, name)) = &self.name else { return Ok(()) };
        let spec = &schema.inputs[*index];
        if let Some(d) = self.datatype
            && d != spec.datatype
        {
            return Err(Invalid::Datatype {
                name: name.clone(),
                got: d.name().into(),
                want: spec.datatype.name().into(),
            });
        }
        if let Some(shape) = &self.shape
            && self.count.is_none()
        {
            let fits = shape.len() == spec.shape.len()
                && shape.iter().zip(&spec.shape).all(|(&g, &w)| g >= 1 && (w == -1 || g == w));
            if !fits {
                return Err(Invalid::Shape {
                    name: name.clone(),
                    got: shape.clone(),
                    want: spec.shape.clone(),
                });
            }
            let count = shape
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
                .filter(|&n| n <= MAX_ELEMENTS)
                .ok_or_else(|| Invalid::TooLarge(name.clone()))?;
            self.count = Some(count);
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for InputSeed<'_, '_> {
    type Value = (usize, Tensor);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for InputSeed<'_, '_> {
    type Value = (usize, Tensor);
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an input tensor")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let ctx = self.ctx;
        let schema = ctx.schema;
        let mut seen = 0;
        let mut header = Header::default();
        let mut parameters = None;
        let mut data = None;
        while let Some(field) = map.next_key_seed(Field(INPUT_FIELDS))? {
            once(&mut seen, INPUT_FIELDS, field)?;
            match field {
                0 => {
                    let name: String = map.next_value()?;
                    let Some(index) = schema.input(&name) else {
                        return Err(ctx.fail(Invalid::UnknownInput(clip(&name))));
                    };
                    if self.slots[index].is_some() {
                        return Err(ctx.fail(Invalid::DuplicateInput(name)));
                    }
                    header.name = Some((index, name));
                }
                1 => {
                    header.shape = Some(map.next_value_seed(ShapeSeed { ctx, input: header.subject() })?);
                }
                2 => {
                    let name: String = map.next_value()?;
                    header.datatype = Some(Datatype::parse(&name).map_err(|e| {
                        ctx.fail::<A::Error>(match e {
                            DatatypeError::Unsupported(datatype) => {
                                Invalid::UnsupportedDatatype { input: header.subject(), datatype }
                            }
                            DatatypeError::Unknown => {
                                Invalid::UnknownDatatype { input: header.subject(), got: clip(&name) }
                            }
                        })
                    })?);
                }
                3 => {
                    let scope = Scope::Input(header.subject());
                    parameters = Some(map.next_value_seed(ParamsSeed { ctx, scope })?);
                }
                _ => data = Some(self.data(&mut map, &header)?),
            }
            header.check(schema).map_err(|e| ctx.fail::<A::Error>(e))?;
        }
        let Header { name, datatype, shape, count } = header;
        let (index, name) = name.ok_or_else(|| de::Error::missing_field("name"))?;
        let datatype = datatype.ok_or_else(|| de::Error::missing_field("datatype"))?;
        let shape = shape.ok_or_else(|| de::Error::missing_field("shape"))?;
        let parameters = parameters.unwrap_or_default();
        // `check` has run with the whole header: the count is known.
        let want = count.unwrap_or(0);
        let binary = binary_size(&parameters, &name).map_err(|e| ctx.fail::<A::Error>(e))?;
        let data = match (data, binary) {
            (Some(_), Some(_)) => {
                let what = "given with `data`: the data is either in the JSON or after it";
                let scope = Scope::Input(Subject(Some(name)));
                return Err(ctx.fail(Invalid::Parameter { scope, key: BINARY_DATA_SIZE.into(), what }));
            }
            (None, Some(size)) => {
                let expected = datatype.element_size().saturating_mul(want);
                // Fixed-size elements: exactly the shape's bytes. BYTES: a length prefix per
                // element at least, each string at most MAX_BYTES_ELEMENT.
                let fits = match datatype {
                    Datatype::Bytes => size >= expected && size <= want.saturating_mul(4 + MAX_BYTES_ELEMENT),
                    _ => size == expected,
                };
                if !fits {
                    return Err(ctx.fail(Invalid::BinarySize {
                        name,
                        got: size,
                        shape,
                        datatype: datatype.name(),
                    }));
                }
                let shape = shape.iter().map(|&d| d as usize).collect();
                let data = TensorData::empty(datatype);
                return Ok((index, Tensor { name, shape, data, binary: Some(size), parameters }));
            }
            (Some(data), None) => data,
            (None, None) => return Err(de::Error::missing_field("data")),
        };
        let data = match data {
            Collected::Data(data) if data.datatype() == datatype => data,
            // Typed by the model's datatype before the request's was read, and they differ:
            // `check` has refused that already.
            Collected::Data(_) => {
                return Err(ctx.fail(Invalid::Datatype {
                    name,
                    got: datatype.name().into(),
                    want: schema.inputs[index].datatype.name().into(),
                }));
            }
            Collected::Loose(loose) => {
                loose.into_data(datatype, &name, ctx).map_err(|e| ctx.fail::<A::Error>(e))?
            }
        };
        if data.len() != want {
            return Err(ctx.fail(Invalid::Count { name, got: data.len(), want, shape }));
        }
        let shape = shape.iter().map(|&d| d as usize).collect();
        Ok((index, Tensor { name, shape, data, binary: None, parameters }))
    }
}

/// The binary tensor extension's parameter naming an input's byte count after the JSON.
pub const BINARY_DATA_SIZE: &str = "binary_data_size";

/// An input's `binary_data_size`, if it has one: a non-negative integer.
fn binary_size(parameters: &Parameters, name: &str) -> Result<Option<usize>, Invalid> {
    let Some(value) = parameters.get(BINARY_DATA_SIZE) else { return Ok(None) };
    match value {
        Parameter::Number(n) => n.as_u64().and_then(|n| usize::try_from(n).ok()).map(Some),
        _ => None,
    }
    .ok_or_else(|| Invalid::Parameter {
        scope: Scope::Input(Subject(Some(name.to_owned()))),
        key: BINARY_DATA_SIZE.into(),
        what: "is not a non-negative integer",
    })
}

impl InputSeed<'_, '_> {
    /// Reads `data` into the tightest buffer the header read so far allows:
    /// - name, datatype and shape known and checked: that datatype, capped at the shape's
    ///   count; the first value past it is refused ([`Invalid::Overflow`]);
    /// - otherwise the request's datatype if read, else the model input's if the name is,
    ///   else the one all the model's inputs share; capped at what the input (or any input,
    ///   before the name) can take; checked again when the header is complete;
    /// - no datatype to go by (a model with inputs of several datatypes, data before name
    ///   and datatype): a [`Loose`] buffer of JSON scalars, converted once the datatype is
    ///   read.
    fn data<'de, A: MapAccess<'de>>(&self, map: &mut A, header: &Header) -> Result<Collected, A::Error> {
        let schema = self.ctx.schema;
        let spec = header.name.as_ref().map(|(i, _)| &schema.inputs[*i]);
        let cap = match (header.count, spec) {
            (Some(count), _) => count,
            (None, Some(spec)) => spec.max_count,
            (None, None) => schema.max_count,
        };
        let rank = match (&header.shape, spec) {
            (Some(shape), _) => shape.len(),
            (None, Some(spec)) => spec.shape.len(),
            (None, None) => schema.max_rank,
        };
        let strict = match (&header.name, &header.shape, header.count) {
            (Some((_, name)), Some(shape), Some(want)) => Some((name.clone(), shape.clone(), want)),
            _ => None,
        };
        let label = Label { input: header.subject(), strict, cap, max_depth: (rank + 1).min(MAX_RANK) };
        let datatype = header.datatype.or(spec.map(|s| s.datatype)).or(schema.common);
        let mut sink: Box<dyn Sink> = match datatype {
            Some(d) => sink_for(d, cap),
            None => Box::new(Loose::new(cap)),
        };
        map.next_value_seed(Nest { sink: &mut *sink, ctx: self.ctx, label: &label, depth: 0 })?;
        Ok(sink.into_collected())
    }
}

/// A `shape` array of at most [`MAX_RANK`] integers.
struct ShapeSeed<'c, 'a> {
    ctx: &'c Ctx<'a>,
    input: Subject,
}

impl<'de> DeserializeSeed<'de> for ShapeSeed<'_, '_> {
    type Value = Vec<i64>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<i64>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ShapeSeed<'_, '_> {
    type Value = Vec<i64>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a shape (an array of integers)")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<i64>, A::Error> {
        let mut shape = Vec::new();
        while let Some(d) = seq.next_element::<i64>()? {
            if shape.len() == MAX_RANK {
                return Err(self.ctx.fail(Invalid::Rank { input: self.input }));
            }
            shape.push(d);
        }
        Ok(shape)
    }
}

/// The `outputs` array: each a model output, at most once.
struct OutputsSeed<'c, 'a> {
    ctx: &'c Ctx<'a>,
}

impl<'de> DeserializeSeed<'de> for OutputsSeed<'_, '_> {
    type Value = Vec<RequestedOutput>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for OutputsSeed<'_, '_> {
    type Value = Vec<RequestedOutput>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of requested outputs")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut outputs: Vec<RequestedOutput> = Vec::new();
        while let Some(output) = seq.next_element_seed(OutputSeed { ctx: self.ctx, before: &outputs })? {
            outputs.push(output);
        }
        Ok(outputs)
    }
}

struct OutputSeed<'c, 'a> {
    ctx: &'c Ctx<'a>,
    before: &'c [RequestedOutput],
}

const OUTPUT_FIELDS: &[&str] = &["name", "parameters"];

impl<'de> DeserializeSeed<'de> for OutputSeed<'_, '_> {
    type Value = RequestedOutput;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for OutputSeed<'_, '_> {
    type Value = RequestedOutput;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a requested output")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let ctx = self.ctx;
        let mut seen = 0;
        let mut name: Option<String> = None;
        let mut parameters = None;
        while let Some(field) = map.next_key_seed(Field(OUTPUT_FIELDS))? {
            once(&mut seen, OUTPUT_FIELDS, field)?;
            if field == 0 {
                let n: String = map.next_value()?;
                if !ctx.schema.outputs.contains(&n) {
                    return Err(ctx.fail(Invalid::UnknownOutput(clip(&n))));
                }
                if self.before.iter().any(|o| o.name == n) {
                    return Err(ctx.fail(Invalid::DuplicateOutput(n)));
                }
                name = Some(n);
            } else {
                let scope = Scope::Output(name.clone());
                parameters = Some(map.next_value_seed(ParamsSeed { ctx, scope })?);
            }
        }
        let name = name.ok_or_else(|| de::Error::missing_field("name"))?;
        Ok(RequestedOutput { name, parameters: parameters.unwrap_or_default() })
    }
}

/// A `parameters` object: scalars only, bounded in number and size, paid for.
struct ParamsSeed<'c, 'a> {
    ctx: &'c Ctx<'a>,
    scope: Scope,
}

impl<'de> DeserializeSeed<'de> for ParamsSeed<'_, '_> {
    type Value = Parameters;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Parameters, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ParamsSeed<'_, '_> {
    type Value = Parameters;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a parameters object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parameters, A::Error> {
        let ctx = self.ctx;
        let mut entries: Vec<(String, Parameter)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if entries.len() == MAX_PARAMETERS {
                return Err(ctx.fail(Invalid::TooManyParameters { scope: self.scope.clone() }));
            }
            let refuse = |what| Invalid::Parameter { scope: self.scope.clone(), key: clip(&key), what };
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(ctx.fail(refuse("given twice")));
            }
            let value = map.next_value_seed(ParamSeed { ctx, scope: &self.scope, key: &key })?;
            let text = key.len() + if let Parameter::String(s) = &value { s.len() } else { 0 };
            if text > MAX_PARAMETER_TEXT {
                return Err(ctx.fail(refuse("is longer than 4096 bytes")));
            }
            ctx.reserve(text + size_of::<(String, Parameter)>()).map_err(|e| ctx.fail::<A::Error>(e))?;
            entries.push((key, value));
        }
        Ok(Parameters(entries))
    }
}

/// One parameter value: a scalar; anything else is refused before it is read.
struct ParamSeed<'p, 'c, 'a> {
    ctx: &'c Ctx<'a>,
    scope: &'p Scope,
    key: &'p str,
}

impl ParamSeed<'_, '_, '_> {
    fn refuse<E: de::Error>(self) -> E {
        let what = "is not a string, number or boolean";
        self.ctx.fail(Invalid::Parameter { scope: self.scope.clone(), key: clip(self.key), what })
    }
}

impl<'de> DeserializeSeed<'de> for ParamSeed<'_, '_, '_> {
    type Value = Parameter;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ParamSeed<'_, '_, '_> {
    type Value = Parameter;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, number or boolean")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Parameter::Bool(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Parameter::Number(v.into()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Parameter::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // JSON numbers are finite: `from_f64` refuses only NaN and infinities.
        serde_json::Number::from_f64(v).map(Parameter::Number).ok_or_else(|| self.refuse())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        // The caller bounds the length; the string bound has already capped it at 8 KiB.
        Ok(Parameter::String(v.to_owned()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(self.refuse())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.refuse())
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.refuse())
    }
}

/// What the data's errors say about it.
struct Label {
    input: Subject,
    /// The name, shape and count when the header was complete before the data.
    strict: Option<(String, Vec<i64>, usize)>,
    cap: usize,
    /// Most levels of nested arrays.
    max_depth: usize,
}

impl Label {
    fn error(&self, stop: Stop) -> ParseError {
        match stop {
            Stop::Value { index, what } => Invalid::Value { input: self.input.clone(), index, what }.into(),
            Stop::Overflow => match &self.strict {
                Some((name, shape, want)) => Invalid::Overflow {
                    name: name.clone(),
                    at_least: self.cap + 1,
                    want: *want,
                    shape: shape.clone(),
                }
                .into(),
                None => Invalid::TooManyValues { input: self.input.clone(), limit: self.cap }.into(),
            },
            Stop::Busy(e) => e.into(),
        }
    }
}

/// Tensor data at one nesting level: a scalar goes to the sink, an array's elements one level
/// down.
struct Nest<'s, 'c, 'a> {
    sink: &'s mut dyn Sink,
    ctx: &'c Ctx<'a>,
    label: &'s Label,
    depth: usize,
}

impl Nest<'_, '_, '_> {
    fn took<E: de::Error>(&self, r: Result<(), Stop>) -> Result<(), E> {
        r.map_err(|stop| self.ctx.fail(self.label.error(stop)))
    }
}

impl<'de> DeserializeSeed<'de> for Nest<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Nest<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tensor data: values in an array, flat or nested")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        let r = self.sink.bool(v, self.ctx);
        self.took(r)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        let r = self.sink.u64(v, self.ctx);
        self.took(r)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        let r = self.sink.i64(v, self.ctx);
        self.took(r)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        let r = self.sink.f64(v, self.ctx);
        self.took(r)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        let r = self.sink.str(v, self.ctx);
        self.took(r)
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        let r = self.sink.other(self.ctx);
        self.took(r)
    }
    // Refused before its contents are read.
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        let index = self.sink.seen();
        Err(self.ctx.fail(self.label.error(Stop::Value { index, what: "an object, not a value" })))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Nest { sink, ctx, label, depth } = self;
        if depth >= label.max_depth {
            return Err(ctx.fail(Invalid::Depth { input: label.input.clone(), limit: label.max_depth }));
        }
        while seq.next_element_seed(Nest { sink: &mut *sink, ctx, label, depth: depth + 1 })?.is_some() {}
        Ok(())
    }
}
