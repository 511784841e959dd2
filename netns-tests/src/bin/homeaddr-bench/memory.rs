//! Memory per flow entry: the AP's affinity table (measured on 200,000
//! entries) and the shim's flow table (computed from the entry size).

use std::net::Ipv6Addr;
use std::time::Instant;

use homeaddr_netns_tests::service::HOME_ADDRESS;
use homeaddr_proto::affinity::{AffinityConfig, AffinityTable};
use homeaddr_proto::wire::inner::FlowKey;

fn affinity_bytes_per_entry() -> f64 {
    let mut table = AffinityTable::new(AffinityConfig::default());
    let now = Instant::now();
    let n = 200_000u32;
    for i in 0..n {
        let key = FlowKey {
            src: Ipv6Addr::from(0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + u128::from(i)),
            dst: HOME_ADDRESS,
            proto: 6,
            src_port: (i % 60000) as u16,
            dst_port: 443,
        };
        table.lookup_or_insert(now, &key, None, 100, || {
            Some(homeaddr_proto::wire::MemberId(1))
        });
    }
    table.memory_bytes() as f64 / f64::from(n)
}

fn shim_flow_bytes_per_entry() -> f64 {
    // A std HashMap entry: key + value, one control byte, at the 7/8 load factor.
    let entry = std::mem::size_of::<(FlowKey, homeaddr_proto::engine::shim::FlowEntry)>() as f64;
    (entry + 1.0) * 8.0 / 7.0
}

/// The memory table.
pub fn print_memory() {
    println!();
    println!("| memory                 | bytes/entry | target |");
    println!("|------------------------|------------:|-------:|");
    println!(
        "| AP affinity entry      | {:>11.1} |  <= 128 |",
        affinity_bytes_per_entry()
    );
    println!(
        "| shim flow entry        | {:>11.1} |  <= 128 |",
        shim_flow_bytes_per_entry()
    );
}
