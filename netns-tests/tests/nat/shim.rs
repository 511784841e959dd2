//! Shims behind a NAT: the AP path, then route optimization.

use homeaddr_netns_tests::natlab::daemons::DaemonOptions;
use homeaddr_netns_tests::natlab::{Family, LabConfig, NatOptions, Site};
use homeaddr_netns_tests::testapp;

use crate::common::heavy_test;
use crate::support::*;

/// The bulk transfer of the shim tests: 50 MB.
const BULK: u64 = 50 << 20;

/// A shim behind a NAT serving `hoa`, a public member: the first
/// connection through the AP, its client address from the AP's pool and
/// `behind_nat`, then route optimization (shim `bindings`, member binding
/// `bound`), a 50 MB download direct with its SHA-256
/// intact while the AP's shim counters stay flat.
fn shim_behind_nat(tag: &str, hoa: Family) {
    let config = match hoa {
        Family::V4 => LabConfig::full(),
        Family::V6 => LabConfig::pools(),
    };
    let mut lab = lab(tag, config);
    let n = lab.add_nat(NatOptions::default()).expect("NAT");
    lab.add_member(1, Site::Public, &DaemonOptions::default())
        .unwrap_or_else(|e| panic!("{e:#}"));
    lab.add_shim("s", Site::Nat(n), hoa, &DaemonOptions::default())
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (shim, member) = (lab.client("s"), lab.member(1));
    let service = lab.service(hoa);
    assert_eq!(who(&lab, shim, service), "member1");
    let took = await_ro(&lab, shim, member, 1);
    let status = shim.status();
    println!(
        "{hoa:?} home address, shim behind nat{n}: route optimization after {} ms; \
         shim client address {}, behind_nat {}, bindings {}; member rows {:?}",
        took.as_millis(),
        status["client_address"],
        status["behind_nat"],
        status["bindings"],
        member_rows(member)
    );
    let pool = match hoa {
        Family::V6 => "fd00:4841:cccc:",
        Family::V4 => "::ffff:100.127.",
    };
    assert!(
        status["client_address"]
            .as_str()
            .is_some_and(|c| c.starts_with(pool)),
        "the shim's client address is not from the AP's pool ({pool}...)\n{}",
        lab.dump()
    );
    assert_eq!(status["behind_nat"], serde_json::Value::Bool(true));
    let before = ap_shim_packets(&lab);
    let get = get_intact(&lab, shim, service, BULK);
    let after = ap_shim_packets(&lab);
    println!(
        "50 MB: sha256 {} (intact), {:.1} Mbit/s, path {}, AP shim packets +{} (of about {} data packets)",
        get.sha256,
        get.mbit_per_s(),
        shim_path(shim),
        after - before,
        BULK / 1400
    );
    assert_eq!(get.sha256, testapp::expected_sha256(BULK));
    assert_eq!(shim_path(shim), "direct", "{}", lab.dump());
    assert!(
        after - before < 200,
        "the AP's shim counters grew by {} during a route-optimized transfer\n{}",
        after - before,
        lab.dump()
    );
}

/// (b) IPv4 underlay behind a NAT, IPv6 home address.
#[test]
fn shim_behind_nat_route_optimizes_50mb_intact() {
    let Some(_guard) = heavy_test() else { return };
    shim_behind_nat("natshim", Family::V6);
}

/// (g) The IPv4 home address with a shim behind a NAT.
#[test]
fn shim_behind_nat_with_the_ipv4_home_address() {
    let Some(_guard) = heavy_test() else { return };
    shim_behind_nat("natshim4", Family::V4);
}
