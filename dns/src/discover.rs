//! AP endpoint discovery for the client shim.
//!
//! The discovery record is a TXT record at `_homeaddr._udp.<service>` whose
//! single string reads `v=homeaddr1 site=<site> ap=<endpoint>`, endpoint
//! `[2001:db8::1]:4500` or `192.0.2.1:4500`. It is selected exactly like the
//! service's AAAA record (ECS or source address, health, fallback), so the
//! shim's tunnel goes to the AP of the site its HoA answer pointed at. TXT
//! rather than SVCB: every resolver and middlebox passes it, and the shim
//! needs no SvcParam parser.
//!
//! Layer: shell (library API). Contract: [`discover_ap_endpoint`] returns
//! the first well-formed endpoint in the answer, or an error saying why
//! there is none.

use std::net::SocketAddr;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RData;

use crate::client::{self, ClientError, Retry};
use crate::config::DISCOVERY_PREFIX;
use crate::wire::{Name, build_query, rtype};

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoverError {
    /// The service name cannot be a DNS name.
    #[error("`{0}` is not a valid service name; pass a domain name like svc.example.com")]
    BadName(String),
    /// Talking to the server failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The reply is not valid DNS.
    #[error("reply from {server} is not valid DNS: {reason}")]
    Malformed {
        /// The server.
        server: SocketAddr,
        /// The parse error.
        reason: String,
    },
    /// The server answered with an error code.
    #[error(
        "{server} answered {rcode} for {name}; is the service name right and in the server's zone?"
    )]
    Rcode {
        /// The server.
        server: SocketAddr,
        /// The discovery name asked for.
        name: String,
        /// The response code.
        rcode: ResponseCode,
    },
    /// No usable discovery record in the answer.
    #[error(
        "{server} has no usable discovery record at {name} (all sites down with the nodata policy, or an old server)"
    )]
    NoRecord {
        /// The server.
        server: SocketAddr,
        /// The discovery name asked for.
        name: String,
    },
}

/// Parses the text of a discovery record. Unknown keys are ignored so the
/// format can grow; the version must be `homeaddr1`.
pub fn parse_discovery_text(text: &str) -> Option<SocketAddr> {
    let mut version_ok = false;
    let mut ap = None;
    for field in text.split_ascii_whitespace() {
        match field.split_once('=') {
            Some(("v", v)) => version_ok = v == "homeaddr1",
            Some(("ap", v)) => ap = v.parse().ok(),
            _ => {}
        }
    }
    if version_ok { ap } else { None }
}

/// Asks `server` (an authoritative homeaddr-dns or a resolver in front of
/// it) for the AP tunnel endpoint of this client's site for `service_name`.
pub async fn discover_ap_endpoint(
    server: SocketAddr,
    service_name: &str,
) -> Result<SocketAddr, DiscoverError> {
    let name_text = format!("{DISCOVERY_PREFIX}.{}", service_name.trim_end_matches('.'));
    let name = Name::from_dotted(&name_text)
        .map_err(|_| DiscoverError::BadName(service_name.to_string()))?;
    let id = query_id(&name_text);
    let query = build_query(id, &name, rtype::TXT, Some((1232, None)));
    let reply = client::exchange(server, &query, Retry::default()).await?;
    let msg = Message::from_vec(&reply).map_err(|e| DiscoverError::Malformed {
        server,
        reason: e.to_string(),
    })?;
    let rcode = msg.metadata.response_code;
    if rcode != ResponseCode::NoError {
        return Err(DiscoverError::Rcode {
            server,
            name: name_text,
            rcode,
        });
    }
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(txt) => {
                let text: String = txt
                    .txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s))
                    .collect();
                parse_discovery_text(&text)
            }
            _ => None,
        })
        .next()
        .ok_or(DiscoverError::NoRecord {
            server,
            name: name_text,
        })
}

/// A query ID that differs between calls without a random source: the
/// name hashed with the time of day. (The shell may read the clock; only
/// the core must not.)
fn query_id(name: &str) -> u16 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    std::time::SystemTime::now().hash(&mut h);
    h.finish() as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_discovery_text() {
        assert_eq!(
            parse_discovery_text("v=homeaddr1 site=ams ap=[2001:db8::1]:4500"),
            Some("[2001:db8::1]:4500".parse().unwrap())
        );
        assert_eq!(
            parse_discovery_text("ap=192.0.2.1:4500 v=homeaddr1 extra=1"),
            Some("192.0.2.1:4500".parse().unwrap())
        );
        assert_eq!(parse_discovery_text("v=homeaddr2 ap=192.0.2.1:4500"), None);
        assert_eq!(parse_discovery_text("v=homeaddr1 ap=nonsense"), None);
    }
}
