//! A NAT router namespace: kernel IPv4 forwarding from an inside LAN to the
//! "internet" segment, nftables masquerade on the outside interface, its
//! conntrack table read and flushed, its UDP timeouts set.
//!
//! What was checked on this kernel (and is asserted by the harness tests):
//! `conntrack -F` empties the table, so with `masquerade random` the next
//! packet of a flow gets a new mapped port. Deleting and re-adding the nft
//! table does NOT: existing conntrack entries keep their NAT binding (the
//! mapping stays on its port), so it is no stand-in for a flush; without the
//! `conntrack` tool [`NatRouter::flush`] fails and says so.

use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::Context;

use crate::topology::Netns;

/// The name of the nft table each NAT router has.
pub const NFT_TABLE: &str = "homeaddr_nat";
/// The router's interface on the internet segment.
pub const OUTSIDE_IF: &str = "wan0";
/// The router's interface on its inside LAN.
pub const INSIDE_IF: &str = "lan0";

/// How a NAT router maps and forgets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatOptions {
    /// `masquerade random`: every new mapping takes a random port (without
    /// it Linux keeps the inside source port when it is free, so a flushed
    /// mapping comes back on the same port).
    pub random: bool,
    /// UDP conntrack timeouts in seconds (`nf_conntrack_udp_timeout`,
    /// `nf_conntrack_udp_timeout_stream`) in the router's namespace; the
    /// kernel's defaults (30 s, 120 s) when `None`.
    pub udp_timeouts: Option<(u32, u32)>,
    /// Accept unsolicited packets to the router's own outside address
    /// (no input firewall). By default the router drops them in an nft
    /// input chain (`iifname wan0 ct state new drop`), as home routers
    /// do: the kernel then keeps no conntrack entry for them. Accepted,
    /// each one leaves an entry (outside peer -> router:port) that makes
    /// masquerade map a later outbound flow to that peer to another port:
    /// a Punch or care-of test that arrives before the other side's packet
    /// leaves moves that packet's mapping, and the hole never matches.
    pub open_input: bool,
}

/// One UDP conntrack entry: the inside endpoint, the remote one, and the
/// public endpoint the router maps the inside one to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// The inside host's endpoint (original source).
    pub inside: SocketAddrV4,
    /// The remote endpoint (original destination).
    pub remote: SocketAddrV4,
    /// The mapped endpoint (the reply's destination).
    pub mapped: SocketAddrV4,
}

/// A NAT router of the lab.
#[derive(Debug)]
pub struct NatRouter {
    /// 1-based; its LAN is `100.64.<index>.0/24`.
    pub index: u8,
    /// Its namespace.
    pub ns: Netns,
    /// Its address on the internet segment.
    pub outside: Ipv4Addr,
    /// Its address on its LAN (the inside hosts' gateway).
    pub inside: Ipv4Addr,
    /// How it maps.
    pub options: NatOptions,
    /// The LAN's switch namespace.
    pub(super) switch: Netns,
    pub(super) next_host: u8,
}

impl NatRouter {
    /// The nft ruleset of the masquerade.
    fn ruleset(&self) -> String {
        let random = if self.options.random { " random" } else { "" };
        let input = if self.options.open_input {
            String::new()
        } else {
            format!(
                "  chain input {{\n    type filter hook input priority filter; policy accept;\n    \
                 iifname \"{OUTSIDE_IF}\" ct state new drop\n  }}\n"
            )
        };
        format!(
            "table ip {NFT_TABLE} {{\n  chain postrouting {{\n    \
             type nat hook postrouting priority srcnat; policy accept;\n    \
             oifname \"{OUTSIDE_IF}\" masquerade{random}\n  }}\n{input}}}\n"
        )
    }

    /// Forwarding on, the masquerade table, the UDP timeouts.
    pub(super) fn configure(&self) -> anyhow::Result<()> {
        self.ns.sysctl("net.ipv4.ip_forward", "1")?;
        self.load_table()?;
        if let Some((timeout, stream)) = self.options.udp_timeouts {
            self.set_udp_timeouts(timeout, stream)?;
        }
        Ok(())
    }

    fn load_table(&self) -> anyhow::Result<()> {
        let mut cmd = self.ns.command("nft");
        cmd.args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd
            .spawn()
            .context("starting nft (install the nftables package)")?;
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().context("nft stdin")?;
            stdin.write_all(self.ruleset().as_bytes())?;
        }
        let out = child.wait_with_output()?;
        anyhow::ensure!(
            out.status.success(),
            "nft -f in {}: {}",
            self.ns.name(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Sets the UDP conntrack timeouts of the router's namespace (the
    /// masquerade table must be loaded: it loads conntrack).
    pub fn set_udp_timeouts(&self, timeout_s: u32, stream_s: u32) -> anyhow::Result<()> {
        self.ns.sysctl(
            "net.netfilter.nf_conntrack_udp_timeout",
            &timeout_s.to_string(),
        )?;
        self.ns.sysctl(
            "net.netfilter.nf_conntrack_udp_timeout_stream",
            &stream_s.to_string(),
        )?;
        Ok(())
    }

    /// Deletes the nft table and loads it again. Existing conntrack entries
    /// survive this (see the module docs): it does not flush mappings.
    pub fn reload_table(&self) -> anyhow::Result<()> {
        self.ns
            .run("nft", ["delete", "table", "ip", NFT_TABLE])
            .context("nft delete table")?;
        self.load_table()
    }

    /// Flushes every mapping (`conntrack -F`): the next packet of each flow
    /// gets a new one (a new port, with `random`).
    pub fn flush(&self) -> anyhow::Result<()> {
        self.ns.run("conntrack", ["-F"]).context(
            "conntrack -F (install the conntrack package; reloading the nft table \
             does not flush existing mappings)",
        )?;
        Ok(())
    }

    /// The UDP mappings the router holds now (`conntrack -L -p udp`, or
    /// the kernel's `/proc/net/nf_conntrack` without the tool).
    pub fn udp_mappings(&self) -> anyhow::Result<Vec<Mapping>> {
        let timeout = crate::topology::COMMAND_TIMEOUT;
        let out = match self.ns.output("conntrack", ["-L", "-p", "udp"], timeout) {
            Ok(out) if out.status.success() => out,
            _ => self
                .ns
                .output("cat", ["/proc/net/nf_conntrack"], timeout)
                .context("reading the conntrack table")?,
        };
        anyhow::ensure!(
            out.status.success(),
            "reading the conntrack table in {} (install the conntrack package): {}",
            self.ns.name(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(parse_conntrack(&String::from_utf8_lossy(&out.stdout)))
    }

    /// The mapped endpoint of the UDP flow from `inside` to `remote`, if the
    /// router has one.
    pub fn mapping_of(&self, inside: SocketAddrV4, remote: SocketAddrV4) -> Option<SocketAddrV4> {
        self.udp_mappings()
            .ok()?
            .into_iter()
            .find(|m| m.inside == inside && m.remote == remote)
            .map(|m| m.mapped)
    }

    /// Every mapped endpoint of UDP flows from `inside_ip` (any port, any
    /// remote), with their remotes.
    pub fn mappings_from(&self, inside_ip: Ipv4Addr) -> Vec<Mapping> {
        self.udp_mappings()
            .unwrap_or_default()
            .into_iter()
            .filter(|m| *m.inside.ip() == inside_ip)
            .collect()
    }

    /// The conntrack table as `conntrack -L` prints it (for logs).
    pub fn dump(&self) -> String {
        self.ns
            .output("conntrack", ["-L"], crate::topology::COMMAND_TIMEOUT)
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| e.to_string())
    }
}

/// The UDP entries of `conntrack -L` output (or `/proc/net/nf_conntrack`,
/// whose lines start with `ipv4 2`): the first src/dst/sport/dport are the
/// original direction, the second the reply.
pub fn parse_conntrack(text: &str) -> Vec<Mapping> {
    let mut out = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().take(3).collect();
        if words.first() != Some(&"udp") && words.get(2) != Some(&"udp") {
            continue;
        }
        let mut src = Vec::new();
        let mut dst = Vec::new();
        let mut sport = Vec::new();
        let mut dport = Vec::new();
        for field in line.split_whitespace() {
            let Some((k, v)) = field.split_once('=') else {
                continue;
            };
            match k {
                "src" => src.extend(v.parse::<Ipv4Addr>().ok()),
                "dst" => dst.extend(v.parse::<Ipv4Addr>().ok()),
                "sport" => sport.extend(v.parse::<u16>().ok()),
                "dport" => dport.extend(v.parse::<u16>().ok()),
                _ => {}
            }
        }
        if src.len() >= 2 && dst.len() >= 2 && sport.len() >= 2 && dport.len() >= 2 {
            out.push(Mapping {
                inside: SocketAddrV4::new(src[0], sport[0]),
                remote: SocketAddrV4::new(dst[0], dport[0]),
                mapped: SocketAddrV4::new(dst[1], dport[1]),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conntrack_lines_parse() {
        let text = "udp      17 29 src=100.64.1.2 dst=198.18.0.2 sport=4000 dport=5000 \
                    src=198.18.0.2 dst=198.18.0.100 sport=5000 dport=63274 mark=0 use=1\n\
                    udp      17 29 src=100.64.1.3 dst=198.18.0.2 sport=1 dport=2 [UNREPLIED] \
                    src=198.18.0.2 dst=198.18.0.100 sport=2 dport=7 mark=0 use=1\n\
                    tcp      6 431999 ESTABLISHED src=1.2.3.4 dst=5.6.7.8 sport=1 dport=2\n";
        let m = parse_conntrack(text);
        assert_eq!(m.len(), 2);
        let procfs = "ipv4     2 udp      17 25 src=100.64.1.2 dst=198.18.0.2 sport=4000 \
                      dport=5000 src=198.18.0.2 dst=198.18.0.100 sport=5000 dport=9 mark=0 zone=0 use=2\n";
        assert_eq!(parse_conntrack(procfs)[0].mapped.port(), 9);
        assert_eq!(m[0].inside, "100.64.1.2:4000".parse().unwrap());
        assert_eq!(m[0].remote, "198.18.0.2:5000".parse().unwrap());
        assert_eq!(m[0].mapped, "198.18.0.100:63274".parse().unwrap());
        assert_eq!(m[1].mapped.port(), 7);
    }
}
