//! Inner IPv6 and IPv4 packets: inspection, MSS clamping, Packet Too Big
//! and Fragmentation Needed never
//! panic; a TCP RST built from an inspected flow inspects to that flow,
//! reversed.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

use homeaddr_proto::wire::inner;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let addresses = inner::addresses(data);
    let info = inner::inspect(data);
    if let Ok(found) = &info {
        assert_eq!(addresses, Ok((found.flow.src, found.flow.dst)));
        assert_eq!(found.flow.reversed().reversed(), found.flow);
        if let Some(tcp) = found.tcp {
            let flow = found.flow;
            let rst = inner::tcp_reset(
                SocketAddrV6::new(flow.dst, flow.dst_port, 0, 0),
                SocketAddrV6::new(flow.src, flow.src_port, 0, 0),
                tcp.ack,
            );
            let back = inner::inspect(&rst).expect("a built reset parses");
            assert_eq!(back.flow, flow.reversed());
            let back_tcp = back.tcp.expect("a reset is TCP");
            assert!(back_tcp.flags.rst && !back_tcp.flags.ack);
            assert_eq!(back_tcp.seq, tcp.ack);
        }
    }

    let mut clamped = data.to_vec();
    if inner::clamp_tcp_mss(&mut clamped, 1220) {
        // Clamping changes nothing else the data plane keys on and is
        // idempotent.
        assert_eq!(inner::inspect(&clamped), info);
        assert!(!inner::clamp_tcp_mss(&mut clamped, 1220));
    } else {
        assert_eq!(clamped, data);
    }

    let ptb = inner::packet_too_big(data, 1280, Ipv6Addr::LOCALHOST);
    assert!(ptb.len() <= 1280);
    if !ptb.is_empty() {
        let back = inner::inspect(&ptb).expect("a built packet too big parses");
        assert_eq!(back.flow.proto, 58);
        assert_eq!(back.flow.src, Ipv6Addr::LOCALHOST);
    }

    let from4 = Ipv4Addr::new(198, 18, 0, 1);
    let icmp = inner::frag_needed(data, 1280, from4);
    assert!(icmp.len() <= 576);
    if !icmp.is_empty() {
        let back = inner::inspect(&icmp).expect("a built fragmentation needed parses");
        assert_eq!(back.flow.proto, 1);
        assert_eq!(back.flow.src, from4.to_ipv6_mapped());
    }
});
