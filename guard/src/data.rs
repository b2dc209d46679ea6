//! Training data for `nacre guard fit`: rows of float features from a CSV file (an optional
//! header row of names) or a NumPy `.npy` file (2-D, little-endian float32 or float64, C order).
//! Both are read strictly and streamed, so a file larger than memory can be fitted; the reader
//! reports the bytes consumed for progress.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// Why training data cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    #[error("reading the data: {0}")]
    Io(#[from] std::io::Error),
    #[error("the .npy header is invalid: {0}")]
    NpyHeader(String),
    #[error("line {line}: {reason}")]
    Csv { line: u64, reason: String },
    #[error("the data has {got} columns; {expected} are needed")]
    Width { got: usize, expected: usize },
    #[error("the data has no rows")]
    Empty,
}

/// What a data file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Rows, when the format says (`.npy`); CSV is counted as it is read.
    pub rows: Option<u64>,
    pub columns: usize,
    /// Column names from a CSV header row.
    pub names: Option<Vec<String>>,
}

enum Kind {
    Npy { f64: bool, data_start: u64 },
    Csv { header: bool },
}

/// An opened data file; [`Data::rows`] reads it from the start each time it is called.
pub struct Data {
    path: std::path::PathBuf,
    kind: Kind,
    shape: Shape,
    len: u64,
}

impl core::fmt::Debug for Data {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Data").field("path", &self.path).field("shape", &self.shape).finish_non_exhaustive()
    }
}

const NPY_MAGIC: &[u8] = b"\x93NUMPY";
const MAX_NPY_HEADER: usize = 64 << 10;

impl Data {
    /// Opens `path`: `.npy` by its magic, anything else as CSV.
    pub fn open(path: &Path) -> Result<Self, DataError> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        let mut magic = [0u8; 6];
        let n = f.read(&mut magic)?;
        let (kind, shape) =
            if n == 6 && magic == NPY_MAGIC { npy_header(&mut f)? } else { csv_header(path)? };
        Ok(Data { path: path.to_owned(), kind, shape, len })
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// File size, for progress.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Calls `row` with each row and the bytes read so far; returns the row count. Stops at
    /// the first error, from the file or from `row`.
    pub fn rows<E: From<DataError>>(
        &self,
        mut row: impl FnMut(&[f32], u64) -> Result<(), E>,
    ) -> Result<u64, E> {
        let d = self.shape.columns;
        let mut buf = vec![0f32; d];
        let mut count = 0u64;
        match self.kind {
            Kind::Npy { f64, data_start } => {
                let mut r =
                    BufReader::with_capacity(1 << 20, File::open(&self.path).map_err(DataError::from)?);
                std::io::copy(&mut (&mut r).take(data_start), &mut std::io::sink())
                    .map_err(DataError::from)?;
                let width = if f64 { 8 } else { 4 };
                let mut raw = vec![0u8; d * width];
                let rows = self.shape.rows.unwrap_or(0);
                for i in 0..rows {
                    r.read_exact(&mut raw).map_err(DataError::from)?;
                    for (v, b) in buf.iter_mut().zip(raw.chunks_exact(width)) {
                        *v = if f64 {
                            f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32
                        } else {
                            f32::from_le_bytes(b.try_into().unwrap_or([0; 4]))
                        };
                    }
                    row(&buf, data_start + (i + 1) * (d * width) as u64)?;
                    count += 1;
                }
                let mut rest = [0u8; 1];
                if r.read(&mut rest).map_err(DataError::from)? != 0 {
                    return Err(DataError::NpyHeader("bytes after the last row".into()).into());
                }
            }
            Kind::Csv { header } => {
                let r = BufReader::with_capacity(1 << 20, File::open(&self.path).map_err(DataError::from)?);
                let mut read = 0u64;
                for (i, line) in r.lines().enumerate() {
                    let line = line.map_err(DataError::from)?;
                    read += line.len() as u64 + 1;
                    let number = i as u64 + 1;
                    if (header && i == 0) || line.trim().is_empty() {
                        continue;
                    }
                    let mut n = 0;
                    for field in line.split(',') {
                        let v: f32 = field.trim().parse().map_err(|_| DataError::Csv {
                            line: number,
                            reason: format!("{:?} is not a number", field.trim()),
                        })?;
                        if n < d {
                            buf[n] = v;
                        }
                        n += 1;
                    }
                    if n != d {
                        return Err(DataError::Csv {
                            line: number,
                            reason: format!("{n} fields, {d} expected"),
                        }
                        .into());
                    }
                    row(&buf, read.min(self.len))?;
                    count += 1;
                }
            }
        }
        if count == 0 {
            return Err(DataError::Empty.into());
        }
        Ok(count)
    }
}

fn npy_header(f: &mut File) -> Result<(Kind, Shape), DataError> {
    let bad = |s: &str| DataError::NpyHeader(s.into());
    let mut version = [0u8; 2];
    f.read_exact(&mut version)?;
    let header_len = match version[0] {
        1 => {
            let mut l = [0u8; 2];
            f.read_exact(&mut l)?;
            usize::from(u16::from_le_bytes(l))
        }
        2 | 3 => {
            let mut l = [0u8; 4];
            f.read_exact(&mut l)?;
            u32::from_le_bytes(l) as usize
        }
        v => return Err(DataError::NpyHeader(format!("version {v} is unknown"))),
    };
    if header_len > MAX_NPY_HEADER {
        return Err(bad("the header is too long"));
    }
    let mut header = vec![0u8; header_len];
    f.read_exact(&mut header)?;
    let data_start = 6 + 2 + if version[0] == 1 { 2 } else { 4 } + header_len as u64;
    let text = std::str::from_utf8(&header).map_err(|_| bad("the header is not text"))?;
    // The header is a Python dict literal with exactly these keys; read them, refuse others.
    let value = |key: &str| -> Result<&str, DataError> {
        let at =
            text.find(&format!("'{key}':")).ok_or_else(|| DataError::NpyHeader(format!("no '{key}'")))?;
        Ok(text[at + key.len() + 3..].trim_start())
    };
    let f64 = match value("descr")? {
        v if v.starts_with("'<f8'") => true,
        v if v.starts_with("'<f4'") => false,
        v => {
            return Err(DataError::NpyHeader(format!(
                "element type {} is not <f4 or <f8",
                &v[..v.len().min(8)]
            )));
        }
    };
    if !value("fortran_order")?.starts_with("False") {
        return Err(bad("Fortran order is not supported: save a C-ordered array"));
    }
    let shape = value("shape")?;
    let inner = shape.strip_prefix('(').and_then(|s| s.split(')').next()).ok_or_else(|| bad("shape"))?;
    let dims: Vec<u64> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad("shape")))
        .collect::<Result<_, _>>()?;
    let [rows, columns] = dims[..] else {
        return Err(DataError::NpyHeader(format!("shape {dims:?} is not 2-D (rows, features)")));
    };
    let columns = usize::try_from(columns).map_err(|_| bad("too many columns"))?;
    Ok((Kind::Npy { f64, data_start }, Shape { rows: Some(rows), columns, names: None }))
}

fn csv_header(path: &Path) -> Result<(Kind, Shape), DataError> {
    let mut first = String::new();
    BufReader::new(File::open(path)?).read_line(&mut first)?;
    let fields: Vec<&str> = first.trim_end_matches(['\r', '\n']).split(',').map(str::trim).collect();
    if first.trim().is_empty() {
        return Err(DataError::Empty);
    }
    let header = fields.iter().any(|f| f.parse::<f32>().is_err());
    let names = header.then(|| fields.iter().map(|s| (*s).to_owned()).collect());
    Ok((Kind::Csv { header }, Shape { rows: None, columns: fields.len(), names }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rows_of(path: &Path) -> Result<Vec<Vec<f32>>, DataError> {
        let data = Data::open(path)?;
        let mut out = Vec::new();
        data.rows(|r, _| -> Result<(), DataError> {
            out.push(r.to_vec());
            Ok(())
        })?;
        Ok(out)
    }

    fn npy(descr: &str, shape: &str, body: &[u8]) -> Vec<u8> {
        let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(body);
        out
    }

    #[test]
    fn csv_and_npy_give_the_same_rows_and_bad_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("nacre-guard-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = |n: &str| dir.join(n);
        std::fs::write(p("a.csv"), "amount,kind\n1.5,0\n\n-2,1\n").unwrap();
        let d = Data::open(&p("a.csv")).unwrap();
        assert_eq!(d.shape().names.as_deref(), Some(&["amount".to_owned(), "kind".to_owned()][..]));
        assert_eq!(rows_of(&p("a.csv")).unwrap(), vec![vec![1.5, 0.0], vec![-2.0, 1.0]]);
        std::fs::write(p("b.csv"), "1.5,0\n-2,1\n").unwrap();
        assert_eq!(Data::open(&p("b.csv")).unwrap().shape().names, None);
        assert_eq!(rows_of(&p("b.csv")).unwrap().len(), 2);
        let f4: Vec<u8> = [1.5f32, 0.0, -2.0, 1.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(p("a.npy"), npy("<f4", "(2, 2)", &f4)).unwrap();
        assert_eq!(rows_of(&p("a.npy")).unwrap(), vec![vec![1.5, 0.0], vec![-2.0, 1.0]]);
        let f8: Vec<u8> = [1.5f64, 0.0, -2.0, 1.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(p("b.npy"), npy("<f8", "(2, 2)", &f8)).unwrap();
        assert_eq!(rows_of(&p("b.npy")).unwrap(), vec![vec![1.5, 0.0], vec![-2.0, 1.0]]);

        std::fs::write(p("bad.csv"), "1,2\n3,x\n").unwrap();
        assert!(matches!(rows_of(&p("bad.csv")), Err(DataError::Csv { line: 2, .. })));
        std::fs::write(p("ragged.csv"), "1,2\n3\n").unwrap();
        assert!(matches!(rows_of(&p("ragged.csv")), Err(DataError::Csv { line: 2, .. })));
        std::fs::write(p("i8.npy"), npy("<i8", "(2, 2)", &f8)).unwrap();
        assert!(matches!(rows_of(&p("i8.npy")), Err(DataError::NpyHeader(_))));
        std::fs::write(p("3d.npy"), npy("<f4", "(1, 2, 2)", &f4)).unwrap();
        assert!(matches!(rows_of(&p("3d.npy")), Err(DataError::NpyHeader(_))));
        std::fs::write(p("short.npy"), npy("<f4", "(3, 2)", &f4)).unwrap();
        assert!(matches!(rows_of(&p("short.npy")), Err(DataError::Io(_))));
        std::fs::write(p("long.npy"), npy("<f4", "(1, 2)", &f4)).unwrap();
        assert!(matches!(rows_of(&p("long.npy")), Err(DataError::NpyHeader(_))));
        std::fs::write(p("empty.csv"), "a,b\n").unwrap();
        assert!(matches!(rows_of(&p("empty.csv")), Err(DataError::Empty)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
