//! Several access points at scale (issue 10): 10 AP engines, 1,000 member
//! engines, one million legacy flows behind an ECMP router; table digests,
//! memory per flow, flows lost when an AP dies (with and without a member
//! joining first), convergence times. See `homeaddr_sim::scale`.
//!
//! `cargo bench -p homeaddr-sim --bench multi_ap` prints one table (about
//! a minute and 1.2 GiB on a 2-core VM; `cargo test --all-targets` runs it
//! at the test's small size). Sizes from the environment: `MULTI_AP_APS`, `MULTI_AP_MEMBERS`,
//! `MULTI_AP_FLOWS`, `MULTI_AP_RATE`, `MULTI_AP_RTT_MS`,
//! `MULTI_AP_LATENCY_US`, `MULTI_AP_IDLE_MS`, `MULTI_AP_SEED`.

use std::process::ExitCode;

use homeaddr_sim::scale::{self, ScaleConfig};

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`: the full size. Run otherwise (`cargo
    // test --all-targets`), the small size of the test, as a smoke run.
    let defaults = if std::env::args().any(|a| a == "--bench") {
        ScaleConfig::full()
    } else {
        ScaleConfig::small()
    };
    let config = match defaults.with_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("multi_ap: {e}");
            return ExitCode::from(2);
        }
    };
    eprintln!("multi_ap: {config:?}");
    match scale::run(config) {
        Ok(report) => {
            println!();
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("multi_ap: {e}");
            ExitCode::FAILURE
        }
    }
}
