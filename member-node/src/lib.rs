//! homeaddr member node daemon (mobile node)
