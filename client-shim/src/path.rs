//! Which AP endpoint the shim uses, and from which local address: the
//! route to it decides, checked once a second, so the shim follows its
//! host to a new address or the other family (docs/PROTOCOL.md 6.5.2).

use std::io;
use std::net::{IpAddr, SocketAddr};

use homeaddr_proto::engine::ApEndpoints;

/// The path in use and the endpoints it may take instead.
#[derive(Debug, Clone)]
pub struct Path {
    /// The AP's endpoints.
    pub endpoints: ApEndpoints,
    /// The endpoint in use.
    pub access_point: SocketAddr,
    /// Our source address towards it.
    pub local: IpAddr,
}

impl Path {
    /// What the routes say now (`route`: the source address the kernel
    /// picks towards an endpoint, or why none): `Some((endpoint, source))`
    /// when that differs from the path in use: the endpoint in use if it
    /// still has a route, else the first other one that has. `None` if
    /// nothing changed, or nothing has a route (the shim waits for one).
    pub fn check(
        &self,
        route: impl Fn(SocketAddr) -> io::Result<IpAddr>,
    ) -> Option<(SocketAddr, IpAddr)> {
        let candidates = std::iter::once(self.access_point)
            .chain(self.endpoints.all().filter(|e| *e != self.access_point));
        for ep in candidates {
            if let Ok(ip) = route(ep) {
                let same = ep == self.access_point && ip == self.local;
                return (!same).then_some((ep, ip));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_route_picks_the_endpoint_and_the_source() {
        let endpoints = ApEndpoints::parse("198.18.0.10:4790,[fd00::10]:4790").unwrap();
        let path = Path {
            endpoints,
            access_point: ep("198.18.0.10:4790"),
            local: "198.18.0.5".parse().unwrap(),
        };
        let both = |e: SocketAddr| -> io::Result<IpAddr> {
            Ok(if e.is_ipv4() {
                "198.18.0.5".parse().unwrap()
            } else {
                "fd00::5".parse().unwrap()
            })
        };
        // Nothing changed: the IPv4 route still leaves from our address,
        // and the IPv6 one is not wanted while IPv4 works.
        assert_eq!(path.check(both), None);
        // A new IPv4 address (a new network of the same family).
        let renumbered = |e: SocketAddr| -> io::Result<IpAddr> {
            if e.is_ipv4() {
                Ok("198.18.0.77".parse().unwrap())
            } else {
                Err(io::ErrorKind::NetworkUnreachable.into())
            }
        };
        assert_eq!(
            path.check(renumbered),
            Some((ep("198.18.0.10:4790"), "198.18.0.77".parse().unwrap()))
        );
        // IPv4 gone: the IPv6 endpoint, from our IPv6 address.
        let only6 = |e: SocketAddr| -> io::Result<IpAddr> {
            if e.is_ipv4() {
                Err(io::ErrorKind::NetworkUnreachable.into())
            } else {
                Ok("fd00::5".parse().unwrap())
            }
        };
        assert_eq!(
            path.check(only6),
            Some((ep("[fd00::10]:4790"), "fd00::5".parse().unwrap()))
        );
        // No route at all: stay, and wait for one.
        let none =
            |_: SocketAddr| -> io::Result<IpAddr> { Err(io::ErrorKind::NetworkUnreachable.into()) };
        assert_eq!(path.check(none), None);
    }
}
