//! The sync loop, the Parquet and NDJSON encoders and the local-directory sink.

use std::fmt;
use std::io::Write as _;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use parquet::basic::Compression;
use parquet::data_type::{
    BoolType, ByteArray, ByteArrayType, FixedLenByteArray, FixedLenByteArrayType, Int32Type,
    Int64Type,
};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::{SerializedColumnWriter, SerializedFileWriter};
use parquet::schema::parser::parse_message_type;
use routero_core::schedule::JobError;
use tokio::io::AsyncWriteExt as _;

use super::{
    Column, Dataset, Exported, Get, Scan, Sink, SinkError, SinkObject, SyncRun, SyncStart,
    SyncedRows, WarehouseError, WarehouseSource, int, scaled_cost,
};

/// A file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileFormat {
    /// Apache Parquet, Snappy-compressed, one row group per page of rows.
    Parquet,
    /// Newline-delimited JSON, one object per row.
    Ndjson,
}

impl FileFormat {
    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Parquet => "parquet",
            FileFormat::Ndjson => "ndjson",
        }
    }
}

/// The objects a run writes to, by dataset and format.
pub fn object_path(run: &SyncRun, dataset: Dataset, format: FileFormat) -> String {
    format!(
        "{}/{}/date={}/hour={:02}/run-{:010}.{}",
        run.sink,
        dataset,
        run.hour.date_naive(),
        run.hour.hour(),
        run.run,
        format.extension()
    )
}

/// The manifest of a run: `{sink}/_runs/run-{run:010}.json`, written after every
/// file of the run and before the run is marked done. Load a run's files once its
/// manifest exists; until then a rerun may still rewrite them.
pub fn manifest_path(run: &SyncRun) -> String {
    format!("{}/_runs/run-{:010}.json", run.sink, run.run)
}

/// What a manifest holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct RunManifest {
    #[serde(flatten)]
    run: SyncRun,
    rows: SyncedRows,
    objects: Vec<String>,
}

/// What one run exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// The run.
    pub run: SyncRun,
    /// Whether it was a crashed run finished now.
    pub resumed: bool,
    /// Its rows.
    pub rows: SyncedRows,
    /// Its data files, by path.
    pub objects: Vec<String>,
    /// Its manifest, written after the files.
    pub manifest: String,
}

/// What a call to [`WarehouseSync::sync`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// The runs exported, oldest first: unfinished ones, then the hour's.
    pub runs: Vec<RunReport>,
    /// The hour's run, when it was done before this call.
    pub already_done: Option<SyncRun>,
    /// Another exporter held the sink: this call did nothing.
    pub busy: bool,
}

/// The hourly warehouse sync of one sink. See the [module docs](super).
#[derive(Debug)]
pub struct WarehouseSync<S: ?Sized, K: ?Sized> {
    source: Arc<S>,
    sink: Arc<K>,
    name: String,
    job_name: String,
    formats: Vec<FileFormat>,
    page_rows: usize,
}

impl<S: WarehouseSource + ?Sized, K: Sink + ?Sized> WarehouseSync<S, K> {
    /// A sync from `source` to `sink`, both formats, pages of 65,536 rows. `name`
    /// keys the watermark in the store and leads every object path: 1 to 64 of
    /// `a-z`, `0-9`, `-` and `_`.
    pub fn new(source: Arc<S>, sink: Arc<K>, name: &str) -> Result<Self, WarehouseError> {
        let valid = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid {
            return Err(WarehouseError::SinkName(name.to_owned()));
        }
        Ok(WarehouseSync {
            source,
            sink,
            name: name.to_owned(),
            job_name: format!("warehouse-sync/{name}"),
            formats: vec![FileFormat::Parquet, FileFormat::Ndjson],
            page_rows: 65_536,
        })
    }

    /// Writes only these formats (at least one).
    pub fn with_formats(mut self, formats: &[FileFormat]) -> Self {
        if !formats.is_empty() {
            self.formats.clear();
            for format in formats {
                if !self.formats.contains(format) {
                    self.formats.push(*format);
                }
            }
        }
        self
    }

    /// Rows read and encoded at a time (a Parquet row group each); at least 1.
    pub fn with_page_rows(mut self, rows: usize) -> Self {
        self.page_rows = rows.max(1);
        self
    }

    /// Exports the UTC hour of `now`: finishes an unfinished run first, then plans
    /// and exports the hour's run, or does nothing when it is done already or when
    /// another exporter holds the sink ([`SyncReport::busy`]). On an error the run
    /// being exported stays planned; calling `sync` again finishes it.
    pub async fn sync(&self, now: DateTime<Utc>) -> Result<SyncReport, WarehouseError> {
        let hour = now
            .with_minute(0)
            .and_then(|t| t.with_second(0))
            .and_then(|t| t.with_nanosecond(0))
            .unwrap_or(now);
        let Some(lock) = self.source.lock_sink(&self.name).await? else {
            return Ok(SyncReport {
                busy: true,
                ..SyncReport::default()
            });
        };
        let report = self.sync_held(hour).await;
        lock.release().await;
        report
    }

    /// [`WarehouseSync::sync`] with the sink held.
    async fn sync_held(&self, hour: DateTime<Utc>) -> Result<SyncReport, WarehouseError> {
        let mut report = SyncReport::default();
        loop {
            match self.source.begin_sync(&self.name, hour).await? {
                SyncStart::Resume(run) => {
                    if report.runs.last().is_some_and(|r| r.run.run == run.run) {
                        return Err(WarehouseError::Plan(format!(
                            "run {} of {} is still unfinished after it was finished",
                            run.run, run.sink
                        )));
                    }
                    report.runs.push(self.export(run, true).await?);
                }
                SyncStart::Planned(run) => {
                    report.runs.push(self.export(run, false).await?);
                    return Ok(report);
                }
                SyncStart::Done(run) => {
                    if report.runs.last().is_none_or(|r| r.run.run != run.run) {
                        report.already_done = Some(run);
                    }
                    return Ok(report);
                }
            }
        }
    }

    async fn export(&self, run: SyncRun, resumed: bool) -> Result<RunReport, WarehouseError> {
        if run.sink != self.name || run.to_version < run.from_version {
            return Err(WarehouseError::Plan(format!(
                "the store planned run {} of {} over [{}, {}) for sink {}",
                run.run, run.sink, run.from_version, run.to_version, self.name
            )));
        }
        let manifest = manifest_path(&run);
        if resumed {
            // A manifest is written after every file of its run: the crash came
            // later, and the files, which loaders may have taken, stay as they are.
            let written = self
                .sink
                .read(&manifest)
                .await
                .map_err(sink_error(&manifest))?;
            if let Some(bytes) = written {
                let written: RunManifest = serde_json::from_slice(&bytes)
                    .map_err(|e| WarehouseError::Read(format!("{manifest}: {e}")))?;
                if written.run != run {
                    return Err(WarehouseError::Plan(format!(
                        "{manifest} describes another run than the store's run {}",
                        run.run
                    )));
                }
                self.source.finish_sync(&run, written.rows).await?;
                return Ok(RunReport {
                    run,
                    resumed,
                    rows: written.rows,
                    objects: written.objects,
                    manifest,
                });
            }
        }
        let mut objects = Vec::new();
        let rollups = self
            .export_dataset(&run, self.source.scan_rollups(&run).await?, &mut objects)
            .await?;
        let log = self
            .export_dataset(&run, self.source.scan_log(&run).await?, &mut objects)
            .await?;
        let rows = SyncedRows { rollups, log };
        let body = RunManifest {
            run: run.clone(),
            rows,
            objects: objects.clone(),
        };
        let mut object = self
            .sink
            .create(&manifest)
            .await
            .map_err(sink_error(&manifest))?;
        let json = serde_json::to_vec_pretty(&body)
            .map_err(|e| WarehouseError::Read(format!("{manifest}: {e}")))?;
        object
            .write(Bytes::from(json))
            .await
            .map_err(sink_error(&manifest))?;
        object.commit().await.map_err(sink_error(&manifest))?;
        self.source.finish_sync(&run, rows).await?;
        tracing::info!(
            sink = %run.sink, run = run.run, hour = %run.hour, resumed,
            rollups, log, "warehouse sync run exported"
        );
        Ok(RunReport {
            run,
            resumed,
            rows,
            objects,
            manifest,
        })
    }

    async fn export_dataset<T: Exported>(
        &self,
        run: &SyncRun,
        mut scan: Box<dyn Scan<T> + '_>,
        objects: &mut Vec<String>,
    ) -> Result<u64, WarehouseError> {
        let mut files = Vec::with_capacity(self.formats.len());
        let mut encoders = Vec::with_capacity(self.formats.len());
        for &format in &self.formats {
            let path = object_path(run, T::DATASET, format);
            let object = self.sink.create(&path).await.map_err(sink_error(&path))?;
            files.push((path, object));
            encoders.push(Encoder::<T>::new(format)?);
        }
        // Each page is encoded off the async runtime, one blocking task per format,
        // while the next page is read: two pages in memory at most.
        let mut rows = 0u64;
        let mut page = scan.next_page(self.page_rows).await?;
        while !page.is_empty() {
            rows += u64::try_from(page.len()).unwrap_or(u64::MAX);
            let page_rows = Arc::new(page);
            let tasks: Vec<_> = encoders
                .drain(..)
                .map(|mut encoder| {
                    let page = page_rows.clone();
                    tokio::task::spawn_blocking(move || {
                        let chunk = encoder.encode(&page);
                        (encoder, chunk)
                    })
                })
                .collect();
            let next = scan.next_page(self.page_rows).await;
            let mut failed = None;
            for (task, (path, object)) in tasks.into_iter().zip(&mut files) {
                let (encoder, chunk) = task
                    .await
                    .map_err(|e| WarehouseError::Plan(format!("encoding {path}: {e}")))?;
                encoders.push(encoder);
                match chunk {
                    Ok(chunk) if failed.is_none() && !chunk.is_empty() => {
                        object.write(chunk).await.map_err(sink_error(path))?;
                    }
                    Ok(_) => {}
                    Err(e) => failed = failed.or(Some(e)),
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
            page = next?;
        }
        for ((path, mut object), encoder) in files.into_iter().zip(encoders) {
            let tail = encoder.finish()?;
            if !tail.is_empty() {
                object.write(tail).await.map_err(sink_error(&path))?;
            }
            object.commit().await.map_err(sink_error(&path))?;
            objects.push(path);
        }
        Ok(rows)
    }
}

fn sink_error(path: &str) -> impl Fn(SinkError) -> WarehouseError + '_ {
    move |source| WarehouseError::Sink {
        path: path.to_owned(),
        source,
    }
}

// ---------------------------------------------------------------------------------
// Encoders

enum Encoder<T: 'static> {
    Parquet(Box<SerializedFileWriter<Vec<u8>>>),
    /// The columns' `"name":` keys.
    Ndjson(Vec<Vec<u8>>, std::marker::PhantomData<fn(&T)>),
}

impl<T: Exported> Encoder<T> {
    fn new(format: FileFormat) -> Result<Encoder<T>, WarehouseError> {
        Ok(match format {
            FileFormat::Parquet => {
                let schema = Arc::new(parse_message_type(&parquet_schema(
                    T::DATASET,
                    T::columns(),
                ))?);
                let properties = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_created_by(format!("routero {}", env!("CARGO_PKG_VERSION")))
                    .build();
                Encoder::Parquet(Box::new(SerializedFileWriter::new(
                    Vec::new(),
                    schema,
                    Arc::new(properties),
                )?))
            }
            FileFormat::Ndjson => {
                Encoder::Ndjson(ndjson_keys(T::columns()), std::marker::PhantomData)
            }
        })
    }

    /// The bytes of `rows` ready to be written (a whole row group for Parquet).
    fn encode(&mut self, rows: &[T]) -> Result<Bytes, WarehouseError> {
        match self {
            Encoder::Parquet(writer) => {
                let mut group = writer.next_row_group()?;
                for column in T::columns() {
                    let mut out = group.next_column()?.ok_or_else(|| {
                        WarehouseError::Plan(format!("parquet schema lacks column {}", column.name))
                    })?;
                    write_parquet_column(column, rows, &mut out)?;
                    out.close()?;
                }
                group.close()?;
                writer
                    .flush()
                    .map_err(parquet::errors::ParquetError::from)?;
                // The writer counts offsets itself: handing out what it has written
                // so far keeps the file whole and the memory to one row group.
                Ok(Bytes::from(std::mem::take(writer.inner_mut())))
            }
            Encoder::Ndjson(keys, _) => {
                let mut out = Vec::with_capacity(rows.len() * 512);
                for row in rows {
                    ndjson_row(T::columns(), keys, row, &mut out)?;
                }
                Ok(Bytes::from(out))
            }
        }
    }

    /// The file's last bytes (Parquet's footer).
    fn finish(self) -> Result<Bytes, WarehouseError> {
        match self {
            Encoder::Parquet(writer) => Ok(Bytes::from(writer.into_inner()?)),
            Encoder::Ndjson(..) => Ok(Bytes::new()),
        }
    }
}

fn parquet_schema<T>(dataset: Dataset, columns: &[Column<T>]) -> String {
    let mut schema = format!("message routero_{dataset} {{\n");
    for column in columns {
        let repetition = if column.nullable {
            "optional"
        } else {
            "required"
        };
        let name = column.name;
        let field = match column.get {
            Get::Text(_) => format!("binary {name} (STRING)"),
            Get::Int(_) => format!("int64 {name}"),
            Get::Date(_) => format!("int32 {name} (DATE)"),
            Get::Timestamp(_) => format!("int64 {name} (TIMESTAMP(MICROS,true))"),
            Get::Bool(_) => format!("boolean {name}"),
            Get::Cost(_) => format!(
                "fixed_len_byte_array(16) {name} (DECIMAL(38,{}))",
                super::COST_SCALE
            ),
        };
        schema.push_str(&format!("  {repetition} {field};\n"));
    }
    schema.push('}');
    schema
}

/// A column's present values and, for a nullable column, its definition levels.
fn gather<T, V>(
    column: &Column<T>,
    rows: &[T],
    mut value: impl FnMut(&T) -> Result<Option<V>, WarehouseError>,
) -> Result<(Vec<V>, Vec<i16>), WarehouseError> {
    let mut values = Vec::with_capacity(rows.len());
    let mut levels = Vec::with_capacity(if column.nullable { rows.len() } else { 0 });
    for row in rows {
        match value(row)? {
            Some(v) => {
                values.push(v);
                if column.nullable {
                    levels.push(1);
                }
            }
            None if column.nullable => levels.push(0),
            None => return Err(WarehouseError::Missing(column.name)),
        }
    }
    Ok((values, levels))
}

fn days_since_epoch(day: NaiveDate) -> i32 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    // chrono's dates span ±262,143 years: their day numbers fit an i32.
    i32::try_from((day - epoch).num_days()).unwrap_or(i32::MAX)
}

fn write_parquet_column<T>(
    column: &Column<T>,
    rows: &[T],
    out: &mut SerializedColumnWriter<'_>,
) -> Result<(), WarehouseError> {
    let nullable = column.nullable;
    let levels = |levels| nullable.then_some(levels);
    match column.get {
        Get::Text(get) => {
            // One buffer for the column's text, each value a slice of it: no
            // allocation per value.
            let (values, defs) = {
                let mut text = Vec::new();
                let (ranges, defs) = gather(column, rows, |r| {
                    Ok(get(r).map(|s| {
                        let start = text.len();
                        text.extend_from_slice(s.as_bytes());
                        start..text.len()
                    }))
                })?;
                let text = Bytes::from(text);
                let values: Vec<ByteArray> = ranges
                    .into_iter()
                    .map(|range| ByteArray::from(text.slice(range)))
                    .collect();
                (values, defs)
            };
            out.typed::<ByteArrayType>()
                .write_batch(&values, levels(defs.as_slice()), None)?;
        }
        Get::Int(get) => {
            let (values, defs) = gather(column, rows, |r| {
                get(r).map(|v| int(v, column.name)).transpose()
            })?;
            out.typed::<Int64Type>()
                .write_batch(&values, levels(defs.as_slice()), None)?;
        }
        Get::Date(get) => {
            let (values, defs) = gather(column, rows, |r| Ok(Some(days_since_epoch(get(r)))))?;
            out.typed::<Int32Type>()
                .write_batch(&values, levels(defs.as_slice()), None)?;
        }
        Get::Timestamp(get) => {
            let (values, defs) = gather(column, rows, |r| Ok(Some(get(r).timestamp_micros())))?;
            out.typed::<Int64Type>()
                .write_batch(&values, levels(defs.as_slice()), None)?;
        }
        Get::Bool(get) => {
            let (values, defs) = gather(column, rows, |r| Ok(Some(get(r))))?;
            out.typed::<BoolType>()
                .write_batch(&values, levels(defs.as_slice()), None)?;
        }
        Get::Cost(get) => {
            let (values, defs) = gather(column, rows, |r| {
                get(r)
                    .map(|cost| {
                        scaled_cost(cost).map(|v| FixedLenByteArray::from(v.to_be_bytes().to_vec()))
                    })
                    .transpose()
            })?;
            out.typed::<FixedLenByteArrayType>().write_batch(
                &values,
                levels(defs.as_slice()),
                None,
            )?;
        }
    }
    Ok(())
}

/// Appends `text` as a JSON string: whole when nothing in it needs escaping (the
/// common case), else character by character.
fn json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let clean = text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
    if clean {
        out.extend_from_slice(text.as_bytes());
    } else {
        for c in text.chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                c if u32::from(c) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", u32::from(c));
                }
                c => {
                    let mut buffer = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
                }
            }
        }
    }
    out.push(b'"');
}

/// Appends `value` in decimal.
fn decimal_digits(out: &mut Vec<u8>, value: u64) {
    let mut buffer = [0u8; 20];
    let mut at = buffer.len();
    let mut rest = value;
    loop {
        at -= 1;
        buffer[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&buffer[at..]);
}

/// Appends `value` as exactly `width` digits (zero-padded; `value` fits).
fn padded(out: &mut Vec<u8>, value: u32, width: usize) {
    let mut buffer = [b'0'; 9];
    let mut rest = value;
    for slot in buffer[..width].iter_mut().rev() {
        *slot = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend_from_slice(&buffer[..width]);
}

/// Appends a date as `YYYY-MM-DD` (years 0 to 9999; others through chrono).
fn iso_date(out: &mut Vec<u8>, day: NaiveDate) {
    match u32::try_from(day.year()).ok().filter(|y| *y <= 9999) {
        Some(year) => {
            padded(out, year, 4);
            out.push(b'-');
            padded(out, day.month(), 2);
            out.push(b'-');
            padded(out, day.day(), 2);
        }
        None => {
            let _ = write!(out, "{day}");
        }
    }
}

/// Appends an instant as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (microseconds, as Parquet
/// keeps it).
fn iso_micros(out: &mut Vec<u8>, at: DateTime<Utc>) {
    iso_date(out, at.date_naive());
    out.push(b'T');
    padded(out, at.hour(), 2);
    out.push(b':');
    padded(out, at.minute(), 2);
    out.push(b':');
    // A leap second shows as second 59 with 1,000,000 or more microseconds; chrono
    // prints it as :60.
    let micros = at.timestamp_subsec_micros();
    let (second, micros) = if micros >= 1_000_000 {
        (at.second() + 1, micros - 1_000_000)
    } else {
        (at.second(), micros)
    };
    padded(out, second, 2);
    out.push(b'.');
    padded(out, micros, 6);
    out.push(b'Z');
}

/// `"name":` for every column, written once per encoder.
fn ndjson_keys<T>(columns: &[Column<T>]) -> Vec<Vec<u8>> {
    columns
        .iter()
        .map(|column| {
            let mut key = Vec::with_capacity(column.name.len() + 3);
            json_string(&mut key, column.name);
            key.push(b':');
            key
        })
        .collect()
}

fn ndjson_row<T>(
    columns: &[Column<T>],
    keys: &[Vec<u8>],
    row: &T,
    out: &mut Vec<u8>,
) -> Result<(), WarehouseError> {
    out.push(b'{');
    for (i, (column, key)) in columns.iter().zip(keys).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(key);
        // Writing to a Vec cannot fail.
        let present = match column.get {
            Get::Text(get) => get(row).map(|text| json_string(out, text)).is_some(),
            Get::Int(get) => match get(row) {
                Some(v) => {
                    int(v, column.name)?;
                    decimal_digits(out, v);
                    true
                }
                None => false,
            },
            Get::Date(get) => {
                out.push(b'"');
                iso_date(out, get(row));
                out.push(b'"');
                true
            }
            Get::Timestamp(get) => {
                out.push(b'"');
                iso_micros(out, get(row));
                out.push(b'"');
                true
            }
            Get::Bool(get) => {
                out.extend_from_slice(if get(row) { b"true" } else { b"false" });
                true
            }
            Get::Cost(get) => match get(row) {
                Some(cost) => {
                    // The same bound as Parquet's, so both files hold the same rows.
                    scaled_cost(cost)?;
                    let _ = write!(out, "\"{cost}\"");
                    true
                }
                None => false,
            },
        };
        if !present {
            if !column.nullable {
                return Err(WarehouseError::Missing(column.name));
            }
            out.extend_from_slice(b"null");
        }
    }
    out.extend_from_slice(b"}\n");
    Ok(())
}

// ---------------------------------------------------------------------------------
// Reading back

/// One row of an exported file: column name to value.
pub type ExportedRow = serde_json::Map<String, serde_json::Value>;

/// The rows of a Parquet file this sync wrote, in the shape its NDJSON twin has:
/// dates `YYYY-MM-DD`, instants RFC 3339 in microseconds, costs exact decimal
/// strings (trailing zeros dropped). For checks of what a sink holds.
pub fn read_parquet(file: impl Into<Bytes>) -> Result<Vec<ExportedRow>, WarehouseError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};

    let reader = SerializedFileReader::new(file.into())?;
    let mut rows = Vec::new();
    for row in reader.get_row_iter(None)? {
        rows.push(
            row?.get_column_iter()
                .map(|(name, field)| Ok((name.clone(), parquet_value(field)?)))
                .collect::<Result<ExportedRow, WarehouseError>>()?,
        );
    }
    Ok(rows)
}

/// The columns that key a rollup row.
pub const ROLLUP_KEY: [&str; 11] = [
    "org",
    "day",
    "workspace",
    "team",
    "api_key",
    "user_id",
    "customer",
    "provider",
    "model",
    "billing_mode",
    "currency",
];

/// The key of an exported rollup row: its [`ROLLUP_KEY`] cells as text, `""` for null.
pub fn rollup_key(row: &ExportedRow) -> Vec<String> {
    ROLLUP_KEY
        .iter()
        .map(|c| {
            row.get(*c)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

/// What a warehouse's `MERGE` keeps of exported rollup rows: per key, the row with
/// the highest `version`. Rows of one key and version are one state (a file loaded
/// twice); the first is kept.
pub fn newest_rollups(
    rows: impl IntoIterator<Item = ExportedRow>,
) -> std::collections::BTreeMap<Vec<String>, ExportedRow> {
    let version = |row: &ExportedRow| row.get("version").and_then(serde_json::Value::as_u64);
    let mut newest = std::collections::BTreeMap::new();
    for row in rows {
        let key = rollup_key(&row);
        let seen: Option<&ExportedRow> = newest.get(&key);
        if seen.is_none_or(|seen| version(seen) < version(&row)) {
            newest.insert(key, row);
        }
    }
    newest
}

/// The rows of an NDJSON file this sync wrote, costs with trailing zeros dropped.
pub fn read_ndjson(file: &[u8]) -> Result<Vec<ExportedRow>, WarehouseError> {
    let invalid = |e: &dyn std::fmt::Display| WarehouseError::Read(e.to_string());
    let text = std::str::from_utf8(file).map_err(|e| invalid(&e))?;
    let mut rows = Vec::new();
    for line in text.lines() {
        let mut row: ExportedRow = serde_json::from_str(line).map_err(|e| invalid(&e))?;
        if let Some(serde_json::Value::String(cost)) = row.get("cost") {
            let exact = rust_decimal::Decimal::from_str_exact(cost).map_err(|e| invalid(&e))?;
            row.insert("cost".into(), exact.normalize().to_string().into());
        }
        rows.push(row);
    }
    Ok(rows)
}

fn parquet_value(field: &parquet::record::Field) -> Result<serde_json::Value, WarehouseError> {
    use parquet::record::Field;
    use serde_json::Value;
    let invalid = |what: String| WarehouseError::Read(what);
    Ok(match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Long(n) => Value::from(*n),
        Field::Str(s) => Value::String(s.clone()),
        Field::Date(days) => {
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
            let day = epoch
                .checked_add_signed(chrono::Duration::days(i64::from(*days)))
                .ok_or_else(|| invalid(format!("date {days}")))?;
            Value::String(day.to_string())
        }
        Field::TimestampMicros(micros) => Value::String(
            DateTime::from_timestamp_micros(*micros)
                .ok_or_else(|| invalid(format!("timestamp {micros}")))?
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string(),
        ),
        Field::Decimal(decimal) => {
            let bytes: [u8; 16] = decimal
                .data()
                .try_into()
                .map_err(|_| invalid("a DECIMAL(38) that is not 16 bytes".into()))?;
            let scale = u32::try_from(decimal.scale())
                .map_err(|_| invalid(format!("decimal scale {}", decimal.scale())))?;
            let value =
                rust_decimal::Decimal::try_from_i128_with_scale(i128::from_be_bytes(bytes), scale)
                    .map_err(|e| invalid(e.to_string()))?;
            Value::String(value.normalize().to_string())
        }
        other => {
            return Err(invalid(format!(
                "a {other:?} column this sync does not write"
            )));
        }
    })
}

// ---------------------------------------------------------------------------------
// Local directory

/// A sink writing under a local directory. Each object is written to a hidden
/// temporary file beside its path, flushed to disk, and renamed into place on
/// commit, so a reader never sees half a file and a crash leaves only a temporary
/// file (`.name.*.tmp`), which the next write of the path does not reuse.
#[derive(Debug, Clone)]
pub struct LocalDir {
    root: PathBuf,
}

impl LocalDir {
    /// A sink under `root` (created on the first write).
    pub fn new(root: impl Into<PathBuf>) -> LocalDir {
        LocalDir { root: root.into() }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of an object path, and its name; only plain relative paths.
    fn resolve(&self, path: &str) -> Result<(PathBuf, String), SinkError> {
        let relative = Path::new(path);
        let plain = relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        match (relative.file_name(), plain) {
            (Some(name), true) => Ok((
                self.root.join(relative),
                name.to_string_lossy().into_owned(),
            )),
            _ => Err(SinkError::new(format!(
                "object path {path:?} is not a relative file path"
            ))),
        }
    }
}

#[async_trait]
impl Sink for LocalDir {
    async fn create(&self, path: &str) -> Result<Box<dyn SinkObject>, SinkError> {
        let (target, name) = self.resolve(path)?;
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| SinkError::with_source(format!("creating {}", dir.display()), e))?;
        let temp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
        let file = tokio::fs::File::create(&temp)
            .await
            .map_err(|e| SinkError::with_source(format!("creating {}", temp.display()), e))?;
        Ok(Box::new(LocalObject {
            file: Some(tokio::io::BufWriter::new(file)),
            temp,
            target,
            dir,
        }))
    }

    async fn read(&self, path: &str) -> Result<Option<Bytes>, SinkError> {
        let (file, _) = self.resolve(path)?;
        match tokio::fs::read(&file).await {
            Ok(bytes) => Ok(Some(Bytes::from(bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SinkError::with_source(
                format!("reading {}", file.display()),
                e,
            )),
        }
    }
}

struct LocalObject {
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    temp: PathBuf,
    target: PathBuf,
    dir: PathBuf,
}

impl LocalObject {
    fn failed<'a>(&'a self, what: &'a str) -> impl Fn(std::io::Error) -> SinkError + 'a {
        move |e| SinkError::with_source(format!("{what} {}", self.temp.display()), e)
    }
}

#[async_trait]
impl SinkObject for LocalObject {
    async fn write(&mut self, chunk: Bytes) -> Result<(), SinkError> {
        let Some(file) = self.file.as_mut() else {
            return Err(SinkError::new("write after commit"));
        };
        file.write_all(&chunk)
            .await
            .map_err(|e| SinkError::with_source(format!("writing {}", self.temp.display()), e))
    }

    async fn commit(mut self: Box<Self>) -> Result<(), SinkError> {
        let Some(mut file) = self.file.take() else {
            return Err(SinkError::new("committed twice"));
        };
        file.flush().await.map_err(self.failed("flushing"))?;
        file.get_ref()
            .sync_all()
            .await
            .map_err(self.failed("syncing"))?;
        drop(file);
        tokio::fs::rename(&self.temp, &self.target)
            .await
            .map_err(self.failed("renaming"))?;
        // The rename is durable once the directory is.
        let dir = tokio::fs::File::open(&self.dir)
            .await
            .map_err(self.failed("opening the directory of"))?;
        dir.sync_all()
            .await
            .map_err(self.failed("syncing the directory of"))?;
        self.temp = PathBuf::new();
        Ok(())
    }
}

impl Drop for LocalObject {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            // Never committed: the temporary file goes. A failure leaves a hidden
            // file no reader looks at.
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// The sync as a scheduled job (`warehouse-sync/{name}`): the period is the UTC hour
/// (`2026-12-02T15`), run once by whichever coworker holds the job's lease. A sink
/// another exporter holds fails the run, which the next tick retries.
#[async_trait]
impl<S, K> routero_core::schedule::Job for WarehouseSync<S, K>
where
    S: WarehouseSource + fmt::Debug + ?Sized,
    K: Sink + ?Sized,
{
    #[expect(clippy::misnamed_getters, reason = "the job's name, not the sink's")]
    fn name(&self) -> &str {
        &self.job_name
    }

    async fn due(&self, now: DateTime<Utc>) -> Result<Vec<String>, JobError> {
        Ok(vec![now.format("%Y-%m-%dT%H").to_string()])
    }

    async fn run(&self, _period: &str, now: DateTime<Utc>) -> Result<String, JobError> {
        let report = self
            .sync(now)
            .await
            .map_err(|e| JobError::transient(e.to_string()))?;
        if report.busy {
            return Err(JobError::transient("another exporter holds the sink"));
        }
        let mut detail = Vec::new();
        for run in &report.runs {
            tracing::info!(
                run = run.run.run, resumed = run.resumed, rollups = run.rows.rollups,
                log = run.rows.log, manifest = %run.manifest, "warehouse run exported"
            );
            detail.push(format!(
                "run {}{}: {} rollup rows, {} log rows",
                run.run.run,
                if run.resumed { " (resumed)" } else { "" },
                run.rows.rollups,
                run.rows.log
            ));
        }
        if let Some(done) = &report.already_done {
            detail.push(format!("run {} was done before", done.run));
        }
        Ok(detail.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        std::env::temp_dir().join(format!(
            "routero-localdir-{}",
            uuid::Uuid::new_v4().simple()
        ))
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            names.push(entry.unwrap().file_name().to_string_lossy().into_owned());
        }
        names.sort();
        names
    }

    #[tokio::test]
    async fn local_dir_publishes_whole_objects_only() {
        let root = scratch();
        let sink = LocalDir::new(&root);

        let mut object = sink.create("a/b/run-1.ndjson").await.unwrap();
        object.write(Bytes::from_static(b"one\n")).await.unwrap();
        object.write(Bytes::from_static(b"two\n")).await.unwrap();
        let dir = root.join("a/b");
        assert_eq!(listing(&dir).len(), 1, "only the temporary file");
        assert!(listing(&dir)[0].starts_with(".run-1.ndjson."));
        object.commit().await.unwrap();
        assert_eq!(listing(&dir), ["run-1.ndjson"]);
        assert_eq!(
            std::fs::read(dir.join("run-1.ndjson")).unwrap(),
            b"one\ntwo\n"
        );

        // A rewrite replaces the object; an abandoned one never appears.
        let mut again = sink.create("a/b/run-1.ndjson").await.unwrap();
        again.write(Bytes::from_static(b"three\n")).await.unwrap();
        again.commit().await.unwrap();
        let mut abandoned = sink.create("a/b/run-2.ndjson").await.unwrap();
        abandoned.write(Bytes::from_static(b"half")).await.unwrap();
        drop(abandoned);
        assert_eq!(listing(&dir), ["run-1.ndjson"]);
        assert_eq!(std::fs::read(dir.join("run-1.ndjson")).unwrap(), b"three\n");
        assert_eq!(
            sink.read("a/b/run-1.ndjson").await.unwrap().as_deref(),
            Some(&b"three\n"[..])
        );
        assert_eq!(sink.read("a/b/run-2.ndjson").await.unwrap(), None);

        for bad in ["../escape", "/abs/path", "a/../../b", ""] {
            assert!(sink.create(bad).await.is_err(), "{bad:?}");
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn hand_written_dates_and_instants_read_as_chrono_writes_them() {
        let mut instants: Vec<DateTime<Utc>> = [
            "1970-01-01T00:00:00Z",
            "0001-01-01T00:00:00.000001Z",
            "2026-12-31T23:59:59.999999999Z",
            "2026-02-28T12:34:56.5Z",
            "9999-12-31T23:59:59.999999Z",
        ]
        .iter()
        .map(|t| DateTime::parse_from_rfc3339(t).unwrap().to_utc())
        .collect();
        // A spread of instants over four centuries, at odd nanoseconds.
        let mut t = 1_000_000_007i64;
        for _ in 0..10_000 {
            t = t
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let seconds = (t >> 1).rem_euclid(12_000_000_000) - 6_000_000_000;
            let nanos = u32::try_from((t >> 7).rem_euclid(1_000_000_000)).unwrap();
            instants.push(DateTime::from_timestamp(seconds, nanos).unwrap());
        }
        // A leap second.
        instants.push(
            NaiveDate::from_ymd_opt(2016, 12, 31)
                .unwrap()
                .and_hms_micro_opt(23, 59, 59, 1_500_000)
                .unwrap()
                .and_utc(),
        );
        for at in instants {
            let mut ours = Vec::new();
            iso_micros(&mut ours, at);
            let chrono = at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
            assert_eq!(String::from_utf8(ours).unwrap(), chrono, "{at:?}");
            let mut day = Vec::new();
            iso_date(&mut day, at.date_naive());
            assert_eq!(String::from_utf8(day).unwrap(), at.date_naive().to_string());
        }
        for value in [0, 7, 10, 99, 1_000_000, u64::MAX] {
            let mut out = Vec::new();
            decimal_digits(&mut out, value);
            assert_eq!(String::from_utf8(out).unwrap(), value.to_string());
        }
        let mut out = Vec::new();
        json_string(&mut out, "plain, nothing to escape");
        json_string(&mut out, "quote \" back \\ tab \t bell \u{7} é");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#""plain, nothing to escape""quote \" back \\ tab \t bell \u0007 é""#
        );
    }

    #[test]
    fn both_formats_carry_nulls_escapes_and_exact_costs() {
        use crate::LogRecord;
        use routero_core::conformance::sample_event;
        use routero_core::spend::Pricing;

        let mut unpriced = sample_event("acme", 1, "0");
        unpriced.pricing = Pricing::Unpriced {
            reason: routero_core::spend::UnpricedReason::UnknownModel,
            detail: "no \"price\"\n\u{1}".to_owned(),
        };
        unpriced.usage = None;
        unpriced.attribution.who.team = None;
        // Caller text with quotes and control bytes, escaped by each format.
        unpriced.model = "no \"price\"\n\u{1}".to_owned();
        let rows = [
            LogRecord::of(&sample_event("acme", 2, "0.000000000123"), 7),
            LogRecord::of(&unpriced, 8),
        ];
        let mut parquet = Encoder::<LogRecord>::new(FileFormat::Parquet).unwrap();
        let mut file = parquet.encode(&rows[..1]).unwrap().to_vec();
        file.extend_from_slice(&parquet.encode(&rows[1..]).unwrap());
        file.extend_from_slice(&parquet.finish().unwrap());
        let mut ndjson = Encoder::<LogRecord>::new(FileFormat::Ndjson).unwrap();
        let lines = ndjson.encode(&rows).unwrap();

        let from_parquet = read_parquet(file).unwrap();
        let from_ndjson = read_ndjson(&lines).unwrap();
        assert_eq!(from_parquet, from_ndjson);
        assert_eq!(from_parquet[0]["cost"], "0.000000000123");
        assert_eq!(from_parquet[0]["version"], 7);
        assert_eq!(from_parquet[1]["cost"], serde_json::Value::Null);
        assert_eq!(from_parquet[1]["team"], serde_json::Value::Null);
        assert_eq!(from_parquet[1]["input_tokens"], serde_json::Value::Null);
        assert_eq!(from_parquet[1]["unpriced_reason"], "unknown_model");
        assert_eq!(from_parquet[1]["model"], "no \"price\"\n\u{1}");

        let too_fine = LogRecord::of(&sample_event("acme", 3, "0.0000000000001"), 9);
        for format in [FileFormat::Parquet, FileFormat::Ndjson] {
            let mut encoder = Encoder::<LogRecord>::new(format).unwrap();
            assert!(
                matches!(
                    encoder.encode(std::slice::from_ref(&too_fine)),
                    Err(WarehouseError::CostScale(_))
                ),
                "{format:?}"
            );
        }
    }
}
