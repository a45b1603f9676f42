//! `metrics()`: what an operator or a dashboard reads, in one call.

use crate::engine::queue::Queue;
use crate::model::error::Result;
use crate::model::metrics::Metrics;
use crate::model::time::{check_duration, Least};

impl Queue {
    /// Everything an operator watches, with rates and percentiles over the last `window_ms`
    /// (the binding passes `model::observe::DEFAULT_WINDOW_MS` when the caller gives none).
    /// The keys are listed in docs/architecture.md ("Observability").
    pub fn metrics_over(&self, window_ms: i64) -> Result<Metrics> {
        check_duration("window", window_ms, Least::Positive)?;
        let mut m = self.driver.metrics(window_ms)?;
        m.limits = self.driver.limit_list(None)?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::queue::testutil::file_queue;
    use crate::model::error::Error;

    #[test]
    fn a_window_that_is_not_a_positive_duration_is_refused() {
        let (_d, q) = file_queue();
        // Moved from the SQLite driver's metrics test with the check.
        assert!(q.metrics_over(0).is_err());
        let e = q.metrics_over(-5).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidArgument(m) if m.starts_with("window must be a positive number of seconds")),
            "{e:?}"
        );
        assert!(q.metrics_over(60_000).is_ok());
    }
}
