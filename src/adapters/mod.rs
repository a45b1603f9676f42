//! Adapters for other shapes of work: the run registry of the task manager adapter, and
//! `import-legacy` from the older Python queue.

pub mod legacy;
pub mod runs;
