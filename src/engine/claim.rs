//! Claims: a worker asks for the best due tasks of the lanes it may take from.

use crate::engine::queue::Queue;
use crate::model::claim::ClaimRequest;
use crate::model::error::Result;
use crate::model::strategy::Strategy;
use crate::model::task::TaskRow;

impl Queue {
    pub fn claim(&self, req: &ClaimRequest) -> Result<Vec<TaskRow>> {
        req.validate()?;
        Ok(self.with_timeouts(self.driver.task_get_available(req)?))
    }

    /// `EXPLAIN QUERY PLAN` of the per-lane search `claim` runs for `strategy`, as it runs it:
    /// for the lane's first rows due or not (`heads`), then, when the first is not due yet, for
    /// its first due row. Operators (and the tests) can see that each walks an index in order,
    /// with no temporary B-tree.
    pub fn explain_claim(&self, strategy: Strategy) -> Result<Vec<String>> {
        self.driver.task_explain_get_available(strategy)
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::queue::testutil::file_queue;
    use crate::model::claim::ClaimRequest;
    use crate::model::error::Error;

    #[test]
    fn bad_claim_arguments_are_refused() {
        let (_d, q) = file_queue();
        let mut req = ClaimRequest::new("w");
        req.lease_ms = 0;
        assert!(matches!(q.claim(&req), Err(Error::InvalidArgument(_))));
        let req = ClaimRequest::new(" ");
        assert!(matches!(q.claim(&req), Err(Error::InvalidArgument(_))));
    }
}
