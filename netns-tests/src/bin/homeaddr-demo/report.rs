//! Checks: each step reports what it verified; the summary prints them all.

use std::time::Duration;

use crate::output::table;

pub(crate) struct Check {
    pub(crate) what: String,
    pub(crate) ok: bool,
    pub(crate) numbers: String,
}

#[derive(Default)]
pub(crate) struct Report {
    pub(crate) checks: Vec<Check>,
    pub(crate) not_run: Vec<&'static str>,
}

impl Report {
    pub(crate) fn check(&mut self, what: &str, ok: bool, numbers: impl Into<String>) -> bool {
        let numbers = numbers.into();
        println!(
            "    [{}] {what}{}",
            if ok { "ok" } else { "FAILED" },
            if numbers.is_empty() {
                String::new()
            } else {
                format!(": {numbers}")
            }
        );
        self.checks.push(Check {
            what: what.to_string(),
            ok,
            numbers,
        });
        ok
    }

    pub(crate) fn all_ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    pub(crate) fn print(&self) {
        let mut rows = vec![vec!["check".to_string(), "result".into(), "numbers".into()]];
        for c in &self.checks {
            rows.push(vec![
                c.what.clone(),
                if c.ok { "PASS" } else { "FAIL" }.into(),
                c.numbers.clone(),
            ]);
        }
        for s in &self.not_run {
            rows.push(vec![s.to_string(), "NOT RUN".into(), String::new()]);
        }
        table(2, &rows);
    }
}

/// The median, the lower one for an even count (there are often just two
/// round trips through the access point: the handshake, which carries the
/// flow's one-off setup, and the WHO); 0 when empty.
pub(crate) fn low_median(samples: &[u64]) -> u64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    sorted
        .get(sorted.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(0)
}

/// Whether a measured round trip matches the emulated path: not faster than
/// the WAN allows, and not much slower (processing, scheduling).
pub(crate) fn rtt_matches(measured: Duration, expected: Duration) -> bool {
    measured + Duration::from_micros(500) >= expected
        && measured <= expected + expected / 4 + Duration::from_millis(10)
}
