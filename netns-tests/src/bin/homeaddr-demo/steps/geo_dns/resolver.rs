//! The resolver's side of the geo-DNS step: one UDP socket in the
//! resolver's namespace that asks the name server for the service's AAAA
//! records on a client's behalf, with ECS carrying that client's subnet
//! (as a recursive resolver does, RFC 7871), and reads the answer.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::Context;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RData;
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use homeaddr_dns::wire::{ClientSubnet, Name, build_query, rtype};
use homeaddr_netns_tests::topology::Netns;

/// How long one try waits for the reply; a lost datagram is asked again.
const TRY_TIMEOUT: Duration = Duration::from_millis(500);
const TRIES: u32 = 3;
/// The EDNS payload size the resolver offers (the DNS flag-day value).
const UDP_PAYLOAD: u16 = 1232;

/// What the name server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    /// The AAAA records, in answer order.
    pub(crate) addrs: Vec<Ipv6Addr>,
    /// The TTL of the first of them (0 when there are none).
    pub(crate) ttl: u32,
    /// The SCOPE PREFIX-LENGTH of the reply's ECS option, if it has one.
    pub(crate) scope: Option<u8>,
}

/// A resolver: a socket bound in its namespace (a socket keeps the
/// namespace it was made in, so it is used from this thread afterwards).
#[derive(Debug)]
pub(crate) struct Resolver {
    socket: UdpSocket,
    server: SocketAddr,
    next_id: u16,
}

impl Resolver {
    /// A resolver in `ns` that asks `server`.
    pub(crate) fn new(ns: &Netns, server: SocketAddr) -> anyhow::Result<Self> {
        let socket = ns
            .enter(|| UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)))?
            .context("binding the resolver's socket")?;
        socket.connect(server)?;
        socket.set_read_timeout(Some(TRY_TIMEOUT))?;
        Ok(Self {
            socket,
            server,
            next_id: 0x4d00,
        })
    }

    /// The AAAA records of `name`, asked with ECS `subnet` (address and
    /// source prefix length), or without ECS when `None`.
    pub(crate) fn aaaa(
        &mut self,
        name: &str,
        subnet: Option<(IpAddr, u8)>,
    ) -> anyhow::Result<Answer> {
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        let ecs = subnet.map(|(addr, len)| ClientSubnet::for_query(addr, len));
        let query = build_query(
            id,
            &Name::from_dotted(name)?,
            rtype::AAAA,
            Some((UDP_PAYLOAD, ecs)),
        );
        let reply = self.exchange(id, &query)?;
        let msg = Message::from_vec(&reply)
            .with_context(|| format!("the reply of {} does not parse", self.server))?;
        anyhow::ensure!(
            msg.metadata.response_code == ResponseCode::NoError,
            "{} answered {name} AAAA with {}",
            self.server,
            msg.metadata.response_code
        );
        let mut ttl = None;
        let addrs = msg
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::AAAA(a) => {
                    ttl.get_or_insert(r.ttl);
                    Some(a.0)
                }
                _ => None,
            })
            .collect();
        let scope = msg
            .edns
            .as_ref()
            .and_then(|e| match e.option(EdnsCode::Subnet)? {
                EdnsOption::Subnet(s) => Some(s.scope_prefix()),
                _ => None,
            });
        Ok(Answer {
            addrs,
            ttl: ttl.unwrap_or(0),
            scope,
        })
    }

    /// Sends `query` until a reply with its ID comes (strays are skipped).
    fn exchange(&self, id: u16, query: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut buf = vec![0u8; usize::from(UDP_PAYLOAD)];
        for _ in 0..TRIES {
            self.socket.send(query)?;
            loop {
                match self.socket.recv(&mut buf) {
                    Ok(n) if n >= 12 && buf[..2] == id.to_be_bytes() && buf[2] & 0x80 != 0 => {
                        return Ok(buf[..n].to_vec());
                    }
                    Ok(_) => continue,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        break;
                    }
                    Err(e) => {
                        return Err(e).with_context(|| format!("asking {}", self.server));
                    }
                }
            }
        }
        anyhow::bail!(
            "no reply from the name server {} after {TRIES} tries of {TRY_TIMEOUT:?}",
            self.server
        )
    }
}
