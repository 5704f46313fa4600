//! Code files: what `vaelab encode` writes and `vaelab decode` reads, as CSV, JSON lines or NPY.
//!
//! One row per image: its relative path, its label columns, then the code. Column names say which
//! element is which: `mu_0 … mu_9, logvar_0 …` for a Gaussian code; `mu_c0_y0_x0 …` (channel, row,
//! column; channel-major) for a spatial one; `code_y0_x0 …` (codebook indices, raster order) for a
//! quantized one; `z_0 …` for an autoencoder's. Floats are written in Rust's shortest form that
//! reads back to the same `f32`, so a code file decodes to exactly the images it came from.
//!
//! NPY (NumPy's format, written and read with the `npyz` crate): an (N, columns) array of `float32`
//! (`int64` for code indices), with the paths, labels and column names beside it in `FILE.json`,
//! since an NPY array holds numbers only.

use super::ApplyError;
use npyz::WriterBuilder;
use serde_json::json;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use vaelab_models::latent::LatentModel;
use vaelab_nn::FeatShape;

/// What a code holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeKind {
    /// An autoencoder's z.
    Plain,
    /// μ and log σ² (flat or spatial).
    Gaussian,
    /// Codebook indices, one per position.
    Quantized { codes: usize },
}

/// The columns of a run's codes.
#[derive(Clone, Debug, PartialEq)]
pub struct CodeLayout {
    pub kind: CodeKind,
    /// Element names without the prefix: `3`, `c1_y0_x2`, `y0_x2`.
    elements: Vec<String>,
}

fn element_names(shape: FeatShape) -> Vec<String> {
    match shape {
        FeatShape::Flat(n) => (0..n).map(|i| i.to_string()).collect(),
        FeatShape::Image(c, h, w) => {
            (0..c).flat_map(|c| (0..h).flat_map(move |y| (0..w).map(move |x| format!("c{c}_y{y}_x{x}")))).collect()
        }
    }
}

impl CodeLayout {
    pub fn of(latent: &LatentModel) -> CodeLayout {
        let shape = latent.code_shape();
        match latent {
            LatentModel::Identity(_) => CodeLayout { kind: CodeKind::Plain, elements: element_names(shape) },
            LatentModel::Gaussian(_) | LatentModel::Spatial(_) => {
                CodeLayout { kind: CodeKind::Gaussian, elements: element_names(shape) }
            }
            LatentModel::Quantized(q) => {
                let FeatShape::Image(_, h, w) = q.shape else { unreachable!("a quantized code is an image") };
                let elements = (0..h).flat_map(|y| (0..w).map(move |x| format!("y{y}_x{x}"))).collect();
                CodeLayout { kind: CodeKind::Quantized { codes: q.codes }, elements }
            }
        }
    }

    /// The prefix of the columns `decode` reads.
    pub fn prefix(&self) -> &'static str {
        match self.kind {
            CodeKind::Plain => "z",
            CodeKind::Gaussian => "mu",
            CodeKind::Quantized { .. } => "code",
        }
    }

    /// Values per image that `decode` reads.
    pub fn len(&self) -> usize {
        self.elements.len()
    }

    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// The columns `decode` reads, in order.
    pub fn decode_columns(&self) -> Vec<String> {
        self.elements.iter().map(|e| format!("{}_{e}", self.prefix())).collect()
    }

    /// Every code column `encode` writes, in order (μ then log σ² for the Gaussian kinds).
    pub fn columns(&self) -> Vec<String> {
        let mut cols = self.decode_columns();
        if self.kind == CodeKind::Gaussian {
            cols.extend(self.elements.iter().map(|e| format!("logvar_{e}")));
        }
        cols
    }

    /// "10 values mu_0 … mu_9 (Gaussian μ)", for messages.
    pub fn describe(&self) -> String {
        let cols = self.decode_columns();
        let what = match self.kind {
            CodeKind::Plain => "an autoencoder's z".to_string(),
            CodeKind::Gaussian => "Gaussian μ; log σ² columns may follow and are not needed".to_string(),
            CodeKind::Quantized { codes } => format!("codebook indices 0 … {}", codes - 1),
        };
        format!("{} values {} … {} ({what})", cols.len(), cols[0], cols[cols.len() - 1])
    }
}

/// One image's row of a code file.
#[derive(Clone, Debug, PartialEq)]
pub struct CodeRow {
    pub path: String,
    /// Label or factor columns (name, value).
    pub labels: Vec<(String, f64)>,
    /// μ, z or codebook vectors' indices as numbers.
    pub values: Vec<f64>,
    /// log σ² (Gaussian kinds; empty otherwise).
    pub logvar: Vec<f32>,
}

/// The formats a code file may have, from its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeFormat {
    Csv,
    Jsonl,
    Npy,
}

impl CodeFormat {
    pub fn of(path: &Path) -> Result<CodeFormat, ApplyError> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("csv") => Ok(CodeFormat::Csv),
            Some("jsonl") => Ok(CodeFormat::Jsonl),
            Some("npy") => Ok(CodeFormat::Npy),
            _ => Err(ApplyError::Input(format!("{}: a code file ends in .csv, .jsonl or .npy", path.display()))),
        }
    }
}

/// The NPY side file naming the array's rows and columns: `codes.npy` → `codes.npy.json`.
pub fn npy_sidecar(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".json");
    PathBuf::from(name)
}

/// Formats a float as the shortest text that reads back to the same `f32`.
fn float(v: f32) -> String {
    format!("{v}")
}

enum Sink {
    Csv(Box<csv::Writer<BufWriter<std::fs::File>>>),
    Jsonl(BufWriter<std::fs::File>),
    NpyF32(npyz::NpyWriter<f32, BufWriter<std::fs::File>>),
    NpyI64(npyz::NpyWriter<i64, BufWriter<std::fs::File>>),
}

/// Writes code rows as they come (memory does not grow with the rows, except NPY's side file).
pub struct CodeWriter {
    path: PathBuf,
    layout: CodeLayout,
    labels: Vec<String>,
    sink: Sink,
    rows: Vec<serde_json::Value>,
}

impl CodeWriter {
    /// A writer for `path` (its extension picks the format), with label columns `labels`.
    pub fn create(path: &Path, layout: &CodeLayout, labels: &[String]) -> Result<CodeWriter, ApplyError> {
        let format = CodeFormat::of(path)?;
        let file = std::fs::File::create(path).map_err(ApplyError::write(path))?;
        let out = BufWriter::new(file);
        let columns = layout.columns();
        let sink = match format {
            CodeFormat::Csv => {
                let mut w = csv::Writer::from_writer(out);
                let header: Vec<&str> = ["path"]
                    .into_iter()
                    .chain(labels.iter().map(String::as_str))
                    .chain(columns.iter().map(String::as_str))
                    .collect();
                w.write_record(&header).map_err(|e| ApplyError::Write(path.to_path_buf(), e.to_string()))?;
                Sink::Csv(Box::new(w))
            }
            CodeFormat::Jsonl => Sink::Jsonl(out),
            CodeFormat::Npy => {
                let cols = columns.len() as u64;
                let io = |e: std::io::Error| ApplyError::Write(path.to_path_buf(), e.to_string());
                match layout.kind {
                    CodeKind::Quantized { .. } => {
                        Sink::NpyI64(npyz::WriteOptions::new().default_dtype().writer(out).begin_2d(cols).map_err(io)?)
                    }
                    _ => Sink::NpyF32(npyz::WriteOptions::new().default_dtype().writer(out).begin_2d(cols).map_err(io)?),
                }
            }
        };
        Ok(CodeWriter { path: path.to_path_buf(), layout: layout.clone(), labels: labels.to_vec(), sink, rows: vec![] })
    }

    pub fn write(&mut self, row: &CodeRow) -> Result<(), ApplyError> {
        let err = |e: String| ApplyError::Write(self.path.clone(), e);
        let label = |name: &str| row.labels.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        match &mut self.sink {
            Sink::Csv(w) => {
                let mut record = vec![row.path.clone()];
                record.extend(self.labels.iter().map(|n| label(n).map(|v| v.to_string()).unwrap_or_default()));
                record.extend(row.values.iter().map(|v| value_text(self.layout.kind, *v)));
                record.extend(row.logvar.iter().map(|v| float(*v)));
                w.write_record(&record).map_err(|e| err(e.to_string()))?;
            }
            Sink::Jsonl(w) => {
                // Written field by field so that `path` comes first, as in the CSV.
                let text = |v: serde_json::Value| v.to_string();
                let mut line = format!("{{\"path\":{}", text(json!(row.path)));
                for n in &self.labels {
                    line += &format!(",{}:{}", text(json!(n)), text(label_value(label(n))));
                }
                let values: Vec<serde_json::Value> = match self.layout.kind {
                    CodeKind::Quantized { .. } => row.values.iter().map(|v| json!(*v as u64)).collect(),
                    _ => row.values.iter().map(|v| json!(*v as f32)).collect(),
                };
                line += &format!(",\"{}\":{}", self.layout.prefix(), text(values.into()));
                if self.layout.kind == CodeKind::Gaussian {
                    line += &format!(",\"logvar\":{}", text(json!(row.logvar)));
                }
                writeln!(w, "{line}}}").map_err(|e| err(e.to_string()))?;
            }
            Sink::NpyF32(w) => {
                let values = row.values.iter().map(|v| *v as f32).chain(row.logvar.iter().copied());
                w.extend(values).map_err(|e| err(e.to_string()))?;
            }
            Sink::NpyI64(w) => {
                w.extend(row.values.iter().map(|v| *v as i64)).map_err(|e| err(e.to_string()))?;
            }
        }
        if matches!(self.sink, Sink::NpyF32(_) | Sink::NpyI64(_)) {
            let mut obj = serde_json::Map::new();
            obj.insert("path".into(), json!(row.path));
            for n in &self.labels {
                obj.insert(n.clone(), label_value(label(n)));
            }
            self.rows.push(obj.into());
        }
        Ok(())
    }

    /// Flushes the file (and writes NPY's side file).
    pub fn finish(self) -> Result<(), ApplyError> {
        let npy = matches!(self.sink, Sink::NpyF32(_) | Sink::NpyI64(_));
        let err = |e: String| ApplyError::Write(self.path.clone(), e);
        match self.sink {
            Sink::Csv(mut w) => w.flush().map_err(|e| err(e.to_string()))?,
            Sink::Jsonl(mut w) => w.flush().map_err(|e| err(e.to_string()))?,
            Sink::NpyF32(w) => w.finish().map_err(|e| err(e.to_string()))?,
            Sink::NpyI64(w) => w.finish().map_err(|e| err(e.to_string()))?,
        }
        if npy {
            let side = npy_sidecar(&self.path);
            let text = serde_json::to_string_pretty(&json!({"columns": self.layout.columns(), "rows": self.rows}))
                .expect("JSON values serialize");
            std::fs::write(&side, text).map_err(ApplyError::write(&side))?;
        }
        Ok(())
    }
}

/// A label as JSON: a whole number as an integer.
fn label_value(v: Option<f64>) -> serde_json::Value {
    match v {
        Some(v) if v.fract() == 0.0 && v.abs() < 9e15 => json!(v as i64),
        Some(v) => json!(v),
        None => serde_json::Value::Null,
    }
}

fn value_text(kind: CodeKind, v: f64) -> String {
    match kind {
        CodeKind::Quantized { .. } => (v as u64).to_string(),
        _ => float(v as f32),
    }
}

/// One code read for decoding: a name for the output (from the file's path column) and its values.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodeRow {
    pub path: Option<String>,
    /// μ / z, or codebook indices as whole numbers.
    pub values: Vec<f64>,
}

/// Reads every code of `path` for a run with `layout`, checking each row's length and type.
pub fn read_codes(path: &Path, layout: &CodeLayout) -> Result<Vec<DecodeRow>, ApplyError> {
    let rows = match CodeFormat::of(path)? {
        CodeFormat::Csv => read_csv(path, layout)?,
        CodeFormat::Jsonl => read_jsonl(path, layout)?,
        CodeFormat::Npy => read_npy(path, layout)?,
    };
    if rows.is_empty() {
        return Err(ApplyError::Input(format!("{}: no codes in this file", path.display())));
    }
    Ok(rows)
}

/// Checks one value of row `row` (1-based) against the layout: finite, and for a quantized code a
/// codebook index.
fn check_value(path: &Path, row: usize, column: &str, v: f64, layout: &CodeLayout) -> Result<f64, ApplyError> {
    let bad = |why: String| ApplyError::Input(format!("{}, row {row}, {column}: {why}", path.display()));
    match layout.kind {
        CodeKind::Quantized { codes } if v.fract() != 0.0 || v < 0.0 || v >= codes as f64 => {
            Err(bad(format!("{v} is not a codebook index of this run (0 … {})", codes - 1)))
        }
        _ if !v.is_finite() => Err(bad(format!("{v} is not a finite number"))),
        _ => Ok(v),
    }
}

fn read_csv(path: &Path, layout: &CodeLayout) -> Result<Vec<DecodeRow>, ApplyError> {
    let err = |e: csv::Error| ApplyError::Input(format!("{}: {e}", path.display()));
    let mut reader = csv::Reader::from_path(path).map_err(err)?;
    let header = reader.headers().map_err(err)?.clone();
    let wanted = layout.decode_columns();
    let mut at = Vec::with_capacity(wanted.len());
    for name in &wanted {
        match header.iter().position(|h| h == name) {
            Some(i) => at.push(i),
            None => {
                return Err(ApplyError::Input(format!(
                    "{}: the header has no column `{name}`; this run's codes are {}",
                    path.display(),
                    layout.describe()
                )))
            }
        }
    }
    let extra =
        header.iter().filter(|h| h.starts_with(&format!("{}_", layout.prefix())) && !wanted.iter().any(|w| w == h)).count();
    if extra > 0 {
        return Err(ApplyError::Input(format!(
            "{}: {} more `{}_…` columns than this run's codes have; they are {}",
            path.display(),
            extra,
            layout.prefix(),
            layout.describe()
        )));
    }
    let path_col = header.iter().position(|h| h == "path");
    let mut rows = Vec::new();
    for (r, record) in reader.records().enumerate() {
        let record = record.map_err(err)?;
        let row = r + 1;
        let mut values = Vec::with_capacity(at.len());
        for (&i, name) in at.iter().zip(&wanted) {
            let text = record.get(i).unwrap_or("").trim();
            // Floats are parsed as f32 directly: through f64 a value could round twice.
            let parsed = match layout.kind {
                CodeKind::Quantized { .. } => text.parse::<f64>().ok(),
                _ => text.parse::<f32>().ok().map(f64::from),
            };
            let v = parsed
                .ok_or_else(|| ApplyError::Input(format!("{}, row {row}, {name}: `{text}` is not a number", path.display())))?;
            values.push(check_value(path, row, name, v, layout)?);
        }
        rows.push(DecodeRow { path: path_col.and_then(|i| record.get(i)).map(str::to_string), values });
    }
    Ok(rows)
}

fn read_jsonl(path: &Path, layout: &CodeLayout) -> Result<Vec<DecodeRow>, ApplyError> {
    let file = std::fs::File::open(path).map_err(|e| ApplyError::Input(format!("{}: {e}", path.display())))?;
    let key = layout.prefix();
    let mut rows = Vec::new();
    for (r, line) in std::io::BufReader::new(file).lines().enumerate() {
        let row = r + 1;
        let line = line.map_err(|e| ApplyError::Input(format!("{}, line {row}: {e}", path.display())))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: String| ApplyError::Input(format!("{}, row {row}: {why}", path.display()));
        let obj: serde_json::Value = serde_json::from_str(&line).map_err(|e| bad(format!("not a JSON object: {e}")))?;
        let Some(array) = obj.get(key).and_then(|v| v.as_array()) else {
            return Err(bad(format!("no `{key}` array; this run's codes are {}", layout.describe())));
        };
        if array.len() != layout.len() {
            return Err(bad(format!("`{key}` has {} values; this run's codes are {}", array.len(), layout.describe())));
        }
        let mut values = Vec::with_capacity(array.len());
        for (i, v) in array.iter().enumerate() {
            let column = format!("{key}[{i}]");
            let Some(v) = v.as_f64() else { return Err(bad(format!("{column} = {v} is not a number"))) };
            values.push(check_value(path, row, &column, v, layout)?);
        }
        rows.push(DecodeRow { path: obj.get("path").and_then(|p| p.as_str()).map(str::to_string), values });
    }
    Ok(rows)
}

fn read_npy(path: &Path, layout: &CodeLayout) -> Result<Vec<DecodeRow>, ApplyError> {
    let bad = |why: String| ApplyError::Input(format!("{}: {why}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let npy = npyz::NpyFile::new(&bytes[..]).map_err(|e| bad(format!("not an NPY file: {e}")))?;
    let shape = npy.shape().to_vec();
    let len = layout.len() as u64;
    let gaussian = layout.kind == CodeKind::Gaussian;
    let expected = if gaussian { format!("(N, {len}) or (N, {}) with μ then log σ²", 2 * len) } else { format!("(N, {len})") };
    let shape_text = format!("({})", shape.iter().map(u64::to_string).collect::<Vec<_>>().join(", "));
    let cols = match shape[..] {
        [_, c] if c == len || (gaussian && c == 2 * len) => c as usize,
        _ => return Err(bad(format!("an array of shape {shape_text}; this run's codes need {expected}: {}", layout.describe()))),
    };
    if npy.order() != npyz::Order::C {
        return Err(bad("a Fortran-ordered array; write it in C order (numpy's default)".into()));
    }
    let dtype = npy.dtype().descr().replace('\'', "");
    let quantized = matches!(layout.kind, CodeKind::Quantized { .. });
    let flat: Vec<f64> = match (dtype.trim_start_matches(['<', '>', '|', '=']), quantized) {
        ("f4", false) => npy.into_vec::<f32>().map_err(|e| bad(e.to_string()))?.into_iter().map(f64::from).collect(),
        ("f8", false) => npy.into_vec::<f64>().map_err(|e| bad(e.to_string()))?,
        ("i8", true) => npy.into_vec::<i64>().map_err(|e| bad(e.to_string()))?.into_iter().map(|v| v as f64).collect(),
        ("i4", true) => npy.into_vec::<i32>().map_err(|e| bad(e.to_string()))?.into_iter().map(f64::from).collect(),
        (other, _) => {
            let want = if quantized { "int64 or int32 codebook indices" } else { "float32 or float64" };
            let numpy = match other {
                "f2" => "float16",
                "f4" => "float32",
                "f8" => "float64",
                "i1" => "int8",
                "i2" => "int16",
                "i4" => "int32",
                "i8" => "int64",
                "u1" => "uint8",
                "u2" => "uint16",
                "u4" => "uint32",
                "u8" => "uint64",
                "b1" => "bool",
                other => other,
            };
            return Err(bad(format!("values of dtype {numpy}; this run's codes need {want}")));
        }
    };
    let names: Vec<Option<String>> = match std::fs::read_to_string(npy_sidecar(path)) {
        Ok(text) => {
            let side: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| ApplyError::Input(format!("{}: {e}", npy_sidecar(path).display())))?;
            side["rows"]
                .as_array()
                .map(|r| r.iter().map(|o| o["path"].as_str().map(str::to_string)).collect())
                .unwrap_or_default()
        }
        Err(_) => vec![],
    };
    let columns = layout.decode_columns();
    let mut rows = Vec::new();
    for (r, chunk) in flat.chunks(cols).enumerate() {
        let values = chunk[..layout.len()]
            .iter()
            .zip(&columns)
            .map(|(v, c)| check_value(path, r + 1, c, *v, layout))
            .collect::<Result<Vec<f64>, _>>()?;
        rows.push(DecodeRow { path: names.get(r).cloned().flatten(), values });
    }
    Ok(rows)
}
