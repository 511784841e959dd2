//! The daemon's log filter.
//!
//! Layer: shell. Contract: [`log_filter`] turns the `--log` argument into a
//! `tracing_subscriber::EnvFilter` string that keeps the hickory crates
//! quiet: they log per query (hickory-proto a WARN line for each query with
//! a malformed EDNS option, hickory-server an INFO line for each request),
//! which lets any sender fill the log. Those queries are counted in
//! [`crate::metrics`] instead (`homeaddr_dns_malformed_queries_total`).

/// The library targets held at `error` by default.
pub const QUIET_TARGETS: [&str; 3] = ["hickory_proto", "hickory_server", "hickory_net"];

/// The filter for `--log LEVEL`: `LEVEL` for everything, `error` for
/// [`QUIET_TARGETS`]. A `LEVEL` that names any hickory target itself (say
/// `info,hickory_proto=warn`) is used as given.
pub fn log_filter(level: &str) -> String {
    if level.contains("hickory") {
        return level.to_string();
    }
    let mut filter = level.to_string();
    for target in QUIET_TARGETS {
        filter.push_str(&format!(",{target}=error"));
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hickory_is_quiet_unless_named() {
        assert_eq!(
            log_filter("info"),
            "info,hickory_proto=error,hickory_server=error,hickory_net=error"
        );
        assert_eq!(
            log_filter("debug,hickory_proto=warn"),
            "debug,hickory_proto=warn"
        );
        for level in ["warn", "trace", "homeaddr_dns=debug"] {
            tracing_subscriber::EnvFilter::try_new(log_filter(level)).expect("valid filter");
        }
    }
}
