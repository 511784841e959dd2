//! An access point's tunnel endpoints: at most one per address family, so
//! that a member or shim that moves to a network of the other family still
//! reaches it (docs/PROTOCOL.md 6.5.2).

use std::fmt;
use std::net::SocketAddr;

use super::canonical;

/// One access point, reachable at one endpoint or at one of each family.
/// The first is the one a node starts with when nothing else decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApEndpoints {
    first: SocketAddr,
    other: Option<SocketAddr>,
}

/// Is `ep` an IPv4 endpoint (an IPv4-mapped IPv6 one counts as IPv4)?
pub fn is_ipv4(ep: SocketAddr) -> bool {
    canonical(ep).is_ipv4()
}

/// Can a socket bound to `local` send to `peer` directly: the same family,
/// or `local` is a wildcard (a dual-stack `[::]` socket reaches both)?
pub fn reaches(local: SocketAddr, peer: SocketAddr) -> bool {
    local.ip().is_unspecified() || is_ipv4(local) == is_ipv4(peer)
}

/// "IPv4" or "IPv6", for messages.
pub fn family_name(ep: SocketAddr) -> &'static str {
    if is_ipv4(ep) { "IPv4" } else { "IPv6" }
}

impl ApEndpoints {
    /// Both endpoints, of two families (`None` if they share one).
    pub fn pair(first: SocketAddr, other: SocketAddr) -> Option<Self> {
        (is_ipv4(first) != is_ipv4(other)).then_some(ApEndpoints {
            first,
            other: Some(other),
        })
    }

    /// The first endpoint.
    pub fn first(&self) -> SocketAddr {
        self.first
    }

    /// Every endpoint, the first first.
    pub fn all(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        std::iter::once(self.first).chain(self.other)
    }

    /// The endpoint of `local`'s family, if the AP has one.
    pub fn of_family(&self, local: SocketAddr) -> Option<SocketAddr> {
        self.all().find(|e| is_ipv4(*e) == is_ipv4(local))
    }

    /// The endpoint to use from `local`: the one of its family, else the
    /// first (which `local` cannot reach; the caller says so).
    pub fn for_local(&self, local: SocketAddr) -> SocketAddr {
        self.of_family(local).unwrap_or(self.first)
    }

    /// Is `from` one of them (IPv4-mapped and plain IPv4 alike)?
    pub fn contains(&self, from: SocketAddr) -> bool {
        self.all().any(|e| canonical(e) == canonical(from))
    }

    /// Do the two share an endpoint?
    pub fn overlaps(&self, other: &ApEndpoints) -> bool {
        self.all().any(|e| other.contains(e))
    }

    /// From text: `ENDPOINT` or `ENDPOINT,ENDPOINT` (one of each family),
    /// each `[IPv6]:PORT` or `IPv4:PORT`; the error says what is wrong and
    /// how to write it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = text.split(',').map(parse_endpoint);
        let first = parts.next().unwrap_or_else(|| parse_endpoint(""))?;
        let other = parts.next().transpose()?;
        if parts.next().is_some() {
            return Err(format!(
                "access point {text:?} has more than two endpoints: give one per family, e.g. 198.18.0.10:4790,[fd00::10]:4790"
            ));
        }
        match other {
            None => Ok(first.into()),
            Some(o) => ApEndpoints::pair(first, o).ok_or_else(|| {
                format!(
                    "access point {text:?} gives two {} endpoints: one access point has at most one per family",
                    family_name(first)
                )
            }),
        }
    }
}

/// One endpoint from text: a real address and port.
fn parse_endpoint(text: &str) -> Result<SocketAddr, String> {
    let ep: SocketAddr = text.trim().parse().map_err(|_| {
        format!(
            "access point {text:?} is not ADDRESS:PORT (an IPv6 address in brackets, e.g. [2001:db8::1]:4790; one per family, comma-separated)"
        )
    })?;
    if ep.ip().is_unspecified() || ep.ip().is_multicast() || ep.port() == 0 {
        return Err(format!(
            "access point {ep} is not an endpoint one can send to: give the AP's unicast address and tunnel port"
        ));
    }
    Ok(ep)
}

impl From<SocketAddr> for ApEndpoints {
    fn from(first: SocketAddr) -> Self {
        ApEndpoints { first, other: None }
    }
}

impl std::str::FromStr for ApEndpoints {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ApEndpoints::parse(s)
    }
}

impl fmt::Display for ApEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.first)?;
        if let Some(o) = self.other {
            write!(f, ",{o}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_endpoint_per_family_is_picked_by_the_local_family() {
        let aps = ApEndpoints::parse("198.18.0.10:4790, [fd00::10]:4790").unwrap();
        assert_eq!(aps.first(), ep("198.18.0.10:4790"));
        assert_eq!(aps.for_local(ep("[fd00::5]:0")), ep("[fd00::10]:4790"));
        assert_eq!(aps.for_local(ep("198.18.0.5:0")), ep("198.18.0.10:4790"));
        // An IPv4-mapped local endpoint is IPv4.
        assert_eq!(
            aps.for_local(ep("[::ffff:198.18.0.5]:0")),
            ep("198.18.0.10:4790")
        );
        assert!(aps.contains(ep("[::ffff:198.18.0.10]:4790")));
        assert!(!aps.contains(ep("198.18.0.11:4790")));
        assert_eq!(aps.to_string(), "198.18.0.10:4790,[fd00::10]:4790");
        assert_eq!(aps.to_string().parse::<ApEndpoints>(), Ok(aps));

        let one = ApEndpoints::parse("[fd00::10]:4790").unwrap();
        assert_eq!(one.of_family(ep("198.18.0.5:0")), None);
        assert_eq!(one.for_local(ep("198.18.0.5:0")), ep("[fd00::10]:4790"));
        assert!(one.overlaps(&aps) && aps.overlaps(&one));

        assert!(reaches(ep("198.18.0.5:1"), ep("[::ffff:198.18.0.6]:1")));
        assert!(!reaches(ep("198.18.0.5:1"), ep("[fd00::6]:1")));
        assert!(!reaches(ep("[fd00::5]:1"), ep("198.18.0.6:1")));
        assert!(
            reaches(ep("[::]:1"), ep("198.18.0.6:1")),
            "a wildcard reaches both"
        );
    }

    #[test]
    fn bad_endpoint_lists_say_what_is_wrong() {
        let e = ApEndpoints::parse("198.18.0.10:4790,198.18.0.11:4790").unwrap_err();
        assert!(e.contains("two IPv4 endpoints"), "{e}");
        let e = ApEndpoints::parse("198.18.0.10:4790,[fd00::1]:1,[fd00::2]:1").unwrap_err();
        assert!(e.contains("more than two"), "{e}");
        let e = ApEndpoints::parse("198.18.0.10").unwrap_err();
        assert!(e.contains("ADDRESS:PORT"), "{e}");
        let e = ApEndpoints::parse("").unwrap_err();
        assert!(e.contains("ADDRESS:PORT"), "{e}");
        let e = ApEndpoints::parse("[::]:4790").unwrap_err();
        assert!(e.contains("unicast"), "{e}");
        let e = ApEndpoints::parse("198.18.0.10:0").unwrap_err();
        assert!(e.contains("port"), "{e}");
    }
}
