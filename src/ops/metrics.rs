//! `metrics()`: what an operator or a dashboard reads, in one call.

use crate::engine::queue::Queue;
use crate::model::error::Result;
use crate::model::metrics::Metrics;
use crate::model::observe::DEFAULT_WINDOW_MS;

impl Queue {
    /// Everything an operator watches, with rates and percentiles over the last `window_ms`.
    /// The keys are listed in docs/architecture.md ("Observability").
    pub fn metrics_over(&self, window_ms: i64) -> Result<Metrics> {
        self.driver.metrics(window_ms)
    }

    /// `metrics_over` the default window.
    pub fn metrics(&self) -> Result<Metrics> {
        self.metrics_over(DEFAULT_WINDOW_MS)
    }
}
