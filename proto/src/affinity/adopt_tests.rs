//! [`AffinityTable::adopt`]: flows members report pin, re-pin and refresh.

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use super::*;

const HOA: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x4841, 0, 0, 0, 0, 0, 1);

fn key(i: u16) -> FlowKey {
    FlowKey {
        src: Ipv6Addr::new(0xfd00, 0x4841, 2, 0, 0, 0, 0, i),
        dst: HOA,
        proto: 6,
        src_port: 40_000 + i,
        dst_port: 443,
    }
}

const ACK: Option<TcpFlags> = Some(TcpFlags {
    syn: false,
    ack: true,
    fin: false,
    rst: false,
});

#[test]
fn adopt_inserts_a_flow_later_packets_follow() {
    let t0 = Instant::now();
    let mut table = AffinityTable::new(AffinityConfig::default());
    let k = key(1);
    assert_eq!(
        table.adopt(t0, &k, MemberId(4), FlowState::Open),
        Adoption::Inserted
    );
    let e = table.get(&k).unwrap();
    assert_eq!(
        (e.member, e.state(), e.last_seen, e.packets),
        (MemberId(4), FlowState::Open, t0, 0)
    );
    assert_eq!(table.flows_of(MemberId(4)), 1);
    // A packet of the flow goes to the reporter without asking Maglev.
    let got = table.lookup_or_insert(t0, &k, ACK, 100, || panic!("must not choose"));
    assert_eq!(got, Some(MemberId(4)));
    assert_eq!(table.get(&k).unwrap().packets, 1);
}

#[test]
fn adopt_re_pins_a_flow_of_another_member() {
    let t0 = Instant::now();
    let mut table = AffinityTable::new(AffinityConfig::default());
    let k = key(2);
    table.lookup_or_insert(t0, &k, ACK, 100, || Some(MemberId(1)));
    let t1 = t0 + Duration::from_secs(5);
    assert_eq!(
        table.adopt(t1, &k, MemberId(2), FlowState::Closing),
        Adoption::Moved { from: MemberId(1) }
    );
    let e = table.get(&k).unwrap();
    assert_eq!(
        (e.member, e.state(), e.last_seen, e.packets),
        (MemberId(2), FlowState::Closing, t1, 1),
        "the counters stay, the member and state are the report's"
    );
    assert_eq!(
        (table.flows_of(MemberId(1)), table.flows_of(MemberId(2))),
        (0, 1)
    );
    assert_eq!(table.len(), 1);
    // Removing the old member leaves the flow alone.
    assert_eq!(table.remove_member(MemberId(1)), 0);
    assert_eq!(table.remove_member(MemberId(2)), 1);
    assert!(table.is_empty());
}

#[test]
fn adopt_refreshes_a_flow_of_the_reporter() {
    let cfg = AffinityConfig::default();
    let t0 = Instant::now();
    let mut table = AffinityTable::new(cfg);
    let k = FlowKey {
        proto: 17,
        ..key(3)
    };
    table.adopt(t0, &k, MemberId(3), FlowState::Open);
    // Refreshed before the UDP idle timeout: alive for another one.
    let t1 = t0 + cfg.udp_idle - Duration::from_secs(1);
    assert_eq!(
        table.adopt(t1, &k, MemberId(3), FlowState::Open),
        Adoption::Refreshed
    );
    // A late report does not move last_seen back.
    assert_eq!(
        table.adopt(t0, &k, MemberId(3), FlowState::Open),
        Adoption::Refreshed
    );
    assert_eq!(table.get(&k).unwrap().last_seen, t1);
    assert_eq!(table.expire(t0 + cfg.udp_idle + SWEEP_PERIOD), 0);
    assert_eq!(table.flows_of(MemberId(3)), 1);
    assert_eq!(table.expire(t1 + cfg.udp_idle + SWEEP_PERIOD), 1);
}

#[test]
fn adopt_treats_a_timed_out_flow_as_new_and_respects_the_limit() {
    let cfg = AffinityConfig {
        max_entries: 2,
        ..AffinityConfig::default()
    };
    let t0 = Instant::now();
    let mut table = AffinityTable::new(cfg);
    table.adopt(t0, &key(1), MemberId(1), FlowState::Opening);
    table.adopt(t0, &key(2), MemberId(1), FlowState::Open);
    assert_eq!(
        table.adopt(t0, &key(3), MemberId(2), FlowState::Open),
        Adoption::Full
    );
    assert!(table.get(&key(3)).is_none());
    assert_eq!(table.overflows(), 0, "overflows count packets only");
    // A known flow is still re-pinned in a full table.
    assert_eq!(
        table.adopt(t0, &key(2), MemberId(2), FlowState::Open),
        Adoption::Moved { from: MemberId(1) }
    );
    // The opening flow timed out (not swept): a report inserts it anew.
    let late = t0 + cfg.tcp_closing_idle;
    assert_eq!(
        table.adopt(late, &key(1), MemberId(5), FlowState::Open),
        Adoption::Inserted
    );
    assert_eq!(
        (table.flows_of(MemberId(1)), table.flows_of(MemberId(5))),
        (0, 1)
    );
    assert_eq!(table.len(), 2);
}
