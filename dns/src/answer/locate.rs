//! Where the client is: the ECS option (RFC 7871) or the query's source,
//! and the SCOPE a reply states when the decision did not set it.

use std::net::IpAddr;

use crate::select::ClientPrefix;
use crate::wire::{self, ClientSubnet};

/// Address blocks where an ECS ADDRESS says nothing about where the client
/// is. RFC 7871 sec. 10: an authoritative server receiving an ADDRESS in
/// RFC 1918 or RFC 4193 space "SHOULD ignore ADDRESS and look up its answer
/// based on the address of the Recursive Resolver. In the response, it
/// SHOULD set SCOPE PREFIX-LENGTH to cover all of the relevant private
/// space." We apply the same to the other non-global blocks of RFC 6890
/// (shared address space, loopback, link-local).
pub const PRIVATE_RANGES: &[(IpAddr, u8)] = &[
    (IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 0)), 8),
    (IpAddr::V4(std::net::Ipv4Addr::new(172, 16, 0, 0)), 12),
    (IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 0, 0)), 16),
    (IpAddr::V4(std::net::Ipv4Addr::new(100, 64, 0, 0)), 10),
    (IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 0)), 8),
    (IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 0, 0)), 16),
    (
        IpAddr::V6(std::net::Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0)),
        7,
    ),
    (
        IpAddr::V6(std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)),
        10,
    ),
    (IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), 128),
];

/// The private range an ECS prefix lies entirely within, if any.
pub fn private_range(addr: IpAddr, source_prefix: u8) -> Option<u8> {
    PRIVATE_RANGES.iter().find_map(|&(net, len)| {
        (net.is_ipv4() == addr.is_ipv4() && source_prefix >= len && wire::mask(addr, len) == net)
            .then_some(len)
    })
}

fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

fn full_prefix(addr: IpAddr) -> ClientPrefix {
    ClientPrefix {
        addr,
        known: if addr.is_ipv4() { 32 } else { 128 },
    }
}

/// How the client is located, and what SCOPE a reply states if the
/// decision used nothing more specific.
pub(super) struct Locator {
    pub(super) client: ClientPrefix,
    /// `Some(scope)`: the scope is fixed regardless of the decision (ECS
    /// source prefix 0, or a private ADDRESS).
    pub(super) fixed_scope: Option<u8>,
}

pub(super) fn locate(ecs: Option<&ClientSubnet>, src: IpAddr) -> Locator {
    let src = full_prefix(canonical(src));
    match ecs {
        // RFC 7871 sec. 7.1.2: SOURCE PREFIX-LENGTH 0 means the client's
        // address must not be used; we tailor on the resolver's address
        // (the transport source) and reply SCOPE 0, so the resolver keeps
        // the answer for other /0 queries only.
        Some(e) if e.source_prefix == 0 => Locator {
            client: src,
            fixed_scope: Some(0),
        },
        Some(e) => match private_range(e.address, e.source_prefix) {
            Some(len) => Locator {
                client: src,
                fixed_scope: Some(len),
            },
            None => Locator {
                client: ClientPrefix {
                    addr: e.address,
                    known: e.source_prefix,
                },
                fixed_scope: None,
            },
        },
        None => Locator {
            client: src,
            fixed_scope: None,
        },
    }
}
