//! The 18-byte endpoint encoding: a tunnel endpoint (IP address + UDP port)
//! as it appears inside MAC inputs and in the Shim Notice (docs/PROTOCOL.md
//! sections 2 and 3).
//!
//! Layout: the IPv6 address (an IPv4 address as IPv4-mapped, `::ffff:a.b.c.d`)
//! in bytes 0..16, then the port in network byte order in bytes 16..18. The
//! IPv6 flow label and scope id are not carried.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::ip_to_v6;

/// Length of an encoded endpoint.
pub const ENDPOINT_LEN: usize = 18;

/// Offset of the address field.
const ADDR: core::ops::Range<usize> = 0..16;
/// Offset of the port field.
const PORT: core::ops::Range<usize> = 16..18;

/// Encodes `ep` as 18 bytes: IPv6 address (IPv4 as IPv4-mapped), then port.
pub fn emit_endpoint(ep: SocketAddr) -> [u8; ENDPOINT_LEN] {
    let mut out = [0u8; ENDPOINT_LEN];
    out[ADDR].copy_from_slice(&ip_to_v6(ep.ip()).octets());
    out[PORT].copy_from_slice(&ep.port().to_be_bytes());
    out
}

/// Decodes an endpoint written by [`emit_endpoint`]. An IPv4-mapped address
/// becomes a [`SocketAddr::V4`], so IPv4 endpoints round trip; every other
/// address becomes a [`SocketAddr::V6`] with flow info and scope id 0.
pub fn parse_endpoint(b: &[u8; ENDPOINT_LEN]) -> SocketAddr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&b[ADDR]);
    let addr = Ipv6Addr::from(octets);
    let port = u16::from_be_bytes([b[PORT.start], b[PORT.start + 1]]);
    match addr.to_ipv4_mapped() {
        Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
        None => SocketAddr::V6(SocketAddrV6::new(addr, port, 0, 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    /// `ep` emits as `bytes` and `bytes` parse back as `ep`.
    fn fixture(ep: &str, bytes: [u8; ENDPOINT_LEN]) {
        let ep: SocketAddr = ep.parse().unwrap();
        assert_eq!(emit_endpoint(ep), bytes);
        assert_eq!(parse_endpoint(&bytes), ep);
    }

    #[test]
    fn ipv6_fixture() {
        fixture(
            "[2001:db8::1]:4790",
            [
                0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x12, 0xb6,
            ],
        );
    }

    #[test]
    fn ipv4_is_mapped_and_comes_back_as_v4() {
        fixture(
            "198.18.7.7:53",
            [
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 7, 7, 0, 53,
            ],
        );
    }

    proptest! {
        #[test]
        fn v4_round_trips(a in any::<u32>(), port in any::<u16>()) {
            let ep = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(a), port));
            prop_assert_eq!(parse_endpoint(&emit_endpoint(ep)), ep);
        }

        #[test]
        fn v6_round_trips(a in any::<u128>(), port in any::<u16>()) {
            let addr = Ipv6Addr::from(a);
            prop_assume!(addr.to_ipv4_mapped().is_none());
            let ep = SocketAddr::V6(SocketAddrV6::new(addr, port, 0, 0));
            prop_assert_eq!(parse_endpoint(&emit_endpoint(ep)), ep);
        }

        #[test]
        fn any_bytes_reencode_identically(b in any::<[u8; ENDPOINT_LEN]>()) {
            prop_assert_eq!(emit_endpoint(parse_endpoint(&b)), b);
        }
    }
}
