//! A task to enqueue, its defaults and the checks it passes before anything is written.

use crate::model::after::{check_after, OnFailure};
use crate::model::error::{Error, Result};
use crate::model::retry::RetryOverrides;
use crate::model::time::{check_duration, check_time, Least};
use serde_json::{Map, Value};

pub const MIN_PRIORITY: i64 = 1;

pub const MAX_PRIORITY: i64 = 1000;

pub const DEFAULT_PRIORITY: i64 = 100;

pub const DEFAULT_MAX_ATTEMPTS: i64 = 5;

/// The most attempts a task may be given.
pub const MAX_ATTEMPTS: i64 = 1_000_000;

const MAX_NAME_LEN: usize = 200;

const MAX_KEY_LEN: usize = 1000;

#[derive(Debug, Clone)]
pub struct NewTask {
    pub task_type: String,
    /// Serialised JSON.
    pub payload: String,
    pub queue: String,
    pub priority: i64,
    pub delay_ms: Option<i64>,
    /// Absolute ms since epoch; exclusive with `delay_ms`.
    pub run_after: Option<i64>,
    pub max_attempts: i64,
    pub idempotency_key: Option<String>,
    pub requires: Option<Map<String, Value>>,
    pub timeout_ms: Option<i64>,
    pub retry: Option<RetryOverrides>,
    /// Tasks this one waits on (`model::dependencies`); empty for most.
    pub after: Vec<i64>,
    pub on_dependency_failure: OnFailure,
}

impl NewTask {
    pub fn new(task_type: impl Into<String>, payload: impl Into<String>) -> NewTask {
        NewTask {
            task_type: task_type.into(),
            payload: payload.into(),
            queue: "default".into(),
            priority: DEFAULT_PRIORITY,
            delay_ms: None,
            run_after: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            idempotency_key: None,
            requires: None,
            timeout_ms: None,
            retry: None,
            after: Vec::new(),
            on_dependency_failure: OnFailure::Cancel,
        }
    }

    pub fn validate(&self, max_payload_bytes: usize) -> Result<()> {
        check_name("type", &self.task_type)?;
        check_name("queue", &self.queue)?;
        if self.payload.len() > max_payload_bytes {
            return Err(Error::invalid(format!(
                "payload is {} bytes as JSON, above the limit of {max_payload_bytes} bytes: store large data elsewhere \
                 and pass a reference, or raise max_payload_bytes when opening the Queue",
                self.payload.len()
            )));
        }
        check_priority(self.priority)?;
        if let Some(d) = self.delay_ms {
            check_duration("delay", d, Least::Zero)?;
        }
        if let Some(at) = self.run_after {
            check_time("run_after", at)?;
        }
        if self.delay_ms.is_some() && self.run_after.is_some() {
            return Err(Error::invalid("give either delay or run_after, not both"));
        }
        if self.max_attempts < 1 {
            return Err(Error::invalid(format!(
                "max_attempts must be at least 1, got {}",
                self.max_attempts
            )));
        }
        if self.max_attempts > MAX_ATTEMPTS {
            return Err(Error::invalid(format!(
                "max_attempts must be between 1 and {MAX_ATTEMPTS}, got {}",
                self.max_attempts
            )));
        }
        if let Some(k) = &self.idempotency_key {
            if k.is_empty() || k.len() > MAX_KEY_LEN {
                return Err(Error::invalid(format!(
                    "idempotency_key must be a non-empty string of at most {MAX_KEY_LEN} characters"
                )));
            }
        }
        if let Some(t) = self.timeout_ms {
            check_duration("timeout", t, Least::Positive)?;
        }
        if let Some(r) = &self.retry {
            r.validate()?;
        }
        check_after(&self.after)
    }
}

fn check_name(what: &str, s: &str) -> Result<()> {
    if s.trim().is_empty() {
        return Err(Error::invalid(format!("{what} must be a non-empty string")));
    }
    if s.len() > MAX_NAME_LEN {
        return Err(Error::invalid(format!(
            "{what} must be at most {MAX_NAME_LEN} characters, got {}",
            s.len()
        )));
    }
    Ok(())
}

pub fn check_priority(p: i64) -> Result<()> {
    if !(MIN_PRIORITY..=MAX_PRIORITY).contains(&p) {
        return Err(Error::invalid(format!(
            "priority must be between {MIN_PRIORITY} (most urgent) and {MAX_PRIORITY}, got {p}"
        )));
    }
    Ok(())
}

/// The lane key of a `requires` object: its canonical text, object keys sorted at every level,
/// so two tasks with the same requirements share a lane whatever order their keys were given in
/// ('' when it requires nothing). Numbers keep the exact text they were written with (parsing is
/// exact, `float_roundtrip`), so requirements are compared as the user wrote them.
pub fn requires_text(r: &Option<Map<String, Value>>) -> String {
    match r {
        Some(m) if !m.is_empty() => sorted(&Value::Object(m.clone())).to_string(),
        _ => String::new(),
    }
}

/// `requires` as the task stores it and shows it back: the keys in the order given.
pub fn requires_as_given(r: &Option<Map<String, Value>>) -> Option<String> {
    r.as_ref()
        .filter(|m| !m.is_empty())
        .map(|m| Value::Object(m.clone()).to_string())
}

fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}
