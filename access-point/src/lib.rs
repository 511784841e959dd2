//! homeaddr access point daemon (home agent)
