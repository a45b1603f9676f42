//! Conversions at the Python boundary: JSON payloads, times, and argument checks that turn a
//! wrong type into `InvalidArgument` naming the argument.

use super::errors::invalid;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDateTime, PyDelta, PyDeltaAccess, PyFloat, PyInt, PyString, PyTzInfo};
use serde_json::{Map, Value};

fn type_name(obj: &Bound<PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Serialise a Python value to JSON text, or say which argument could not be.
pub fn to_json(obj: &Bound<PyAny>, what: &str) -> PyResult<String> {
    let v = to_value(obj, what)?;
    Ok(v.to_string())
}

pub fn to_value(obj: &Bound<PyAny>, what: &str) -> PyResult<Value> {
    if let Ok(f) = obj.cast::<PyFloat>() {
        if !f.value().is_finite() {
            return Err(invalid(format!(
                "{what} is not JSON-serialisable: {} is not a finite number",
                f.value()
            )));
        }
    }
    pythonize::depythonize::<Value>(obj).map_err(|e| {
        invalid(format!(
            "{what} is not JSON-serialisable ({e}); pass dicts, lists, strings, numbers, booleans and None only"
        ))
    })
    .and_then(|v| {
        if has_non_finite(&v) {
            Err(invalid(format!("{what} is not JSON-serialisable: it holds NaN or infinity")))
        } else {
            Ok(v)
        }
    })
}

fn has_non_finite(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.iter().any(has_non_finite),
        Value::Object(o) => o.values().any(has_non_finite),
        _ => false,
    }
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

/// Parse stored JSON text back into Python objects (the C-accelerated json module is fastest).
pub fn from_json(py: Python<'_>, text: &str) -> PyResult<Py<PyAny>> {
    let loads = JSON_LOADS.get_or_try_init(py, || {
        py.import("json")?.getattr("loads").map(Bound::unbind)
    })?;
    Ok(loads.bind(py).call1((text,))?.unbind())
}

pub fn datetime(py: Python<'_>, ms: i64) -> PyResult<Py<PyAny>> {
    let utc = PyTzInfo::utc(py)?;
    Ok(
        PyDateTime::from_timestamp(py, ms as f64 / 1000.0, Some(&utc))?
            .into_any()
            .unbind(),
    )
}

pub fn opt_datetime(py: Python<'_>, ms: Option<i64>) -> PyResult<Option<Py<PyAny>>> {
    ms.map(|m| datetime(py, m)).transpose()
}

/// An integer argument; floats, bools and strings are refused with the argument's name.
pub fn int_arg(obj: &Bound<PyAny>, what: &str) -> PyResult<i64> {
    if obj.is_instance_of::<PyBool>() || !obj.is_instance_of::<PyInt>() {
        return Err(invalid(format!(
            "{what} must be an integer, got {}",
            type_name(obj)
        )));
    }
    obj.extract::<i64>()
        .map_err(|_| invalid(format!("{what} is out of range: {obj}")))
}

pub fn str_arg(obj: &Bound<PyAny>, what: &str) -> PyResult<String> {
    match obj.cast::<PyString>() {
        Ok(s) => {
            let s = s.to_str()?.to_string();
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

/// Seconds as int, float or timedelta -> milliseconds.
pub fn seconds_ms(obj: &Bound<PyAny>, what: &str) -> PyResult<i64> {
    let secs: f64 = if let Ok(d) = obj.cast::<PyDelta>() {
        d.get_days() as f64 * 86400.0 + d.get_seconds() as f64 + d.get_microseconds() as f64 / 1e6
    } else if (obj.is_instance_of::<PyInt>() || obj.is_instance_of::<PyFloat>())
        && !obj.is_instance_of::<PyBool>()
    {
        obj.extract::<f64>()?
    } else {
        return Err(invalid(format!(
            "{what} must be a number of seconds or a timedelta, got {}",
            type_name(obj)
        )));
    };
    if !secs.is_finite() {
        return Err(invalid(format!("{what} must be finite, got {secs}")));
    }
    Ok(crate::time::secs_to_ms(secs))
}

/// A point in time: a timezone-aware datetime, or seconds since the epoch (UTC).
pub fn instant_ms(obj: &Bound<PyAny>, what: &str) -> PyResult<i64> {
    if let Ok(dt) = obj.cast::<PyDateTime>() {
        if dt.getattr("tzinfo")?.is_none() {
            return Err(invalid(format!(
                "{what} must be timezone-aware (a naive datetime is ambiguous): use datetime.now(timezone.utc) or .replace(tzinfo=timezone.utc)"
            )));
        }
        let ts: f64 = dt.call_method0("timestamp")?.extract()?;
        return Ok(crate::time::secs_to_ms(ts));
    }
    if (obj.is_instance_of::<PyInt>() || obj.is_instance_of::<PyFloat>())
        && !obj.is_instance_of::<PyBool>()
    {
        let ts: f64 = obj.extract()?;
        if ts.is_finite() {
            return Ok(crate::time::secs_to_ms(ts));
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
