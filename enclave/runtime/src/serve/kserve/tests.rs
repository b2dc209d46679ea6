//! The request parser against every datatype, both key orders, the early stop, and each
//! bound: nesting, duplicate and unknown keys, parameters, ids, strings, the budget.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::io::{self, Read};
use std::sync::Arc;

use half::f16;

use super::parse::{MAX_BYTES_ELEMENT, Parameter, ParsedRequest};
use super::tensor::ByteStrings;
use super::*;
use crate::serve::budget::Budget;

fn spec(name: &str, datatype: &str, shape: &[i64]) -> TensorSpec {
    TensorSpec { name: name.into(), datatype: datatype.into(), shape: shape.to_vec() }
}

/// A model whose inputs are `inputs`, with one FP32 output `y`.
fn schema(inputs: &[(&str, &str, &[i64])]) -> Schema {
    let inputs: Vec<_> = inputs.iter().map(|(n, d, s)| spec(n, d, s)).collect();
    Schema::new(&inputs, &[spec("y", "FP32", &[-1, 2])]).unwrap()
}

/// The sample model's shape of signature: `x` FP32 [-1, 4] in, `y` FP32 [-1, 2] out.
fn fp32() -> Schema {
    schema(&[("x", "FP32", &[-1, 4])])
}

const STRICT: Options = Options { allow_non_finite: false };

fn parse_with(
    schema: &Schema,
    options: Options,
    budget: &Arc<Budget>,
    r: impl Read,
) -> Result<ParsedRequest, ParseError> {
    let mut held = budget.reservation();
    parse_request(r, Framing::Json, schema, options, &mut held)
}

fn parse(schema: &Schema, json: &str) -> Result<ParsedRequest, ParseError> {
    parse_with(schema, STRICT, &Budget::new(1 << 30), json.as_bytes())
}

fn refusal(schema: &Schema, json: &str) -> String {
    match parse(schema, json) {
        Ok(r) => panic!("accepted {json}: {r:?}"),
        Err(e) => e.to_string(),
    }
}

fn invalid(schema: &Schema, json: &str) -> Invalid {
    match parse(schema, json) {
        Err(ParseError::Invalid(e)) => e,
        other => panic!("{json}: {other:?}"),
    }
}

/// One input `t` of `datatype`, shape `[n]`, with the values `data` (JSON text).
fn one(datatype: &str, n: usize, data: &str) -> (Schema, String) {
    let s = schema(&[("t", datatype, &[-1])]);
    (s, format!(r#"{{"inputs":[{{"name":"t","datatype":"{datatype}","shape":[{n}],"data":{data}}}]}}"#))
}

fn data_of(datatype: &str, n: usize, data: &str) -> TensorData {
    let (s, json) = one(datatype, n, data);
    parse(&s, &json).unwrap().inputs.remove(0).data
}

fn value_error(datatype: &str, n: usize, data: &str) -> (usize, &'static str) {
    let (s, json) = one(datatype, n, data);
    match invalid(&s, &json) {
        Invalid::Value { input, index, what } => {
            assert_eq!(input, Subject(Some("t".into())));
            (index, what)
        }
        other => panic!("{datatype} {data}: {other:?}"),
    }
}

#[test]
fn accepts_flat_and_nested_data() {
    let s = fp32();
    let flat = parse(&s, r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#);
    let nested = parse(
        &s,
        r#"{"inputs":[{"name":"x","shape":[2,4],"datatype":"FP32","data":[[1,2,3,4],[5,6,7,8]]}]}"#,
    );
    assert_eq!(flat.unwrap().inputs[0].data, TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.0]));
    let nested = nested.unwrap();
    assert_eq!(nested.inputs[0].shape, vec![2, 4]);
    assert_eq!(nested.inputs[0].data.len(), 8);
}

#[test]
fn every_bad_request_is_named() {
    let s = fp32();
    let cases = [
        (r#"{"inputs":[{"name":"z","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#, "not an input"),
        (r#"{"inputs":[]}"#, "missing"),
        (r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"INT64","data":[1,2,3,4]}]}"#, "datatype"),
        (r#"{"inputs":[{"name":"x","shape":[1,5],"datatype":"FP32","data":[1,2,3,4,5]}]}"#, "shape"),
        (r#"{"inputs":[{"name":"x","shape":[0,4],"datatype":"FP32","data":[]}]}"#, "shape"),
        (r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3]}]}"#, "3 values"),
        (r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4,5]}]}"#, "5 values"),
        (r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,"3",4]}]}"#, "element 2"),
        (r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,1e39,4]}]}"#, "not finite"),
        (r#"{"inputs":[{"name":"x","shape":[4194305,4],"datatype":"FP32","data":[]}]}"#, "more than"),
        (
            r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]},{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#,
            "twice",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"q"}]}"#,
            "not an output",
        ),
        (r#"{"inputs":[],"extra":1}"#, "unknown field `extra`"),
    ];
    for (json, reason) in cases {
        let e = refusal(&s, json);
        assert!(e.contains(reason), "{json}: {e}");
    }
    // Each names the input it is about.
    for (json, _) in &cases[2..10] {
        assert!(refusal(&s, json).starts_with("input \"x\": "), "{json}");
    }
}

/// The errors the serving layer maps to "malformed" (400, `malformed` in the metrics) are the
/// JSON's, not the model's.
#[test]
fn malformed_is_json_and_structure() {
    let s = fp32();
    for json in [
        "{not json",
        r#"{"inputs":[],"surprise":1}"#,
        r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4],"extra":0}]}"#,
        r#"{"inputs":[],"outputs":[{"name":"y","extra":0}]}"#,
        r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32"}]}"#,
        r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]} trailing"#,
        r#"{"inputs":[{"name":5,"shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#,
        r#"{"inputs":{}}"#,
        r#"{"id":1,"inputs":[]}"#,
        "[]",
        "",
    ] {
        assert!(matches!(parse(&s, json), Err(ParseError::Malformed(_))), "{json}");
    }
    let e = refusal(&s, r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32"}]}"#);
    assert!(e.starts_with("malformed request: missing field `data`"), "{e}");
}

#[test]
fn duplicate_keys_are_refused() {
    let s = fp32();
    let x = r#"{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}"#;
    let cases = [
        (format!(r#"{{"inputs":[],"inputs":[{x}]}}"#), "duplicate field `inputs`"),
        (format!(r#"{{"id":"a","id":"b","inputs":[{x}]}}"#), "duplicate field `id`"),
        (
            r#"{"inputs":[{"name":"x","name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#.into(),
            "duplicate field `name`",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4],"data":[1,2,3,4]}]}"#
                .into(),
            "duplicate field `data`",
        ),
        (format!(r#"{{"inputs":[{x}],"outputs":[{{"name":"y","name":"y"}}]}}"#), "duplicate field `name`"),
        (
            format!(r#"{{"inputs":[{x}],"outputs":[{{"name":"y"}},{{"name":"y"}}]}}"#),
            "output \"y\" requested twice",
        ),
    ];
    for (json, reason) in cases {
        let e = refusal(&s, &json);
        assert!(e.contains(reason), "{json}: {e}");
    }
}

#[test]
fn every_datatype_takes_its_values() {
    assert_eq!(data_of("BOOL", 2, "[true,false]"), TensorData::Bool(vec![true, false]));
    assert_eq!(data_of("UINT8", 2, "[0,255]"), TensorData::Uint8(vec![0, 255]));
    assert_eq!(data_of("UINT16", 2, "[0,65535]"), TensorData::Uint16(vec![0, 65535]));
    assert_eq!(data_of("UINT32", 2, "[0,4294967295]"), TensorData::Uint32(vec![0, u32::MAX]));
    assert_eq!(data_of("UINT64", 2, "[0,18446744073709551615]"), TensorData::Uint64(vec![0, u64::MAX]));
    assert_eq!(data_of("INT8", 2, "[-128,127]"), TensorData::Int8(vec![-128, 127]));
    assert_eq!(data_of("INT16", 2, "[-32768,32767]"), TensorData::Int16(vec![i16::MIN, i16::MAX]));
    assert_eq!(data_of("INT32", 2, "[-2147483648,2147483647]"), TensorData::Int32(vec![i32::MIN, i32::MAX]));
    assert_eq!(
        data_of("INT64", 2, "[-9223372036854775808,9223372036854775807]"),
        TensorData::Int64(vec![i64::MIN, i64::MAX])
    );
    assert_eq!(
        data_of("FP16", 3, "[1.5,-2,65504]"),
        TensorData::Fp16(vec![f16::from_f32(1.5), f16::from_f32(-2.0), f16::MAX])
    );
    assert_eq!(data_of("FP32", 3, "[1.5,-2,3e38]"), TensorData::Fp32(vec![1.5, -2.0, 3e38]));
    assert_eq!(data_of("FP64", 3, "[1e300,-1,0.1]"), TensorData::Fp64(vec![1e300, -1.0, 0.1]));
    let TensorData::Bytes(strings) = data_of("BYTES", 3, r#"["a","","h\u00e9llo"]"#) else { panic!() };
    assert_eq!(strings.iter().collect::<Vec<_>>(), vec![&b"a"[..], b"", "héllo".as_bytes()]);
}

#[test]
fn every_datatype_refuses_bad_values_by_index() {
    let cases: &[(&str, usize, &str, usize, &str)] = &[
        ("BOOL", 3, "[true,false,1]", 2, "not a boolean (true or false)"),
        ("BOOL", 2, r#"[true,"true"]"#, 1, "not a boolean (true or false)"),
        ("UINT8", 3, "[1,2,300]", 2, "out of range for UINT8"),
        ("UINT8", 2, "[1,1.5]", 1, "not an integer"),
        ("UINT8", 2, "[1,-1]", 1, "out of range for UINT8"),
        ("UINT16", 1, "[65536]", 0, "out of range for UINT16"),
        ("UINT32", 1, "[4294967296]", 0, "out of range for UINT32"),
        ("UINT64", 2, "[0,-1]", 1, "out of range for UINT64"),
        ("UINT64", 1, "[18446744073709551616]", 0, "out of range for UINT64"),
        ("INT8", 2, "[-128,-129]", 1, "out of range for INT8"),
        ("INT16", 1, "[32768]", 0, "out of range for INT16"),
        ("INT32", 1, "[2147483648]", 0, "out of range for INT32"),
        ("INT64", 1, "[9223372036854775808]", 0, "out of range for INT64"),
        ("INT64", 2, "[1,2.0]", 1, "not an integer"),
        ("INT64", 2, "[1,1e3]", 1, "not an integer"),
        ("INT32", 2, r#"[1,"2"]"#, 1, "not a number"),
        ("INT32", 2, "[1,true]", 1, "not a number"),
        ("FP16", 2, "[1,65520]", 1, "not finite (NaN, ±inf or out of FP16 range)"),
        ("FP32", 2, "[1,1e39]", 1, "not finite (NaN, ±inf or out of FP32 range)"),
        ("FP32", 2, "[1,null]", 1, "not a number"),
        ("FP32", 2, r#"[1,{"a":1}]"#, 1, "an object, not a value"),
        ("FP64", 2, "[1,false]", 1, "not a number"),
        ("BYTES", 2, r#"["a",1]"#, 1, "not a string"),
        ("BYTES", 1, "[null]", 0, "not a string"),
    ];
    for &(datatype, n, data, index, what) in cases {
        assert_eq!(value_error(datatype, n, data), (index, what), "{datatype} {data}");
    }
    // Beyond f64: serde_json's own refusal.
    let (s, json) = one("FP64", 1, "[1e400]");
    assert!(matches!(parse(&s, &json), Err(ParseError::Malformed(_))));
}

#[test]
fn non_finite_floats_only_when_allowed() {
    let allow = Options { allow_non_finite: true };
    let budget = Budget::new(1 << 20);
    for (datatype, data) in [("FP32", "[1e39,-1e39]"), ("FP16", "[70000,-1e10]")] {
        let (s, json) = one(datatype, 2, data);
        assert!(parse(&s, &json).is_err());
        let t = parse_with(&s, allow, &budget, json.as_bytes()).unwrap().inputs.remove(0);
        match t.data {
            TensorData::Fp32(v) => assert_eq!(v, vec![f32::INFINITY, f32::NEG_INFINITY]),
            TensorData::Fp16(v) => assert_eq!(v, vec![f16::INFINITY, f16::NEG_INFINITY]),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn bf16_is_refused_whatever_the_order() {
    let s = fp32();
    for json in [
        r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"BF16","data":[1,2,3,4]}]}"#,
        r#"{"inputs":[{"datatype":"BF16","name":"x","shape":[1,4],"data":[1,2,3,4]}]}"#,
    ] {
        let e = invalid(&s, json);
        assert!(matches!(e, Invalid::UnsupportedDatatype { datatype: "BF16", .. }), "{e:?}");
        assert!(e.to_string().contains("BF16 is not supported"), "{e}");
    }
    let e = refusal(&s, r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FLOAT32","data":[1,2,3,4]}]}"#);
    assert_eq!(e, "input \"x\": datatype \"FLOAT32\" is not a datatype of the inference protocol");
    // A model declaring BF16 cannot be served at all.
    assert!(Schema::new(&[spec("x", "BF16", &[1])], &[]).is_err());
}

/// `data` before `name`, `datatype` and `shape`: still typed, checked once the header is read,
/// refused with the same errors.
#[test]
fn data_before_the_header() {
    let s = fp32();
    let r = parse(&s, r#"{"inputs":[{"data":[[1,2,3,4]],"name":"x","shape":[1,4],"datatype":"FP32"}]}"#);
    assert_eq!(r.unwrap().inputs[0].data, TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.0]));
    let r =
        parse(&s, r#"{"inputs":[{"shape":[2,4],"data":[1,2,3,4,5,6,7,8],"datatype":"FP32","name":"x"}]}"#);
    assert_eq!(r.unwrap().inputs[0].shape, vec![2, 4]);
    for (json, reason) in [
        (r#"{"inputs":[{"data":[1,2,3,4],"name":"x","shape":[1,4],"datatype":"INT64"}]}"#, "datatype INT64"),
        (r#"{"inputs":[{"data":[1,2,3,4,5],"name":"x","shape":[1,4],"datatype":"FP32"}]}"#, "5 values"),
        (r#"{"inputs":[{"data":[1,2,3],"datatype":"FP32","shape":[1,4],"name":"x"}]}"#, "3 values"),
        (r#"{"inputs":[{"data":[1,2,3,4],"datatype":"FP32","shape":[1,5],"name":"x"}]}"#, "shape [1, 5]"),
        (r#"{"inputs":[{"data":[1,2,3,4],"datatype":"FP32","shape":[1,4],"name":"z"}]}"#, "not an input"),
    ] {
        let e = refusal(&s, json);
        assert!(e.contains(reason), "{json}: {e}");
    }
    // A bad value is refused at once; the input is named if its name came first.
    let e = invalid(&s, r#"{"inputs":[{"data":[1,"a",3,4],"name":"x","shape":[1,4],"datatype":"FP32"}]}"#);
    assert_eq!(e.to_string(), "an input (named later in the request): element 1 is not a number");
    let e = invalid(&s, r#"{"inputs":[{"name":"x","data":[1,"a",3,4],"shape":[1,4],"datatype":"FP32"}]}"#);
    assert_eq!(e.to_string(), "input \"x\": element 1 is not a number");
}

/// A model whose inputs differ in datatype: data read before its datatype is held as JSON
/// scalars and typed after, with the same checks.
#[test]
fn data_before_the_datatype_of_a_mixed_model() {
    let s = schema(&[("a", "INT64", &[2]), ("b", "FP32", &[-1]), ("c", "BOOL", &[2]), ("d", "BYTES", &[1])]);
    let json = r#"{"inputs":[
        {"data":[-1,18],"shape":[2],"name":"a","datatype":"INT64"},
        {"data":[1.5,2,-3],"shape":[3],"datatype":"FP32","name":"b"},
        {"data":[true,false],"shape":[2],"datatype":"BOOL","name":"c"},
        {"data":["s"],"shape":[1],"datatype":"BYTES","name":"d"}]}"#;
    let r = parse(&s, json).unwrap();
    let data: Vec<_> = r.inputs.into_iter().map(|t| t.data).collect();
    assert_eq!(data[0], TensorData::Int64(vec![-1, 18]));
    assert_eq!(data[1], TensorData::Fp32(vec![1.5, 2.0, -3.0]));
    assert_eq!(data[2], TensorData::Bool(vec![true, false]));
    assert_eq!(data[3], TensorData::Bytes(ByteStrings::from_parts(b"s".to_vec(), vec![1]).unwrap()));

    let rest = r#",{"name":"b","datatype":"FP32","shape":[1],"data":[1]},
        {"name":"c","datatype":"BOOL","shape":[2],"data":[true,true]},
        {"name":"d","datatype":"BYTES","shape":[1],"data":["s"]}]}"#;
    let with_a = |a: &str| format!(r#"{{"inputs":[{a}{rest}"#);
    for (a, reason) in [
        (
            r#"{"data":[1,2.5],"name":"a","datatype":"INT64","shape":[2]}"#,
            "input \"a\": element 1 is not an integer",
        ),
        (
            r#"{"data":[1,"x"],"name":"a","datatype":"INT64","shape":[2]}"#,
            "input \"a\": element 1 is not a number",
        ),
        (
            r#"{"data":[1,null],"name":"a","datatype":"INT64","shape":[2]}"#,
            "input \"a\": element 1 is not a number",
        ),
        (
            r#"{"data":[true,1],"name":"a","datatype":"INT64","shape":[2]}"#,
            "input \"a\": element 0 is not a number",
        ),
        (
            r#"{"data":[1,-9223372036854775809],"name":"a","datatype":"INT64","shape":[2]}"#,
            "input \"a\": element 1 is out of range for INT64",
        ),
        (
            r#"{"data":[1,2,3],"name":"a","datatype":"INT64","shape":[2]}"#,
            "3 values for shape [2] (2 expected)",
        ),
        (
            r#"{"data":[1,2],"name":"a","datatype":"BOOL","shape":[2]}"#,
            "datatype BOOL, the model takes INT64",
        ),
    ] {
        let e = refusal(&s, &with_a(a));
        assert!(e.contains(reason), "{a}: {e}");
    }
}

/// A reader that counts what is taken from it: a JSON prefix, then "1," for ever.
struct Endless {
    prefix: Vec<u8>,
    read: usize,
}

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        for (i, b) in buf.iter_mut().enumerate() {
            let at = self.read + i;
            *b = match self.prefix.get(at) {
                Some(&p) => p,
                None if (at - self.prefix.len()).is_multiple_of(2) => b'1',
                None => b',',
            };
        }
        self.read += buf.len();
        Ok(buf.len())
    }
}

/// Issue 14: a [1, 30] input followed by millions of numbers is refused at the 31st, after
/// reading a few KiB, whether the header comes before the data or after.
#[test]
fn the_thirty_first_number_stops_the_parse() {
    let s = schema(&[("x", "FP32", &[1, 30])]);
    let budget = Budget::new(64 << 20);
    let header_first = r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1,30],"data":["#;
    let mut r = Endless { prefix: header_first.into(), read: 0 };
    match parse_with(&s, STRICT, &budget, &mut r) {
        Err(ParseError::Invalid(Invalid::Overflow { name, at_least: 31, want: 30, shape })) => {
            assert_eq!((name.as_str(), shape), ("x", vec![1, 30]));
        }
        other => panic!("{other:?}"),
    }
    assert!(r.read < 64 << 10, "read {} bytes", r.read);

    let data_first = r#"{"inputs":[{"data":["#;
    let mut r = Endless { prefix: data_first.into(), read: 0 };
    match parse_with(&s, STRICT, &budget, &mut r) {
        Err(ParseError::Invalid(Invalid::TooManyValues { input: Subject(None), limit: 30 })) => {}
        other => panic!("{other:?}"),
    }
    assert!(r.read < 64 << 10, "read {} bytes", r.read);
    assert_eq!(budget.in_use(), 0, "all returned");
}

/// The same for a dynamic input: the request's own shape caps its data.
#[test]
fn the_requests_shape_caps_a_dynamic_input() {
    let s = fp32();
    let mut r = Endless {
        prefix: r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[2,4],"data":["#.into(),
        read: 0,
    };
    let e = parse_with(&s, STRICT, &Budget::new(64 << 20), &mut r).unwrap_err();
    assert_eq!(e.to_string(), "input \"x\": at least 9 values for shape [2, 4] (8 expected)");
    assert!(r.read < 64 << 10);
}

#[test]
fn nesting_is_bounded_by_the_rank() {
    let s = fp32();
    let at = |data: &str| {
        format!(r#"{{"inputs":[{{"name":"x","shape":[1,4],"datatype":"FP32","data":{data}}}]}}"#)
    };
    assert!(parse(&s, &at("[[[1,2,3,4]]]")).is_ok(), "rank + 1 levels");
    let e = invalid(&s, &at("[[[[1,2,3,4]]]]"));
    assert_eq!(e.to_string(), "input \"x\": data nested deeper than 3 levels");
    // Deep nesting before anything is known: the model's largest rank + 1.
    let deep = format!(r#"{{"inputs":[{{"data":{}1{}}}]}}"#, "[".repeat(100), "]".repeat(100));
    assert!(matches!(invalid(&s, &deep), Invalid::Depth { limit: 3, .. }));
    // A shape of more than 32 dimensions.
    let shape = vec!["1"; 33].join(",");
    let e = invalid(
        &s,
        &format!(r#"{{"inputs":[{{"name":"x","shape":[{shape}],"datatype":"FP32","data":[]}}]}}"#),
    );
    assert!(matches!(e, Invalid::Rank { .. }), "{e:?}");
}

#[test]
fn parameters_are_bounded_scalars() {
    let s = fp32();
    let x = r#"{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]"#;
    let ok = format!(
        r#"{{"id":"r1","parameters":{{"a":"s","b":1,"c":-2,"d":0.5,"e":true}},"inputs":[{x},"parameters":{{"k":1}}}}],"outputs":[{{"name":"y","parameters":{{"binary_data":false}}}}]}}"#
    );
    let r = parse(&s, &ok).unwrap();
    assert_eq!(r.id.as_deref(), Some("r1"));
    assert_eq!(r.parameters.len(), 5);
    assert_eq!(r.parameters.get("a"), Some(&Parameter::String("s".into())));
    assert_eq!(r.parameters.get("c"), Some(&Parameter::Number((-2).into())));
    assert_eq!(r.parameters.get("e"), Some(&Parameter::Bool(true)));
    assert_eq!(r.inputs[0].parameters.get("k"), Some(&Parameter::Number(1.into())));
    assert_eq!(r.outputs.unwrap()[0].parameters.get("binary_data"), Some(&Parameter::Bool(false)));

    let many: Vec<String> = (0..65).map(|i| format!(r#""k{i}":{i}"#)).collect();
    let long = "v".repeat(4096);
    let cases = [
        (
            r#"{"parameters":{"a":{"b":1}},"inputs":[]}"#.into(),
            "the request: parameter \"a\" is not a string, number or boolean",
        ),
        (r#"{"parameters":{"a":[1]},"inputs":[]}"#.into(), "parameter \"a\" is not a string"),
        (r#"{"parameters":{"a":null},"inputs":[]}"#.into(), "parameter \"a\" is not a string"),
        (r#"{"parameters":{"a":1,"a":2},"inputs":[]}"#.into(), "parameter \"a\" given twice"),
        (
            format!(r#"{{"parameters":{{{}}},"inputs":[]}}"#, many.join(",")),
            "the request: more than 64 parameters",
        ),
        (
            format!(r#"{{"parameters":{{"a":"{long}"}},"inputs":[]}}"#),
            "parameter \"a\" is longer than 4096 bytes",
        ),
        (format!(r#"{{"inputs":[{x},"parameters":{{"a":{{}}}}}}]}}"#), "input \"x\": parameter \"a\""),
        (
            r#"{"inputs":[{"parameters":{"a":[]},"name":"x"}]}"#.into(),
            "an input (named later in the request): parameter \"a\"",
        ),
        (
            format!(r#"{{"inputs":[{x}}}],"outputs":[{{"name":"y","parameters":{{"a":[]}}}}]}}"#),
            "output \"y\": parameter \"a\"",
        ),
    ];
    for (json, reason) in cases {
        let e = refusal(&s, &json);
        assert!(e.contains(reason), "{json}: {e}");
    }
}

#[test]
fn ids_are_short_strings() {
    let s = fp32();
    let x = r#"{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}"#;
    let id = "i".repeat(256);
    assert_eq!(parse(&s, &format!(r#"{{"id":"{id}","inputs":[{x}]}}"#)).unwrap().id, Some(id.clone()));
    let e = invalid(&s, &format!(r#"{{"id":"{id}i","inputs":[{x}]}}"#));
    assert_eq!(e, Invalid::IdTooLong);
}

/// No string is buffered past the longest the model's inputs take: 8 KiB raw for a model
/// without BYTES inputs, 2 MiB with; BYTES elements at most 1 MiB decoded.
#[test]
fn strings_are_bounded_before_they_are_buffered() {
    let s = fp32();
    let long = "n".repeat(9000);
    for json in [
        format!(r#"{{"inputs":[{{"name":"{long}"}}]}}"#),
        format!(r#"{{"{long}":1}}"#),
        format!(r#"{{"inputs":[{{"name":"x","shape":[1,4],"datatype":"FP32","data":["{long}"]}}]}}"#),
    ] {
        assert_eq!(invalid(&s, &json), Invalid::StringTooLong { limit: 8192 });
    }
    // Escapes count as what they decode to, at least.
    let escaped = "\\n".repeat(9000);
    assert_eq!(invalid(&s, &format!(r#"{{"id":"{escaped}"}}"#)), Invalid::StringTooLong { limit: 8192 });

    let (s, _) = one("BYTES", 1, "");
    let at =
        |v: &str| format!(r#"{{"inputs":[{{"name":"t","datatype":"BYTES","shape":[1],"data":["{v}"]}}]}}"#);
    let max = "b".repeat(MAX_BYTES_ELEMENT);
    assert!(parse(&s, &at(&max)).is_ok());
    let e = invalid(&s, &at(&format!("{max}b")));
    assert_eq!(e.to_string(), "input \"t\": element 0 is a string longer than 1 MiB");
    let e = invalid(&s, &at(&"b".repeat(2 * MAX_BYTES_ELEMENT + 1)));
    assert_eq!(e, Invalid::StringTooLong { limit: 2 * MAX_BYTES_ELEMENT });
}

/// What a request holds is paid for from the budget before it is allocated, and returned
/// when the reservation is dropped, on success or refusal.
#[test]
fn tensors_are_paid_for_from_the_budget() {
    let s = fp32();
    let n = 100_000;
    let values = vec!["1.5"; 4 * n].join(",");
    let json =
        format!(r#"{{"inputs":[{{"name":"x","datatype":"FP32","shape":[{n},4],"data":[{values}]}}]}}"#);

    let budget = Budget::new(64 << 20);
    let mut held = budget.reservation();
    let r = parse_request(json.as_bytes(), Framing::Json, &s, STRICT, &mut held).unwrap();
    let tensor = 4 * n * 4;
    assert_eq!(r.inputs[0].data.len(), 4 * n);
    assert_eq!(held.held(), s.overhead() + tensor, "the buffer ends exactly at the shape's count");
    assert_eq!(budget.in_use(), held.held());
    drop((r, held));
    assert_eq!(budget.in_use(), 0);

    // Too little budget: 503-style refusal, nothing kept.
    let budget = Budget::with_reserve(1 << 20, 0);
    match parse_with(&s, STRICT, &budget, json.as_bytes()) {
        Err(ParseError::Busy(e)) => assert_eq!(e.limit, 1 << 20),
        other => panic!("{other:?}"),
    }
    assert_eq!(budget.in_use(), 0);
    // A large request may not take the reserve, a small one may.
    let budget = Budget::with_reserve(2 << 20, 1 << 20);
    assert!(matches!(parse_with(&s, STRICT, &budget, json.as_bytes()), Err(ParseError::Busy(_))));
    let small = r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}"#;
    let (mut a, mut b) = (budget.reservation(), budget.reservation());
    a.grow(768 << 10).unwrap();
    b.grow(768 << 10).unwrap();
    assert!(parse_with(&s, STRICT, &budget, small.as_bytes()).is_ok());
}

#[test]
fn a_failing_reader_is_a_read_error() {
    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::ConnectionReset, "gone"))
        }
    }
    let e = parse_with(&fp32(), STRICT, &Budget::new(1 << 20), Failing).unwrap_err();
    assert!(matches!(&e, ParseError::Read(io) if io.kind() == io::ErrorKind::ConnectionReset), "{e:?}");
}

#[test]
fn inputs_come_out_in_the_models_order() {
    let s = schema(&[("a", "INT32", &[1]), ("b", "INT32", &[1])]);
    let r = parse(
        &s,
        r#"{"inputs":[{"name":"b","datatype":"INT32","shape":[1],"data":[2]},{"name":"a","datatype":"INT32","shape":[1],"data":[1]}]}"#,
    )
    .unwrap();
    let names: Vec<_> = r.inputs.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(r.inputs[1].data, TensorData::Int32(vec![2]));
    let e = refusal(&s, r#"{"inputs":[{"name":"b","datatype":"INT32","shape":[1],"data":[2]}]}"#);
    assert_eq!(e, "input \"a\" is missing");
}

// The binary tensor data extension.

/// A body of `json` followed by `raw`, parsed as the binary extension frames it.
fn parse_binary(schema: &Schema, json: &str, raw: &[u8]) -> Result<ParsedRequest, ParseError> {
    let mut body = json.as_bytes().to_vec();
    body.extend_from_slice(raw);
    let mut held = Budget::new(1 << 30).reservation();
    parse_request(&body[..], Framing::Binary { json_len: json.len() }, schema, STRICT, &mut held)
}

fn binary_invalid(schema: &Schema, json: &str, raw: &[u8]) -> Invalid {
    match parse_binary(schema, json, raw) {
        Err(ParseError::Invalid(e)) => e,
        other => panic!("{json}: {other:?}"),
    }
}

fn binary_input(name: &str, datatype: &str, shape: &[usize], size: usize) -> String {
    format!(
        r#"{{"name":"{name}","datatype":"{datatype}","shape":{shape:?},"parameters":{{"binary_data_size":{size}}}}}"#
    )
}

#[test]
fn binary_inputs_are_read_in_request_order_after_the_json() {
    let s = schema(&[("a", "INT64", &[-1, 2]), ("b", "FP32", &[-1]), ("c", "BOOL", &[2])]);
    // The request names b first, then a and c: their raw data comes in that order.
    let json = format!(
        r#"{{"id":"r1","inputs":[{},{},{}],"outputs":[{{"name":"y","parameters":{{"binary_data":true}}}}]}}"#,
        binary_input("b", "FP32", &[3], 12),
        binary_input("a", "INT64", &[1, 2], 16),
        binary_input("c", "BOOL", &[2], 2),
    );
    let mut raw = Vec::new();
    for x in [1.5f32, -2.0, 0.25] {
        raw.extend_from_slice(&x.to_le_bytes());
    }
    for x in [-7i64, 1 << 40] {
        raw.extend_from_slice(&x.to_le_bytes());
    }
    raw.extend_from_slice(&[1, 0]);
    let r = parse_binary(&s, &json, &raw).unwrap();
    assert_eq!(r.id.as_deref(), Some("r1"));
    assert_eq!(r.order, vec![1, 0, 2]);
    assert_eq!(r.inputs[0].data, TensorData::Int64(vec![-7, 1 << 40]));
    assert_eq!(r.inputs[1].data, TensorData::Fp32(vec![1.5, -2.0, 0.25]));
    assert_eq!(r.inputs[2].data, TensorData::Bool(vec![true, false]));
    assert_eq!(r.inputs[1].shape, vec![3]);
}

#[test]
fn binary_and_json_inputs_mix_and_bytes_are_length_prefixed() {
    let s = schema(&[("j", "FP32", &[-1]), ("s", "BYTES", &[-1])]);
    let json = format!(
        r#"{{"inputs":[{{"name":"j","datatype":"FP32","shape":[1],"data":[3]}},{}]}}"#,
        binary_input("s", "BYTES", &[2], 4 + 2 + 4 + 3)
    );
    let raw = [&2u32.to_le_bytes()[..], b"hi", &3u32.to_le_bytes(), "ü!".as_bytes()].concat();
    let r = parse_binary(&s, &json, &raw).unwrap();
    assert_eq!(r.inputs[0].data, TensorData::Fp32(vec![3.0]));
    let TensorData::Bytes(strings) = &r.inputs[1].data else { panic!("{:?}", r.inputs[1].data) };
    assert_eq!(strings.iter().collect::<Vec<_>>(), vec![&b"hi"[..], "ü!".as_bytes()]);
}

#[test]
fn binary_data_is_as_strict_as_json() {
    let s = schema(&[("t", "FP32", &[-1])]);
    let input = |size| format!(r#"{{"inputs":[{}]}}"#, binary_input("t", "FP32", &[2], size));
    // The size must be the shape's bytes exactly.
    assert!(matches!(binary_invalid(&s, &input(7), &[0; 7]), Invalid::BinarySize { got: 7, .. }));
    // The body ends early.
    assert_eq!(
        binary_invalid(&s, &input(8), &[0; 5]),
        Invalid::BinaryTruncated { name: "t".into(), got: 5, want: 8 }
    );
    // Bytes after the last binary input.
    assert_eq!(binary_invalid(&s, &input(8), &[0; 9]), Invalid::TrailingBinary(1));
    // NaN is refused as JSON cannot send it.
    let nan = [&1f32.to_le_bytes()[..], &f32::NAN.to_le_bytes()].concat();
    assert!(matches!(
        binary_invalid(&s, &input(8), &nan),
        Invalid::Value { index: 1, input: Subject(Some(ref n)), .. } if n == "t"
    ));
    // A BOOL byte other than 0 or 1.
    let b = schema(&[("t", "BOOL", &[-1])]);
    let json = format!(r#"{{"inputs":[{}]}}"#, binary_input("t", "BOOL", &[2], 2));
    assert!(matches!(binary_invalid(&b, &json, &[1, 2]), Invalid::Value { index: 1, .. }));
    // Not UTF-8, and a length past the data, in BYTES.
    let st = schema(&[("t", "BYTES", &[-1])]);
    let json = format!(r#"{{"inputs":[{}]}}"#, binary_input("t", "BYTES", &[1], 5));
    let bad = [&1u32.to_le_bytes()[..], &[0xff]].concat();
    assert!(matches!(binary_invalid(&st, &json, &bad), Invalid::Value { index: 0, .. }));
    let long = [&9u32.to_le_bytes()[..], b"a"].concat();
    assert!(matches!(binary_invalid(&st, &json, &long), Invalid::Value { index: 0, .. }));
    // Fewer strings than the shape takes, the bytes all used.
    let json = format!(r#"{{"inputs":[{}]}}"#, binary_input("t", "BYTES", &[2], 8));
    let one_string = [&4u32.to_le_bytes()[..], b"abcd"].concat();
    assert_eq!(
        binary_invalid(&st, &json, &one_string),
        Invalid::BinaryCount { name: "t".into(), got: 1, want: 2 }
    );
}

#[test]
fn binary_framing_is_checked() {
    let s = schema(&[("t", "FP32", &[-1])]);
    // binary_data_size in a request without the header: nothing says where the JSON ends.
    let json = format!(r#"{{"inputs":[{}]}}"#, binary_input("t", "FP32", &[1], 4));
    assert!(matches!(parse(&s, &json), Err(ParseError::Invalid(Invalid::BinaryWithoutHeader))));
    // Both data and binary_data_size.
    let both = r#"{"inputs":[{"name":"t","datatype":"FP32","shape":[1],"data":[1],"parameters":{"binary_data_size":4}}]}"#;
    assert!(matches!(binary_invalid(&s, both, &[0; 4]), Invalid::Parameter { .. }));
    // A size that is not a count.
    let neg =
        r#"{"inputs":[{"name":"t","datatype":"FP32","shape":[1],"parameters":{"binary_data_size":-4}}]}"#;
    assert!(matches!(binary_invalid(&s, neg, &[]), Invalid::Parameter { .. }));
    // The header says the JSON is longer than it is: the raw bytes are read as JSON.
    let json = format!(r#"{{"inputs":[{}]}}"#, binary_input("t", "FP32", &[1], 4));
    let mut body = json.clone().into_bytes();
    body.extend_from_slice(&1f32.to_le_bytes());
    let mut held = Budget::new(1 << 30).reservation();
    let framing = Framing::Binary { json_len: json.len() + 2 };
    assert!(parse_request(&body[..], framing, &s, STRICT, &mut held).is_err());
}

#[test]
fn binary_responses_put_raw_outputs_after_the_json() {
    let response = InferResponse {
        model_name: "m".into(),
        model_version: Some("1".into()),
        id: Some("r1".into()),
        parameters: None,
        outputs: vec![
            OutputTensor {
                name: "a".into(),
                shape: vec![2],
                data: TensorData::Int32(vec![1, -1]),
                binary: true,
            },
            OutputTensor {
                name: "b".into(),
                shape: vec![1],
                data: TensorData::Fp32(vec![0.5]),
                binary: false,
            },
            OutputTensor {
                name: "c".into(),
                shape: vec![1],
                data: TensorData::Bytes(["xy".to_owned()].into_iter().collect()),
                binary: true,
            },
        ],
    };
    let (body, json_len) = response.encode().unwrap();
    let json_len = json_len.unwrap();
    let head: serde_json::Value = serde_json::from_slice(&body[..json_len]).unwrap();
    assert_eq!(head["id"], "r1");
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 8);
    assert!(head["outputs"][0].get("data").is_none());
    assert_eq!(head["outputs"][1]["data"], serde_json::json!([0.5]));
    assert_eq!(head["outputs"][2]["parameters"]["binary_data_size"], 6);
    let raw = &body[json_len..];
    assert_eq!(raw, [&1i32.to_le_bytes()[..], &(-1i32).to_le_bytes(), &2u32.to_le_bytes(), b"xy"].concat());
    // All JSON: no header length.
    let mut json_only = response.clone();
    json_only.outputs.iter_mut().for_each(|o| o.binary = false);
    let (body, json_len) = json_only.encode().unwrap();
    assert_eq!(json_len, None);
    let all: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(all["outputs"][0]["data"], serde_json::json!([1, -1]));
    assert_eq!(all["outputs"][2]["data"], serde_json::json!(["xy"]));
}
