//! Role engines.
