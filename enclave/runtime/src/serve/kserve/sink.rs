//! Where a tensor's values go while its JSON is read: a buffer of the datatype, checking each
//! value as it arrives ([`Typed`], [`Strings`] for BYTES), or, when nothing yet says the
//! datatype, JSON scalars typed later ([`Loose`]). Every buffer pays for its growth from the
//! request's reservation before it allocates, and stops at its cap.

use super::parse::{Ctx, MAX_BYTES_ELEMENT, ParseError};
use super::tensor::{ByteStrings, Datatype, NOT_BOOL, NOT_NUMBER, NOT_STRING, Scalar, TensorData};
use super::{Invalid, Subject};
use crate::serve::budget::Exhausted;

/// The first allocation of a tensor buffer, in elements (unless its cap is smaller).
const FIRST_ALLOCATION: usize = 1024;

/// A vector whose capacity is paid for from the request's reservation before it is
/// allocated. Growth doubles (so pays at most twice the elements held) and never passes the
/// cap it is given; while it moves, the old and the new block are both paid for.
struct Buf<T> {
    vec: Vec<T>,
    /// Elements of capacity paid for.
    paid: usize,
}

impl<T> Buf<T> {
    fn new() -> Self {
        Buf { vec: Vec::new(), paid: 0 }
    }

    /// Room for `more` elements, the capacity at most `cap` (or what is needed).
    fn room(&mut self, more: usize, cap: usize, ctx: &Ctx<'_>) -> Result<(), Exhausted> {
        let need = self.vec.len().saturating_add(more);
        if need <= self.paid {
            return Ok(());
        }
        let want = need.max(self.paid.saturating_mul(2)).max(FIRST_ALLOCATION).min(cap.max(need));
        let size = size_of::<T>();
        ctx.reserve(want.saturating_mul(size))?;
        self.vec.reserve_exact(want - self.vec.len());
        ctx.release(self.paid * size);
        self.paid = want;
        Ok(())
    }

    fn push(&mut self, x: T, cap: usize, ctx: &Ctx<'_>) -> Result<(), Exhausted> {
        self.room(1, cap, ctx)?;
        self.vec.push(x);
        Ok(())
    }

    /// Drops the buffer and gives back what it paid.
    fn discard(self, ctx: &Ctx<'_>) {
        ctx.release(self.paid * size_of::<T>());
    }
}

/// Why a sink stopped taking values.
pub(super) enum Stop {
    Value {
        index: usize,
        what: &'static str,
    },
    /// A value past the cap.
    Overflow,
    Busy(Exhausted),
}

impl From<Exhausted> for Stop {
    fn from(e: Exhausted) -> Self {
        Stop::Busy(e)
    }
}

/// Where a tensor's values go, one JSON scalar at a time, in row-major order.
pub(super) trait Sink {
    fn bool(&mut self, v: bool, ctx: &Ctx<'_>) -> Result<(), Stop>;
    fn u64(&mut self, v: u64, ctx: &Ctx<'_>) -> Result<(), Stop>;
    fn i64(&mut self, v: i64, ctx: &Ctx<'_>) -> Result<(), Stop>;
    fn f64(&mut self, v: f64, ctx: &Ctx<'_>) -> Result<(), Stop>;
    fn str(&mut self, v: &str, ctx: &Ctx<'_>) -> Result<(), Stop>;
    /// `null`.
    fn other(&mut self, ctx: &Ctx<'_>) -> Result<(), Stop>;
    /// Values taken so far: the index of the next.
    fn seen(&self) -> usize;
    fn into_collected(self: Box<Self>) -> Collected;
}

pub(super) enum Collected {
    Data(TensorData),
    Loose(Loose),
}

pub(super) fn sink_for(d: Datatype, cap: usize) -> Box<dyn Sink> {
    match d {
        Datatype::Bool => Box::new(Typed::<bool>::new(cap)),
        Datatype::Uint8 => Box::new(Typed::<u8>::new(cap)),
        Datatype::Uint16 => Box::new(Typed::<u16>::new(cap)),
        Datatype::Uint32 => Box::new(Typed::<u32>::new(cap)),
        Datatype::Uint64 => Box::new(Typed::<u64>::new(cap)),
        Datatype::Int8 => Box::new(Typed::<i8>::new(cap)),
        Datatype::Int16 => Box::new(Typed::<i16>::new(cap)),
        Datatype::Int32 => Box::new(Typed::<i32>::new(cap)),
        Datatype::Int64 => Box::new(Typed::<i64>::new(cap)),
        Datatype::Fp16 => Box::new(Typed::<half::f16>::new(cap)),
        Datatype::Fp32 => Box::new(Typed::<f32>::new(cap)),
        Datatype::Fp64 => Box::new(Typed::<f64>::new(cap)),
        Datatype::Bytes => Box::new(Strings::new(cap)),
    }
}

/// Values of a fixed-size datatype, each checked as it arrives.
struct Typed<T> {
    buf: Buf<T>,
    cap: usize,
}

impl<T: Scalar> Typed<T> {
    fn new(cap: usize) -> Self {
        Typed { buf: Buf::new(), cap }
    }

    fn accept(&mut self, v: Result<T, &'static str>, ctx: &Ctx<'_>) -> Result<(), Stop> {
        let index = self.buf.vec.len();
        if index >= self.cap {
            return Err(Stop::Overflow);
        }
        let x = v.map_err(|what| Stop::Value { index, what })?;
        Ok(self.buf.push(x, self.cap, ctx)?)
    }
}

impl<T: Scalar + 'static> Sink for Typed<T> {
    fn bool(&mut self, v: bool, ctx: &Ctx<'_>) -> Result<(), Stop> {
        self.accept(T::from_bool(v), ctx)
    }
    fn u64(&mut self, v: u64, ctx: &Ctx<'_>) -> Result<(), Stop> {
        self.accept(T::from_u64(v, ctx.options.allow_non_finite), ctx)
    }
    fn i64(&mut self, v: i64, ctx: &Ctx<'_>) -> Result<(), Stop> {
        self.accept(T::from_i64(v, ctx.options.allow_non_finite), ctx)
    }
    fn f64(&mut self, v: f64, ctx: &Ctx<'_>) -> Result<(), Stop> {
        self.accept(T::from_f64(v, ctx.options.allow_non_finite), ctx)
    }
    fn str(&mut self, _: &str, ctx: &Ctx<'_>) -> Result<(), Stop> {
        self.accept(Err(T::WRONG_KIND), ctx)
    }
    fn other(&mut self, ctx: &Ctx<'_>) -> Result<(), Stop> {
        self.accept(Err(T::WRONG_KIND), ctx)
    }
    fn seen(&self) -> usize {
        self.buf.vec.len()
    }
    fn into_collected(self: Box<Self>) -> Collected {
        Collected::Data(T::wrap(self.buf.vec))
    }
}

/// BYTES values: JSON strings, each at most [`MAX_BYTES_ELEMENT`] bytes, their bytes paid for
/// as they are read.
struct Strings {
    bytes: Buf<u8>,
    ends: Buf<u32>,
    cap: usize,
}

impl Strings {
    fn new(cap: usize) -> Self {
        Strings { bytes: Buf::new(), ends: Buf::new(), cap }
    }

    fn push(&mut self, v: &str, ctx: &Ctx<'_>) -> Result<(), Stop> {
        let index = self.ends.vec.len();
        if index >= self.cap {
            return Err(Stop::Overflow);
        }
        if v.len() > MAX_BYTES_ELEMENT {
            return Err(Stop::Value { index, what: "a string longer than 1 MiB" });
        }
        let end = u32::try_from(self.bytes.vec.len() + v.len())
            .map_err(|_| Stop::Value { index, what: "past 4 GiB of BYTES data" })?;
        self.bytes.room(v.len(), usize::MAX, ctx)?;
        self.bytes.vec.extend_from_slice(v.as_bytes());
        Ok(self.ends.push(end, self.cap, ctx)?)
    }

    fn refuse(&self) -> Stop {
        let index = self.ends.vec.len();
        if index >= self.cap { Stop::Overflow } else { Stop::Value { index, what: NOT_STRING } }
    }

    fn into_data(self) -> ByteStrings {
        // Each end was pushed after its string's bytes: in order and within them.
        ByteStrings::from_parts(self.bytes.vec, self.ends.vec).unwrap_or_default()
    }
}

impl Sink for Strings {
    fn bool(&mut self, _: bool, _: &Ctx<'_>) -> Result<(), Stop> {
        Err(self.refuse())
    }
    fn u64(&mut self, _: u64, _: &Ctx<'_>) -> Result<(), Stop> {
        Err(self.refuse())
    }
    fn i64(&mut self, _: i64, _: &Ctx<'_>) -> Result<(), Stop> {
        Err(self.refuse())
    }
    fn f64(&mut self, _: f64, _: &Ctx<'_>) -> Result<(), Stop> {
        Err(self.refuse())
    }
    fn str(&mut self, v: &str, ctx: &Ctx<'_>) -> Result<(), Stop> {
        self.push(v, ctx)
    }
    fn other(&mut self, _: &Ctx<'_>) -> Result<(), Stop> {
        Err(self.refuse())
    }
    fn seen(&self) -> usize {
        self.ends.vec.len()
    }
    fn into_collected(self: Box<Self>) -> Collected {
        Collected::Data(TensorData::Bytes(self.into_data()))
    }
}

/// A JSON number as serde_json reports it.
#[derive(Clone, Copy)]
enum Num {
    U(u64),
    I(i64),
    F(f64),
}

/// Data read before anything says its datatype: JSON scalars of one kind (the first value's),
/// typed once the datatype is read ([`Loose::into_data`]). A value of another kind is
/// remembered by index (the datatype will refuse one kind or the other) and nothing after it
/// is kept, but values are still counted against the cap.
pub(super) struct Loose {
    kind: Option<LooseKind>,
    count: usize,
    cap: usize,
    first_odd: Option<usize>,
}

enum LooseKind {
    Bools(Buf<bool>),
    Numbers(Buf<Num>),
    Strings(Strings),
}

impl Loose {
    pub(super) fn new(cap: usize) -> Self {
        Loose { kind: None, count: 0, cap, first_odd: None }
    }

    /// Counts one value; its index if it is to be kept.
    fn next(&mut self) -> Result<Option<usize>, Stop> {
        let index = self.count;
        if index >= self.cap {
            return Err(Stop::Overflow);
        }
        self.count += 1;
        Ok(if self.first_odd.is_none() { Some(index) } else { None })
    }

    fn number(&mut self, n: Num, ctx: &Ctx<'_>) -> Result<(), Stop> {
        let Some(index) = self.next()? else { return Ok(()) };
        match &mut self.kind {
            None => {
                let mut buf = Buf::new();
                buf.push(n, self.cap, ctx)?;
                self.kind = Some(LooseKind::Numbers(buf));
            }
            Some(LooseKind::Numbers(buf)) => buf.push(n, self.cap, ctx)?,
            Some(_) => self.first_odd = Some(index),
        }
        Ok(())
    }

    /// Types the values as `datatype` (the input's, checked against the model).
    pub(super) fn into_data(
        self,
        datatype: Datatype,
        name: &str,
        ctx: &Ctx<'_>,
    ) -> Result<TensorData, ParseError> {
        let refuse = |index, what| Invalid::Value { input: Subject(Some(name.to_owned())), index, what };
        let wrong_kind = match datatype {
            Datatype::Bool => NOT_BOOL,
            Datatype::Bytes => NOT_STRING,
            _ => NOT_NUMBER,
        };
        let data = match (self.kind, datatype) {
            (None, d) => TensorData::empty(d),
            (Some(LooseKind::Bools(b)), Datatype::Bool) => TensorData::Bool(b.vec),
            (Some(LooseKind::Strings(s)), Datatype::Bytes) => TensorData::Bytes(s.into_data()),
            (Some(LooseKind::Numbers(nums)), d) if !matches!(d, Datatype::Bool | Datatype::Bytes) => {
                let typed = numbers_as(d, &nums.vec, ctx);
                nums.discard(ctx);
                typed.map_err(|e| match e {
                    Stop::Value { index, what } => refuse(index, what).into(),
                    Stop::Overflow => refuse(0, wrong_kind).into(),
                    Stop::Busy(e) => ParseError::Busy(e),
                })?
            }
            // The first value is of the wrong kind.
            (Some(_), _) => return Err(refuse(0, wrong_kind).into()),
        };
        // Values after the first of another kind were not kept: it is the first refused.
        match self.first_odd {
            Some(index) => Err(refuse(index, wrong_kind).into()),
            None => Ok(data),
        }
    }
}

impl Sink for Loose {
    fn bool(&mut self, v: bool, ctx: &Ctx<'_>) -> Result<(), Stop> {
        let Some(index) = self.next()? else { return Ok(()) };
        match &mut self.kind {
            None => {
                let mut buf = Buf::new();
                buf.push(v, self.cap, ctx)?;
                self.kind = Some(LooseKind::Bools(buf));
            }
            Some(LooseKind::Bools(buf)) => buf.push(v, self.cap, ctx)?,
            Some(_) => self.first_odd = Some(index),
        }
        Ok(())
    }
    fn u64(&mut self, v: u64, ctx: &Ctx<'_>) -> Result<(), Stop> {
        self.number(Num::U(v), ctx)
    }
    fn i64(&mut self, v: i64, ctx: &Ctx<'_>) -> Result<(), Stop> {
        self.number(Num::I(v), ctx)
    }
    fn f64(&mut self, v: f64, ctx: &Ctx<'_>) -> Result<(), Stop> {
        self.number(Num::F(v), ctx)
    }
    fn str(&mut self, v: &str, ctx: &Ctx<'_>) -> Result<(), Stop> {
        let Some(index) = self.next()? else { return Ok(()) };
        let cap = self.cap;
        match &mut self.kind {
            None => {
                let mut strings = Strings::new(cap);
                strings.push(v, ctx)?;
                self.kind = Some(LooseKind::Strings(strings));
            }
            Some(LooseKind::Strings(strings)) => strings.push(v, ctx)?,
            Some(_) => self.first_odd = Some(index),
        }
        Ok(())
    }
    fn other(&mut self, _: &Ctx<'_>) -> Result<(), Stop> {
        if let Some(index) = self.next()? {
            self.first_odd = Some(index);
        }
        Ok(())
    }
    fn seen(&self) -> usize {
        self.count
    }
    fn into_collected(self: Box<Self>) -> Collected {
        Collected::Loose(*self)
    }
}

/// `nums` as datatype `d`, paid for.
fn numbers_as(d: Datatype, nums: &[Num], ctx: &Ctx<'_>) -> Result<TensorData, Stop> {
    ctx.reserve(nums.len().saturating_mul(d.element_size()))?;
    numbers_typed(d, nums, ctx.options.allow_non_finite)
}

fn numbers_typed(d: Datatype, nums: &[Num], allow: bool) -> Result<TensorData, Stop> {
    fn typed<T: Scalar>(nums: &[Num], allow: bool) -> Result<TensorData, Stop> {
        let mut out = Vec::with_capacity(nums.len());
        for (index, n) in nums.iter().enumerate() {
            let x = match *n {
                Num::U(v) => T::from_u64(v, allow),
                Num::I(v) => T::from_i64(v, allow),
                Num::F(v) => T::from_f64(v, allow),
            };
            out.push(x.map_err(|what| Stop::Value { index, what })?);
        }
        Ok(T::wrap(out))
    }
    match d {
        Datatype::Uint8 => typed::<u8>(nums, allow),
        Datatype::Uint16 => typed::<u16>(nums, allow),
        Datatype::Uint32 => typed::<u32>(nums, allow),
        Datatype::Uint64 => typed::<u64>(nums, allow),
        Datatype::Int8 => typed::<i8>(nums, allow),
        Datatype::Int16 => typed::<i16>(nums, allow),
        Datatype::Int32 => typed::<i32>(nums, allow),
        Datatype::Int64 => typed::<i64>(nums, allow),
        Datatype::Fp16 => typed::<half::f16>(nums, allow),
        Datatype::Fp32 => typed::<f32>(nums, allow),
        Datatype::Fp64 => typed::<f64>(nums, allow),
        Datatype::Bool => Err(Stop::Value { index: 0, what: NOT_BOOL }),
        Datatype::Bytes => Err(Stop::Value { index: 0, what: NOT_STRING }),
    }
}
