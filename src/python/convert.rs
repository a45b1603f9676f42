//! Conversions at the Python boundary: JSON payloads, times, and argument checks that turn a
//! wrong type into `InvalidArgument` naming the argument.

use super::errors::invalid;
use crate::model::time::Least;
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyDateTime, PyDelta, PyDeltaAccess, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
    PyTzInfo,
};
use serde_json::{Map, Value};

fn type_name(obj: &Bound<PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Serialise a Python value to JSON text, or say which argument could not be. Written straight
/// from the Python objects (no intermediate `serde_json::Value`), so dict keys keep their order,
/// as with `json.dumps`.
pub fn to_json(obj: &Bound<PyAny>, what: &str) -> PyResult<String> {
    let mut out = Vec::with_capacity(64);
    write_json(obj, 0, &mut out).map_err(|e| {
        let mut at: String = e.path.iter().rev().take(10).map(String::as_str).collect();
        if e.path.len() > 10 {
            at.push_str("[...]");
        }
        invalid(format!(
            "{what}{at} is not JSON-serialisable: {}; pass dicts, lists, strings, numbers, booleans and None only",
            e.why
        ))
    })?;
    Ok(String::from_utf8(out).expect("JSON written from str and numbers is UTF-8"))
}

/// The same check as `to_json`, as a `serde_json::Value` (for the small objects the core reads:
/// requirements, capabilities, retry settings).
pub fn to_value(obj: &Bound<PyAny>, what: &str) -> PyResult<Value> {
    let text = to_json(obj, what)?;
    serde_json::from_str(&text).map_err(|e| invalid(format!("{what}: {e}")))
}

/// Nesting deeper than this is refused (it also stops a list that contains itself).
const MAX_JSON_DEPTH: usize = 200;

/// Why a value is not JSON, and where: `path` holds `[1]`, `['a']` from the innermost out.
struct NotJson {
    path: Vec<String>,
    why: String,
}

impl From<PyErr> for NotJson {
    fn from(e: PyErr) -> Self {
        NotJson {
            path: Vec::new(),
            why: e.to_string(),
        }
    }
}

fn not_json(why: String) -> NotJson {
    NotJson {
        path: Vec::new(),
        why,
    }
}

/// A JSON string (quoted and escaped) onto `out`.
fn write_str(s: &str, out: &mut Vec<u8>) {
    serde_json::to_writer(out, s).expect("writing to a Vec cannot fail");
}

/// What `json.dumps` accepts, minus its lossy corners: None, bool, int, finite float, str, list,
/// tuple and dict with string keys. Sets, NaN/infinity, bytes and other objects are refused
/// (never stored changed), and the error says where they were found.
fn write_json(obj: &Bound<PyAny>, depth: usize, out: &mut Vec<u8>) -> Result<(), NotJson> {
    if depth > MAX_JSON_DEPTH {
        return Err(not_json(format!(
            "it is nested more than {MAX_JSON_DEPTH} levels deep (or contains itself)"
        )));
    }
    if obj.is_none() {
        out.extend_from_slice(b"null");
        return Ok(());
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        out.extend_from_slice(if b.is_true() { b"true" } else { b"false" });
        return Ok(());
    }
    if obj.is_instance_of::<PyInt>() {
        // Through serde_json's integer writer: no String per number.
        if let Ok(i) = obj.extract::<i64>() {
            serde_json::to_writer(&mut *out, &i).expect("writing to a Vec cannot fail");
            return Ok(());
        }
        if let Ok(u) = obj.extract::<u64>() {
            serde_json::to_writer(&mut *out, &u).expect("writing to a Vec cannot fail");
            return Ok(());
        }
        return Err(not_json(format!(
            "the integer {obj} does not fit in 64 bits"
        )));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        write_str(s.to_str()?, out);
        return Ok(());
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        out.push(b'[');
        for (i, item) in obj.try_iter()?.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json(&item?, depth + 1, out).map_err(|mut e| {
                e.path.push(format!("[{i}]"));
                e
            })?;
        }
        out.push(b']');
        return Ok(());
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        out.push(b'{');
        for (n, (k, v)) in d.iter().enumerate() {
            let Ok(key) = k.cast::<PyString>() else {
                return Err(not_json(format!(
                    "its keys must be strings, got the {} key {k}",
                    type_name(&k)
                )));
            };
            if n > 0 {
                out.push(b',');
            }
            write_str(key.to_str()?, out);
            out.push(b':');
            write_json(&v, depth + 1, out).map_err(|mut e| {
                e.path.push(format!(
                    "[{}]",
                    k.repr().map(|r| r.to_string()).unwrap_or_default()
                ));
                e
            })?;
        }
        out.push(b'}');
        return Ok(());
    }
    // Last of the accepted types: unlike the others, telling a float from a non-float that is not
    // exactly `float` walks the type's bases, which every dict and list of a payload paid here.
    if let Ok(f) = obj.cast::<PyFloat>() {
        let v = f.value();
        if !v.is_finite() {
            return Err(not_json(format!("{v} is not a finite number")));
        }
        serde_json::to_writer(out, &v).expect("writing to a Vec cannot fail");
        return Ok(());
    }
    Err(not_json(format!(
        "type {} is not supported",
        type_name(obj)
    )))
}

pub fn to_object(obj: &Bound<PyAny>, what: &str) -> PyResult<Map<String, Value>> {
    match to_value(obj, what)? {
        Value::Object(m) => Ok(m),
        _ => Err(invalid(format!(
            "{what} must be a dict, got {}",
            type_name(obj)
        ))),
    }
}

static JSON_LOADS: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();
/// `json`'s C scanner (`json.scanner.c_make_scanner`), or None where the interpreter lacks it.
static JSON_SCAN: pyo3::sync::PyOnceLock<Option<Py<PyAny>>> = pyo3::sync::PyOnceLock::new();

/// Parse stored JSON text back into Python objects.
///
/// The text was written by us (compact, no surrounding whitespace), so the json module's C
/// scanner is called directly: `json.loads` runs the same scanner behind two Python-level calls
/// and a whitespace regex, several times slower for a small payload (figures:
/// benches/README.md, "Figures behind the code's comments"). Anything the scanner does not consume
/// whole (text from elsewhere) goes through `json.loads`, for its result or its error.
pub fn from_json(py: Python<'_>, text: &str) -> PyResult<Py<PyAny>> {
    let scan = JSON_SCAN.get_or_try_init(py, || -> PyResult<Option<Py<PyAny>>> {
        let make = py.import("json.scanner")?.getattr("c_make_scanner")?;
        if make.is_none() {
            return Ok(None);
        }
        let decoder = py.import("json.decoder")?.getattr("JSONDecoder")?.call0()?;
        Ok(Some(make.call1((decoder,))?.unbind()))
    })?;
    if let Some(scan) = scan {
        if let Ok(found) = scan.bind(py).call1((text, 0)) {
            let (value, end): (Bound<PyAny>, usize) = found.extract()?;
            // `end` counts characters; the text's length in bytes equals it for ASCII text, and
            // for other text the character count is compared.
            if end == text.len() || end == text.chars().count() {
                return Ok(value.unbind());
            }
        }
    }
    let loads = JSON_LOADS.get_or_try_init(py, || {
        py.import("json")?.getattr("loads").map(Bound::unbind)
    })?;
    Ok(loads.bind(py).call1((text,))?.unbind())
}

/// A stored time as an aware UTC `datetime`, built from its civil date and time (exact, and
/// valid on every platform, where `fromtimestamp` refuses times before 1970 on Windows). A time
/// outside the years 1..9999 (a damaged row) reads as the nearest of `datetime.min` and
/// `datetime.max`: see `PyTask::damaged`.
pub fn datetime(py: Python<'_>, ms: i64) -> PyResult<Py<PyAny>> {
    let (ms, _) = crate::model::time::clamp_stored(ms);
    let t = chrono::DateTime::from_timestamp_millis(ms)
        .expect("a time within years 1..9999 is representable")
        .naive_utc();
    use chrono::{Datelike, Timelike};
    let utc = PyTzInfo::utc(py)?;
    Ok(PyDateTime::new(
        py,
        t.year(),
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
        t.nanosecond() / 1000,
        Some(&utc),
    )?
    .into_any()
    .unbind())
}

pub fn opt_datetime(py: Python<'_>, ms: Option<i64>) -> PyResult<Option<Py<PyAny>>> {
    ms.map(|m| datetime(py, m)).transpose()
}

/// The value of an int argument, or None when it does not fit in 64 bits; floats, bools and
/// other types are refused with the argument's name.
fn int_value(obj: &Bound<PyAny>, what: &str) -> PyResult<Option<i64>> {
    if obj.is_instance_of::<PyBool>() || !obj.is_instance_of::<PyInt>() {
        return Err(invalid(format!(
            "{what} must be an integer, got {}",
            type_name(obj)
        )));
    }
    Ok(obj.extract::<i64>().ok())
}

/// An integer argument; floats, bools and strings are refused with the argument's name, and so
/// is an integer that does not fit in 64 bits.
pub fn int_arg(obj: &Bound<PyAny>, what: &str) -> PyResult<i64> {
    int_value(obj, what)?.ok_or_else(|| {
        invalid(format!(
            "{what} is out of range: {obj} (it must lie between {} and {})",
            i64::MIN,
            i64::MAX
        ))
    })
}

/// An integer argument within `lo..=hi`, refused outside with "{what} must be between lo and
/// hi, got {value}" (the core repeats the same check with the same message).
pub fn int_in(obj: &Bound<PyAny>, what: &str, lo: i64, hi: i64) -> PyResult<i64> {
    match int_value(obj, what)? {
        Some(v) if (lo..=hi).contains(&v) => Ok(v),
        _ => Err(invalid(format!(
            "{what} must be between {lo} and {hi}, got {obj}"
        ))),
    }
}

/// An optional integer argument (None when absent or None).
pub fn opt_int(obj: Option<&Bound<PyAny>>, what: &str) -> PyResult<Option<i64>> {
    obj.filter(|o| !o.is_none())
        .map(|o| int_arg(o, what))
        .transpose()
}

/// A number argument (int or float, not bool) as a float; an int too large for a float is
/// refused. NaN and infinities pass: the caller's range check names them.
pub fn float_arg(obj: &Bound<PyAny>, what: &str) -> PyResult<f64> {
    if obj.is_instance_of::<PyBool>()
        || !(obj.is_instance_of::<PyInt>() || obj.is_instance_of::<PyFloat>())
    {
        return Err(invalid(format!(
            "{what} must be a number, got {}",
            type_name(obj)
        )));
    }
    obj.extract::<f64>()
        .map_err(|_| invalid(format!("{what} is out of range: {obj}")))
}

/// An optional number argument.
pub fn opt_float(obj: Option<&Bound<PyAny>>, what: &str) -> PyResult<Option<f64>> {
    obj.filter(|o| !o.is_none())
        .map(|o| float_arg(o, what))
        .transpose()
}

/// A task_id argument: an int (not a bool), or `InvalidArgument` saying what came instead, as
/// for every other argument of the binding (pyo3's own `i64` raises a bare TypeError).
#[derive(Clone, Copy)]
pub struct TaskId(pub i64);

impl FromPyObject<'_, '_> for TaskId {
    type Error = PyErr;

    fn extract(obj: pyo3::Borrowed<'_, '_, PyAny>) -> PyResult<Self> {
        let obj = obj.to_owned();
        int_value(&obj, "task_id")?
            .map(TaskId)
            .ok_or_else(|| invalid(format!("task_id is out of range: {obj}")))
    }
}

/// The text of a str argument, which may be empty; a lone surrogate (which no UTF-8 file can
/// hold) is refused naming the argument.
pub fn text_arg(obj: &Bound<PyAny>, what: &str) -> PyResult<String> {
    let s = obj
        .cast::<PyString>()
        .map_err(|_| invalid(format!("{what} must be a string, got {}", type_name(obj))))?;
    utf8(s, what)
}

fn utf8(s: &Bound<PyString>, what: &str) -> PyResult<String> {
    utf8_ref(s, what).map(str::to_string)
}

/// The text of `s`, borrowed (no copy: enqueue_many reads three dict keys per item), or the
/// refusal of a lone surrogate, which UTF-8 cannot hold.
pub fn utf8_ref<'a>(s: &'a Bound<PyString>, what: &str) -> PyResult<&'a str> {
    match s.to_str() {
        Ok(t) => Ok(t),
        Err(_) => Err(invalid(format!(
            "{what} contains a lone surrogate (a code point in U+D800..U+DFFF), which cannot be stored: \
             pass valid Unicode text (a surrogate pair is one character only when both halves are given)"
        ))),
    }
}

/// An optional str argument.
pub fn opt_text(obj: Option<&Bound<PyAny>>, what: &str) -> PyResult<Option<String>> {
    obj.filter(|o| !o.is_none())
        .map(|o| text_arg(o, what))
        .transpose()
}

pub fn str_arg(obj: &Bound<PyAny>, what: &str) -> PyResult<String> {
    match obj.cast::<PyString>() {
        Ok(s) => {
            let s = utf8(s, what)?;
            if s.trim().is_empty() {
                Err(invalid(format!("{what} must be a non-empty string")))
            } else {
                Ok(s)
            }
        }
        Err(_) => Err(invalid(format!(
            "{what} must be a non-empty string, got {}",
            type_name(obj)
        ))),
    }
}

/// A duration as given (int or float seconds, or a timedelta) in milliseconds, refused when it
/// is not a number, not finite, or further from zero than `MAX_DURATION_MS` (the message gives
/// the range, for `least`, and the value as written). The lower bound is each caller's (or the
/// core's) check, with the message each argument has always had.
pub fn duration_arg(obj: &Bound<PyAny>, what: &str, least: Least) -> PyResult<i64> {
    let out_of_range = || {
        invalid(crate::model::time::duration_message(
            what,
            least,
            obj.str().map(|s| s.to_string()).unwrap_or_default(),
        ))
    };
    let max = crate::model::time::MAX_DURATION_MS as i128;
    let ms: i128 = if let Ok(d) = obj.cast::<PyDelta>() {
        let us = d.get_days() as i128 * 86_400_000_000
            + d.get_seconds() as i128 * 1_000_000
            + d.get_microseconds() as i128;
        round_us_to_ms(us)
    } else if obj.is_instance_of::<PyInt>() && !obj.is_instance_of::<PyBool>() {
        match obj.extract::<i64>() {
            Ok(secs) => secs as i128 * 1000,
            Err(_) => return Err(out_of_range()),
        }
    } else if obj.is_instance_of::<PyFloat>() {
        let secs: f64 = obj.extract()?;
        if !secs.is_finite() {
            return Err(invalid(format!("{what} must be finite, got {secs}")));
        }
        if secs.abs() > (max / 1000 + 1) as f64 {
            return Err(out_of_range());
        }
        crate::model::time::secs_to_ms(secs) as i128
    } else {
        return Err(invalid(format!(
            "{what} must be a number of seconds or a timedelta, got {}",
            type_name(obj)
        )));
    };
    if ms.abs() > max {
        return Err(out_of_range());
    }
    Ok(ms as i64)
}

fn round_us_to_ms(us: i128) -> i128 {
    if us >= 0 {
        (us + 500) / 1000
    } else {
        -((-us + 500) / 1000)
    }
}

/// A point in time: a timezone-aware datetime, or seconds since the epoch (UTC), refused outside
/// the years 1..9999 UTC (`time::MIN_TIME_MS..=MAX_TIME_MS`) with the value as written.
pub fn instant_ms(obj: &Bound<PyAny>, what: &str) -> PyResult<i64> {
    let py = obj.py();
    let as_written = || obj.str().map(|s| s.to_string()).unwrap_or_default();
    let in_range = |ms: i128, shown: String| -> PyResult<i64> {
        if (crate::model::time::MIN_TIME_MS as i128..=crate::model::time::MAX_TIME_MS as i128)
            .contains(&ms)
        {
            Ok(ms as i64)
        } else {
            Err(invalid(crate::model::time::time_message(what, shown)))
        }
    };
    if let Ok(dt) = obj.cast::<PyDateTime>() {
        if dt.getattr("tzinfo")?.is_none() {
            return Err(invalid(format!(
                "{what} must be timezone-aware (a naive datetime is ambiguous): use datetime.now(timezone.utc) or .replace(tzinfo=timezone.utc)"
            )));
        }
        // Exact, in integers: the difference from the epoch is a timedelta for any aware
        // datetime (a float timestamp would round, and fromtimestamp has platform limits).
        let utc = PyTzInfo::utc(py)?;
        let epoch = PyDateTime::new(py, 1970, 1, 1, 0, 0, 0, 0, Some(&utc))?;
        let since = obj
            .call_method1("__sub__", (epoch,))
            .map_err(|e| invalid(format!("{what}: {e}")))?;
        let d = since
            .cast::<PyDelta>()
            .map_err(|_| invalid(format!("{what} must be a timezone-aware datetime")))?;
        let us = d.get_days() as i128 * 86_400_000_000
            + d.get_seconds() as i128 * 1_000_000
            + d.get_microseconds() as i128;
        // Floor: the last microsecond of 9999 (datetime.max) is still in 9999.
        let ms = us.div_euclid(1000);
        let shown = format!(
            "{}, which is {} in UTC",
            dt.call_method0("isoformat")
                .map(|s| s.to_string())
                .unwrap_or_else(|_| as_written()),
            crate::model::time::iso(ms.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
        );
        return in_range(ms, shown);
    }
    if obj.is_instance_of::<PyInt>() && !obj.is_instance_of::<PyBool>() {
        return match obj.extract::<i64>() {
            Ok(secs) => in_range(
                secs as i128 * 1000,
                format!("{} seconds since the epoch", as_written()),
            ),
            Err(_) => Err(invalid(crate::model::time::time_message(
                what,
                format!("{} seconds since the epoch", as_written()),
            ))),
        };
    }
    if obj.is_instance_of::<PyFloat>() {
        let ts: f64 = obj.extract()?;
        if ts.is_finite() && ts.abs() < 1e15 {
            return in_range(
                crate::model::time::secs_to_ms(ts) as i128,
                format!("{} seconds since the epoch", as_written()),
            );
        }
        if ts.is_finite() {
            return Err(invalid(crate::model::time::time_message(
                what,
                format!("{} seconds since the epoch", as_written()),
            )));
        }
    }
    Err(invalid(format!(
        "{what} must be a timezone-aware datetime or seconds since the epoch, got {}",
        type_name(obj)
    )))
}

/// A list of names (or one name) -> Vec<String>.
pub fn names_arg(obj: &Bound<PyAny>, what: &str) -> PyResult<Vec<String>> {
    if obj.is_instance_of::<PyString>() {
        return Ok(vec![str_arg(obj, what)?]);
    }
    let mut out = Vec::new();
    for item in obj.try_iter().map_err(|_| {
        invalid(format!(
            "{what} must be a list of strings, got {}",
            type_name(obj)
        ))
    })? {
        out.push(str_arg(&item?, what)?);
    }
    if out.is_empty() {
        return Err(invalid(format!(
            "{what} must not be empty: pass None for no restriction"
        )));
    }
    Ok(out)
}
