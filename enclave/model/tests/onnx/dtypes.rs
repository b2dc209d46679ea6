//! Every KServe v2 datatype through tract and through [`Model`]: the models of
//! `scripts/models.py make dtypes DIR` (one per datatype, `x T[N,4] -> y T[N,4], z T[N,4]`:
//! `y` computes per column, `z` permutes the columns), each run on the request's input and its
//! outputs compared with onnxruntime's.
//!
//!     "$NACRE_PYTHON" scripts/models.py make dtypes DIR
//!     NACRE_DTYPE_MODELS=DIR cargo test -p nacre-model --test onnx dtypes -- --nocapture
//!
//! Without `NACRE_DTYPE_MODELS` the test makes the models itself (the pinned virtualenv of
//! `scripts/inputs.sh`). The inputs and
//! onnxruntime's outputs come from the ONNX TensorProto files models.py writes beside each model
//! (`dtype-<t>.input_0.pb`, `.output_0.pb`, `.output_1.pb`, the ONNX backend tests' format):
//! they keep FP16 bits, 64-bit integers and strings exact, and tract-onnx reads them with the
//! code that reads a model's initializers, so no JSON parser is needed here.
//!
//! Each datatype is checked twice, at batch 3 and at batch 1 (the batch dimension is symbolic):
//! - `tract`: tract-onnx alone (parse, optimize, plan, run on tract tensors), the same steps as
//!   [`Model::load`]. This row says whether tract itself handles the type.
//! - `nacre`: [`Model::load`], [`Model::signature`] (names and the protocol's datatype) and
//!   [`Model::run`] on [`nacre_model::Tensor`]s, i.e. Nacre's conversions to and from tract.
//!
//! Outputs must be equal, floats too: y = x + c is one correctly rounded operation in both
//! runtimes (FP16 is added in f32 and rounded once by both) and z is a permutation. Every row
//! runs before the test fails; the failure lists each row with tract's text (test models: no
//! weights to keep private).
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use nacre_model::{Model, TensorData};
use tract_onnx::data_resolver::FopenDataResolver;
use tract_onnx::prelude::*;
use tract_onnx::tensor::{load_tensor, proto_from_reader};

/// The protocol's datatype name (lower-cased in the file names) and tract's element type.
const DATATYPES: &[(&str, DatumType)] = &[
    ("BOOL", DatumType::Bool),
    ("INT8", DatumType::I8),
    ("INT16", DatumType::I16),
    ("INT32", DatumType::I32),
    ("INT64", DatumType::I64),
    ("UINT8", DatumType::U8),
    ("UINT16", DatumType::U16),
    ("UINT32", DatumType::U32),
    ("UINT64", DatumType::U64),
    ("FP16", DatumType::F16),
    ("FP32", DatumType::F32),
    ("FP64", DatumType::F64),
    ("BYTES", DatumType::String),
];

/// One datatype's files: the model, its input and onnxruntime's two outputs (y, z).
struct Case {
    onnx: Vec<u8>,
    x: Tensor,
    expected: [Tensor; 2],
}

fn read_tensor(path: &Path) -> Result<Tensor, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let proto = proto_from_reader(file).map_err(|e| format!("{}: {e:#}", path.display()))?;
    load_tensor(&FopenDataResolver, &proto, None).map_err(|e| format!("{}: {e:#}", path.display()))
}

fn read_case(dir: &Path, kserve: &str, dt: DatumType) -> Result<Case, String> {
    let base = dir.join(format!("dtype-{}", kserve.to_lowercase())).display().to_string();
    let onnx = std::fs::read(format!("{base}.onnx")).map_err(|e| format!("{base}.onnx: {e}"))?;
    let x = read_tensor(Path::new(&format!("{base}.input_0.pb")))?;
    let expected = [
        read_tensor(Path::new(&format!("{base}.output_0.pb")))?,
        read_tensor(Path::new(&format!("{base}.output_1.pb")))?,
    ];
    for t in std::iter::once(&x).chain(&expected) {
        if t.datum_type() != dt || t.rank() != 2 || t.shape()[1] != 4 {
            return Err(format!(
                "{base}.*.pb: expected {dt:?}[N,4], got {:?}{:?}",
                t.datum_type(),
                t.shape()
            ));
        }
    }
    Ok(Case { onnx, x, expected })
}

/// The first `rows` rows of an `[N, 4]` tensor.
fn first_rows(t: &Tensor, rows: usize) -> Result<Tensor, String> {
    t.slice(0, 0, rows).map_err(|e| format!("slicing rows: {e:#}"))
}

/// The batch sizes each model is run at: the whole request, then its first row alone.
fn batches(case: &Case) -> [usize; 2] {
    [case.x.shape()[0], 1]
}

/// tract alone: the steps of `Model::load`, then a run on tract tensors.
fn check_tract(case: &Case) -> Result<(), String> {
    let plan = onnx()
        .model_for_read(&mut std::io::Cursor::new(&case.onnx))
        .map_err(|e| format!("parse: {e:#}"))?
        .into_optimized()
        .map_err(|e| format!("optimize: {e:#}"))?
        .into_runnable()
        .map_err(|e| format!("plan: {e:#}"))?;
    for rows in batches(case) {
        let out = plan
            .run(tvec!(first_rows(&case.x, rows)?.into_tvalue()))
            .map_err(|e| format!("run (batch {rows}): {e:#}"))?;
        let out: Vec<Tensor> = out.into_iter().map(TValue::into_tensor).collect();
        let want = case.expected.iter().map(|t| first_rows(t, rows)).collect::<Result<Vec<_>, _>>()?;
        compare("tract", rows, &out, &want)?;
    }
    Ok(())
}

/// The outputs (y, z) of one run against onnxruntime's.
fn compare<T: PartialEq + std::fmt::Debug>(
    who: &str,
    rows: usize,
    got: &[T],
    want: &[T],
) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("run (batch {rows}): {} outputs, expected {}", got.len(), want.len()));
    }
    for ((got, want), name) in got.iter().zip(want).zip(["y", "z"]) {
        if got != want {
            return Err(format!(
                "{name} (batch {rows}) differs from onnxruntime's:\n      {who:11} {got:?}\n      onnxruntime {want:?}"
            ));
        }
    }
    Ok(())
}

/// A tract tensor as the serving layer hands it to [`Model::run`].
fn to_nacre(t: &Tensor) -> Result<nacre_model::Tensor, String> {
    fn plain<T: Datum + Clone>(t: &Tensor) -> Result<Vec<T>, String> {
        Ok(t.to_plain_array_view::<T>().map_err(|e| format!("{e:#}"))?.iter().cloned().collect())
    }
    let data = match t.datum_type() {
        DatumType::Bool => TensorData::Bool(plain(t)?),
        DatumType::U8 => TensorData::Uint8(plain(t)?),
        DatumType::U16 => TensorData::Uint16(plain(t)?),
        DatumType::U32 => TensorData::Uint32(plain(t)?),
        DatumType::U64 => TensorData::Uint64(plain(t)?),
        DatumType::I8 => TensorData::Int8(plain(t)?),
        DatumType::I16 => TensorData::Int16(plain(t)?),
        DatumType::I32 => TensorData::Int32(plain(t)?),
        DatumType::I64 => TensorData::Int64(plain(t)?),
        DatumType::F16 => TensorData::Fp16(plain(t)?),
        DatumType::F32 => TensorData::Fp32(plain(t)?),
        DatumType::F64 => TensorData::Fp64(plain(t)?),
        DatumType::String => TensorData::Bytes(plain::<String>(t)?.into_iter().collect()),
        other => return Err(format!("no protocol datatype for {other:?}")),
    };
    Ok(nacre_model::Tensor { shape: t.shape().to_vec(), data })
}

/// Nacre's model: load, signature, run on the serving layer's tensors.
fn check_nacre(case: &Case, kserve: &str) -> Result<(), String> {
    let model = Model::load(&case.onnx).map_err(|e| format!("load: {}", e.tract_detail()))?;
    let (inputs, outputs) = model.signature().map_err(|e| format!("signature: {}", e.tract_detail()))?;
    let declared: Vec<_> =
        inputs.iter().chain(&outputs).map(|t| (t.name.as_str(), t.datatype.map(|d| d.name()))).collect();
    if declared != [("x", Some(kserve)), ("y", Some(kserve)), ("z", Some(kserve))] {
        return Err(format!("signature: expected x, y, z of {kserve}, got {declared:?}"));
    }
    for rows in batches(case) {
        let out = model
            .run(vec![to_nacre(&first_rows(&case.x, rows)?)?])
            .map_err(|e| format!("run (batch {rows}): {}", e.tract_detail()))?;
        let want =
            case.expected.iter().map(|t| to_nacre(&first_rows(t, rows)?)).collect::<Result<Vec<_>, _>>()?;
        compare("nacre", rows, &out, &want)?;
    }
    Ok(())
}

/// The models, made here by `scripts/models.py make dtypes` in the test's scratch directory.
fn make_models() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("dtypes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    crate::models_py(&["make".as_ref(), "dtypes".as_ref(), dir.as_os_str()]);
    dir
}

#[test]
fn every_datatype_loads_runs_and_matches_onnxruntime() {
    let dir = match std::env::var_os("NACRE_DTYPE_MODELS") {
        Some(dir) => PathBuf::from(dir),
        None => make_models(),
    };
    let mut table = String::new();
    let mut failed = 0;
    let mut row = |what: &str, kserve: &str, result: Result<(), String>| match result {
        Ok(()) => writeln!(table, "ok    {what:5} {kserve}").unwrap(),
        Err(e) => {
            failed += 1;
            writeln!(table, "FAIL  {what:5} {kserve}: {e}").unwrap();
        }
    };
    for &(kserve, dt) in DATATYPES {
        match read_case(&dir, kserve, dt) {
            Ok(case) => {
                row("tract", kserve, check_tract(&case));
                row("nacre", kserve, check_nacre(&case, kserve));
            }
            Err(e) => row("files", kserve, Err(e)),
        }
    }
    eprintln!("dtypes in {}:\n{table}", dir.display());
    assert_eq!(failed, 0, "{failed} checks failed:\n{table}");
}
