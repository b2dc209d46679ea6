//! The binary tensor data extension: input data read raw after the request's JSON, and
//! outputs written raw after the response's JSON.
//!
//! Raw input data is as strict as JSON data: exactly `binary_data_size` bytes, each element
//! checked as its datatype requires (BOOL 0 or 1, floats finite unless the configuration
//! allows otherwise, BYTES length-prefixed UTF-8 strings, as tract's strings are), read in
//! bounded chunks whose buffers are paid for from the request's reservation before they grow.

use std::io::{self, Read};

use half::f16;

use super::parse::{ParseError, Tensor};
use super::tensor::{ByteStrings, Datatype, TensorData};
use super::{Invalid, Subject, parse::MAX_BYTES_ELEMENT};
use crate::serve::budget::Reservation;

/// Bytes read at once.
const CHUNK: usize = 64 * 1024;

/// Reads `tensor`'s `size` bytes of raw data (its header already checked: `size` fits its
/// datatype and shape).
pub(crate) fn read<R: Read>(
    reader: &mut R,
    tensor: &Tensor,
    size: usize,
    options: super::Options,
    held: &mut Reservation,
) -> Result<TensorData, ParseError> {
    let count = tensor.shape.iter().product::<usize>();
    let mut raw = Raw { reader, name: &tensor.name, want: size, got: 0 };
    decode(&mut raw, tensor.data.datatype(), count, options.allow_non_finite, held)
        .and_then(|data| {
            if data.len() == count {
                Ok(data)
            } else {
                Err(Invalid::BinaryCount { name: tensor.name.clone(), got: data.len(), want: count }.into())
            }
        })
        .map_err(|e| match e {
            // Name the input in a value refusal (the element closures do not know it).
            ParseError::Invalid(Invalid::Value { input: Subject(None), index, what }) => {
                Invalid::Value { input: Subject(Some(tensor.name.clone())), index, what }.into()
            }
            other => other,
        })
}

fn decode<R: Read>(
    raw: &mut Raw<'_, R>,
    datatype: Datatype,
    count: usize,
    allow: bool,
    held: &mut Reservation,
) -> Result<TensorData, ParseError> {
    Ok(match datatype {
        Datatype::Bool => TensorData::Bool(fixed(raw, held, 1, |b, i| match b[0] {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(value(i, "not a boolean (0 or 1)")),
        })?),
        Datatype::Uint8 => TensorData::Uint8(fixed(raw, held, 1, |b, _| Ok(b[0]))?),
        Datatype::Int8 => TensorData::Int8(fixed(raw, held, 1, |b, _| Ok(b[0] as i8))?),
        Datatype::Uint16 => TensorData::Uint16(fixed(raw, held, 2, |b, _| Ok(le(b)))?),
        Datatype::Int16 => TensorData::Int16(fixed(raw, held, 2, |b, _| Ok(le(b)))?),
        Datatype::Uint32 => TensorData::Uint32(fixed(raw, held, 4, |b, _| Ok(le(b)))?),
        Datatype::Int32 => TensorData::Int32(fixed(raw, held, 4, |b, _| Ok(le(b)))?),
        Datatype::Uint64 => TensorData::Uint64(fixed(raw, held, 8, |b, _| Ok(le(b)))?),
        Datatype::Int64 => TensorData::Int64(fixed(raw, held, 8, |b, _| Ok(le(b)))?),
        Datatype::Fp16 => TensorData::Fp16(fixed(raw, held, 2, |b, i| {
            finite(f16::from_le_bytes([b[0], b[1]]), f16::is_finite, allow, i)
        })?),
        Datatype::Fp32 => {
            TensorData::Fp32(fixed(raw, held, 4, |b, i| finite(le::<4, f32>(b), f32::is_finite, allow, i))?)
        }
        Datatype::Fp64 => {
            TensorData::Fp64(fixed(raw, held, 8, |b, i| finite(le::<8, f64>(b), f64::is_finite, allow, i))?)
        }
        Datatype::Bytes => TensorData::Bytes(strings(raw, held, count)?),
    })
}

/// After the last binary input: nothing more may come.
pub(super) fn end<R: Read>(reader: &mut R) -> Result<(), ParseError> {
    let mut rest = [0u8; 512];
    let mut extra = 0;
    loop {
        match reader.read(&mut rest) {
            Ok(0) => break,
            Ok(n) => extra += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ParseError::Read(e)),
        }
        // Enough to say so; the rest is not read.
        if extra >= rest.len() {
            break;
        }
    }
    if extra > 0 { Err(Invalid::TrailingBinary(extra).into()) } else { Ok(()) }
}

fn value(index: usize, what: &'static str) -> ParseError {
    Invalid::Value { input: Subject(None), index, what }.into()
}

fn le<const N: usize, T: FromLe<N>>(b: &[u8]) -> T {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    T::from_le(a)
}

/// `from_le_bytes` for the integer and float element types.
trait FromLe<const N: usize> {
    fn from_le(b: [u8; N]) -> Self;
}

macro_rules! from_le {
    ($($t:ty: $n:literal),*) => {$(
        impl FromLe<$n> for $t {
            fn from_le(b: [u8; $n]) -> Self {
                <$t>::from_le_bytes(b)
            }
        }
    )*};
}
from_le!(u16: 2, i16: 2, u32: 4, i32: 4, u64: 8, i64: 8, f32: 4, f64: 8);

/// JSON cannot carry NaN or infinity; raw data can, and it is refused alike unless the
/// configuration allows non-finite inputs.
fn finite<T: Copy>(x: T, is_finite: fn(T) -> bool, allow: bool, index: usize) -> Result<T, ParseError> {
    if allow || is_finite(x) { Ok(x) } else { Err(value(index, "not finite (NaN or ±inf)")) }
}

/// The input's raw bytes as they are read: never more than `want`.
struct Raw<'r, R> {
    reader: &'r mut R,
    name: &'r str,
    want: usize,
    got: usize,
}

impl<R: Read> Raw<'_, R> {
    /// Fills `buf` whole from the body; the body ending first is the client's error.
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), ParseError> {
        let mut at = 0;
        while at < buf.len() {
            match self.reader.read(&mut buf[at..]) {
                Ok(0) => {
                    let got = self.got + at;
                    return Err(Invalid::BinaryTruncated {
                        name: self.name.to_owned(),
                        got,
                        want: self.want,
                    }
                    .into());
                }
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ParseError::Read(e)),
            }
        }
        self.got += buf.len();
        Ok(())
    }

    fn left(&self) -> usize {
        self.want - self.got
    }
}

/// Fixed-size elements, converted chunk by chunk into their typed buffer, each chunk paid for
/// before the buffer grows.
fn fixed<R: Read, T>(
    raw: &mut Raw<'_, R>,
    held: &mut Reservation,
    size: usize,
    element: impl Fn(&[u8], usize) -> Result<T, ParseError>,
) -> Result<Vec<T>, ParseError> {
    let mut out: Vec<T> = Vec::new();
    let mut chunk = vec![0u8; CHUNK.min(raw.left())];
    while raw.left() > 0 {
        let n = chunk.len().min(raw.left());
        raw.fill(&mut chunk[..n])?;
        held.grow(n / size * size_of::<T>())?;
        out.reserve_exact(n / size);
        for b in chunk[..n].chunks_exact(size) {
            let index = out.len();
            out.push(element(b, index)?);
        }
    }
    Ok(out)
}

/// BYTES: each element a u32 little-endian length, then that many bytes of UTF-8.
fn strings<R: Read>(
    raw: &mut Raw<'_, R>,
    held: &mut Reservation,
    count: usize,
) -> Result<ByteStrings, ParseError> {
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    held.grow(count.saturating_mul(4))?;
    ends.reserve_exact(count);
    while raw.left() > 0 {
        let index = ends.len();
        if index == count {
            // The elements are all read and bytes remain: more elements than the shape takes.
            return Err(
                Invalid::BinaryCount { name: raw.name.to_owned(), got: count + 1, want: count }.into()
            );
        }
        if raw.left() < 4 {
            return Err(value(index, "cut short in its length prefix"));
        }
        let mut prefix = [0u8; 4];
        raw.fill(&mut prefix)?;
        let len = u32::from_le_bytes(prefix) as usize;
        if len > MAX_BYTES_ELEMENT {
            return Err(value(index, "a string longer than 1 MiB"));
        }
        if len > raw.left() {
            return Err(value(index, "longer than the binary data left"));
        }
        held.grow(len)?;
        let start = bytes.len();
        bytes.resize(start + len, 0);
        raw.fill(&mut bytes[start..])?;
        if std::str::from_utf8(&bytes[start..]).is_err() {
            return Err(value(index, "not UTF-8 (the model takes strings)"));
        }
        let end = u32::try_from(bytes.len()).map_err(|_| value(index, "past 4 GiB of BYTES data"))?;
        ends.push(end);
    }
    // Each end was pushed after its string's bytes: in order and within them.
    ByteStrings::from_parts(bytes, ends).ok_or_else(|| value(0, "inconsistent"))
}
