//! Host routes in one policy routing table over rtnetlink, without an `ip`
//! process per route: the member with direct server return keeps one
//! route per shim client (`C/128 dev TUN table T`) and changes them while
//! packets wait (docs/OPERATING.md, "Direct server return"), so each change
//! must cost a system call, not a fork.
//!
//! One request, one acknowledgement: the kernel handles an RTM_NEWROUTE or
//! RTM_DELROUTE inside `send` and queues its answer (an `nlmsgerr`) before
//! `send` returns, so the blocking `recv` that follows never waits on
//! anything but the kernel.

use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLMSG_HDR: usize = 16;
const RTMSG: usize = 12;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_TABLE: u16 = 15;

/// The host routes of one table, all through one device.
#[derive(Debug)]
pub struct HostRoutes {
    fd: OwnedFd,
    table: u32,
    ifindex: u32,
    seq: u32,
}

impl HostRoutes {
    /// Routes through device `dev` (which must exist) in `table`.
    pub fn open(table: u32, dev: &str) -> io::Result<Self> {
        let name = std::ffi::CString::new(dev)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "device name with a NUL"))?;
        // SAFETY: `name` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Self {
            fd,
            table,
            ifindex,
            seq: 0,
        })
    }

    /// Route `addr` (an IPv4-mapped address: the IPv4 one, /32) through
    /// the device, replacing any route to it in the table.
    pub fn add(&mut self, addr: Ipv6Addr) -> io::Result<()> {
        let flags =
            libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_REPLACE;
        self.request(libc::RTM_NEWROUTE, flags as u16, addr)
    }

    /// Remove the route to `addr`; a route that is not there is not an
    /// error.
    pub fn remove(&mut self, addr: Ipv6Addr) -> io::Result<()> {
        let flags = libc::NLM_F_REQUEST | libc::NLM_F_ACK;
        match self.request(libc::RTM_DELROUTE, flags as u16, addr) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            other => other,
        }
    }

    fn request(&mut self, kind: u16, flags: u16, addr: Ipv6Addr) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let msg = route_message(kind, flags, self.seq, self.table, self.ifindex, addr);
        // SAFETY: `msg` is a valid buffer of `msg.len()` bytes.
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = [0u8; 512];
        loop {
            // SAFETY: `buf` is a valid writable buffer of its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            match ack(&buf[..n as usize], self.seq) {
                Some(result) => return result,
                // An answer to an earlier request whose wait failed.
                None => continue,
            }
        }
    }
}

/// An RTM_NEWROUTE or RTM_DELROUTE for the host route to `addr` through
/// interface `ifindex` in `table`.
fn route_message(
    kind: u16,
    flags: u16,
    seq: u32,
    table: u32,
    ifindex: u32,
    addr: Ipv6Addr,
) -> Vec<u8> {
    let (family, dst, dst_len) = match IpAddr::V6(addr).to_canonical() {
        IpAddr::V4(v4) => (libc::AF_INET as u8, v4.octets().to_vec(), 32u8),
        IpAddr::V6(v6) => (libc::AF_INET6 as u8, v6.octets().to_vec(), 128u8),
    };
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&[0; NLMSG_HDR]);
    // rtmsg: family, dst_len, src_len, tos, table (RTA_TABLE has it),
    // protocol, scope, type, flags.
    m.extend_from_slice(&[
        family,
        dst_len,
        0,
        0,
        libc::RT_TABLE_UNSPEC,
        libc::RTPROT_BOOT,
        libc::RT_SCOPE_LINK,
        libc::RTN_UNICAST,
    ]);
    m.extend_from_slice(&0u32.to_ne_bytes());
    debug_assert_eq!(m.len(), NLMSG_HDR + RTMSG);
    attribute(&mut m, RTA_DST, &dst);
    attribute(&mut m, RTA_OIF, &ifindex.to_ne_bytes());
    attribute(&mut m, RTA_TABLE, &table.to_ne_bytes());
    let len = m.len() as u32;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m[4..6].copy_from_slice(&kind.to_ne_bytes());
    m[6..8].copy_from_slice(&flags.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: the kernel.
    m
}

/// Append a route attribute (length, type, value, padded to 4 bytes).
fn attribute(m: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = (4 + value.len()) as u16;
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(value);
    while !m.len().is_multiple_of(4) {
        m.push(0);
    }
}

/// The outcome in an acknowledgement for request `seq`, or `None` if the
/// datagram answers another request.
fn ack(buf: &[u8], seq: u32) -> Option<io::Result<()>> {
    let field = |at: usize| -> Option<[u8; 4]> { buf.get(at..at + 4)?.try_into().ok() };
    let kind = u16::from_ne_bytes(buf.get(4..6)?.try_into().ok()?);
    if u32::from_ne_bytes(field(8)?) != seq {
        return None;
    }
    if kind != libc::NLMSG_ERROR as u16 {
        return Some(Err(io::Error::other(format!(
            "unexpected rtnetlink answer type {kind}"
        ))));
    }
    let errno = i32::from_ne_bytes(field(NLMSG_HDR)?);
    Some(if errno == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(-errno))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_route_message_has_the_layout_iproute2_sends() {
        let addr: Ipv6Addr = "fd00::7".parse().unwrap();
        let m = route_message(libc::RTM_NEWROUTE, 0x0605, 9, 4790, 3, addr);
        assert_eq!(m.len(), 16 + 12 + 20 + 8 + 8);
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()),
            m.len() as u32
        );
        assert_eq!(
            u16::from_ne_bytes(m[4..6].try_into().unwrap()),
            libc::RTM_NEWROUTE
        );
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 9);
        assert_eq!(m[16], libc::AF_INET6 as u8);
        assert_eq!(m[17], 128);
        // RTA_DST, then RTA_OIF 3, then RTA_TABLE 4790.
        assert_eq!(&m[28..32], &[20, 0, 1, 0]);
        assert_eq!(&m[32..48], &addr.octets());
        assert_eq!(&m[48..52], &[8, 0, 4, 0]);
        assert_eq!(u32::from_ne_bytes(m[52..56].try_into().unwrap()), 3);
        assert_eq!(&m[56..60], &[8, 0, 15, 0]);
        assert_eq!(u32::from_ne_bytes(m[60..64].try_into().unwrap()), 4790);
    }

    #[test]
    fn an_ipv4_mapped_address_becomes_an_ipv4_host_route() {
        let addr: Ipv6Addr = "::ffff:100.64.0.9".parse().unwrap();
        let m = route_message(libc::RTM_DELROUTE, 0x0005, 1, 4790, 3, addr);
        assert_eq!(m[16], libc::AF_INET as u8);
        assert_eq!(m[17], 32);
        assert_eq!(&m[28..32], &[8, 0, 1, 0]);
        assert_eq!(&m[32..36], &[100, 64, 0, 9]);
    }

    #[test]
    fn acknowledgements_are_matched_by_sequence_and_carry_the_errno() {
        let mut a = vec![0u8; 36];
        a[4..6].copy_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        a[8..12].copy_from_slice(&5u32.to_ne_bytes());
        assert!(ack(&a, 4).is_none());
        assert!(ack(&a, 5).unwrap().is_ok());
        a[16..20].copy_from_slice(&(-libc::ENODEV).to_ne_bytes());
        let e = ack(&a, 5).unwrap().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODEV));
        assert!(
            ack(&a[..6], 5).is_none(),
            "a truncated answer is not an answer"
        );
    }
}
