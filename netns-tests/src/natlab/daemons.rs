//! Starting the daemons of the lab with the flags of the spec: the AP
//! (`--home-address` once per family, IPv4 `--listen` or the dual-stack
//! `[::]:4790`, `--shim-prefix`,
//! `--shim-pool`), members (`--access-point` the AP's IPv4 endpoint, their
//! local care-of endpoint) with their servers, shims (`--home-address` of
//! the family asked for, `--local` their own address).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;

use super::{AP4, Family, HOA4, HOA6, Lab, LabHost, SHIM_POOL_V4, SHIM_PREFIX_V6, Site};
use crate::service::{KEY, TUNNEL_PORT, member_server, start_daemon};

/// The log line of a member that registered.
pub const MEMBER_READY: &str = "registered with the access point";
/// The log line of a shim that is up.
pub const SHIM_READY: &str = "shim up";
/// The log line of an AP that is up.
pub const AP_READY: &str = "access point up";

/// How a member or shim is started beyond the lab's config.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Underlay family for a public host (hosts behind a NAT use IPv4).
    pub underlay: Family,
    /// Extra flags.
    pub flags: Vec<String>,
    /// The `--access-point` value as given (`None`: the AP's endpoint of
    /// the underlay family), e.g. `198.18.0.10:4790,[fd00:4842:ffff::10]:4790`.
    pub access_point: Option<String>,
    /// A shim gets no `--local`: it takes the source address of its route
    /// to the access point (members always get `--care-of`).
    pub no_local: bool,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self {
            underlay: Family::V4,
            flags: Vec::new(),
            access_point: None,
            no_local: false,
        }
    }
}

impl DaemonOptions {
    /// The `--access-point` value for `host`: the one given, else the AP's
    /// endpoint a host of the underlay family uses.
    fn access_point_for(&self, lab: &Lab, host: &LabHost) -> String {
        self.access_point
            .clone()
            .unwrap_or_else(|| lab.ap_for(host, self.underlay).to_string())
    }
}

impl Lab {
    /// The flags of the AP daemon.
    pub fn ap_args(&self) -> Vec<String> {
        let mut args = vec!["--home-address".to_string(), HOA6.to_string()];
        if self.config.hoa_v4 {
            args.extend(["--home-address".into(), HOA4.to_string()]);
        }
        // One socket: the IPv4 endpoint, or with `ap_listen_v6` the
        // dual-stack `[::]:4790` (the AP takes both families on it).
        let listen = if self.config.ap_listen_v6 {
            SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), TUNNEL_PORT)
        } else {
            SocketAddr::new(AP4.into(), TUNNEL_PORT)
        };
        args.extend([
            "--key".into(),
            KEY.into(),
            "--listen".into(),
            listen.to_string(),
        ]);
        if self.config.shim_pools {
            args.extend([
                "--shim-prefix".into(),
                SHIM_PREFIX_V6.into(),
                "--shim-pool".into(),
                SHIM_POOL_V4.into(),
            ]);
        }
        args.extend(["--control".into(), self.ap.control.display().to_string()]);
        args.extend(self.config.ap_flags.iter().cloned());
        args
    }

    /// Starts `homeaddr-ap` on the AP host; returns once it is up.
    pub fn start_ap(&mut self) -> anyhow::Result<()> {
        let args = self.ap_args();
        let daemon = start_daemon(
            &self.ap.ns,
            "homeaddr-ap",
            "homeaddr-ap",
            args,
            &[],
            AP_READY,
        )
        .context("starting the AP")?;
        self.ap.daemon = Some(daemon);
        Ok(())
    }

    /// The AP endpoint a host of `underlay` uses.
    fn ap_for(&self, host: &LabHost, underlay: Family) -> SocketAddr {
        match (underlay, host.site) {
            (Family::V6, Site::Public) => self.ap_endpoint_v6(),
            _ => self.ap_endpoint(),
        }
    }

    /// A config file `<name>.toml` with `nat_keepalive_s` when the lab has
    /// one: the flags that name it.
    fn config_flags(&self, name: &str) -> anyhow::Result<Vec<String>> {
        let Some(k) = self.config.nat_keepalive_s else {
            return Ok(Vec::new());
        };
        let path = self.topo.dir().join(format!("{name}.toml"));
        std::fs::write(&path, format!("nat_keepalive_s = {k}\n"))?;
        Ok(vec!["--config".into(), path.display().to_string()])
    }

    /// Starts member `id` at `site`: its server, then `homeaddr-member`
    /// registered with the AP (its care-of endpoint the local one, port
    /// 4790); returns once it logs that it registered.
    pub fn add_member(
        &mut self,
        id: u16,
        site: Site,
        options: &DaemonOptions,
    ) -> anyhow::Result<&LabHost> {
        let name = format!("m{id}");
        let mut host = self.add_host(&name, site)?;
        let care_of = host.endpoint(options.underlay, TUNNEL_PORT);
        let mut args = vec![
            "--id".to_string(),
            id.to_string(),
            "--home-address".into(),
            HOA6.to_string(),
        ];
        if self.config.hoa_v4 {
            args.extend(["--home-address".into(), HOA4.to_string()]);
        }
        args.extend([
            "--access-point".into(),
            options.access_point_for(self, &host),
            "--care-of".into(),
            care_of.to_string(),
            "--key".into(),
            KEY.into(),
            "--control".into(),
            host.host.control.display().to_string(),
        ]);
        args.extend(self.config_flags(&name)?);
        args.extend(options.flags.iter().cloned());
        host.host.extra.push(member_server(&host.host.ns, id)?);
        let daemon = start_daemon(
            &host.host.ns,
            &format!("homeaddr-member-{id}"),
            "homeaddr-member",
            args,
            &[],
            MEMBER_READY,
        )
        .map_err(|e| anyhow::anyhow!("member {id} at {site:?}: {e:#}\n{}", self.dump()))?;
        host.host.daemon = Some(daemon);
        self.members.insert(id, host);
        Ok(&self.members[&id])
    }

    /// Starts shim client `name` at `site` serving `hoa`'s home address,
    /// with the AP's endpoint and `--local` its own address (port 0; none
    /// with `no_local`); returns once it is up.
    pub fn add_shim(
        &mut self,
        name: &str,
        site: Site,
        hoa: Family,
        options: &DaemonOptions,
    ) -> anyhow::Result<&LabHost> {
        let mut host = self.add_host(name, site)?;
        let mut args = vec![
            "--home-address".to_string(),
            hoa.hoa().to_string(),
            "--access-point".into(),
            options.access_point_for(self, &host),
        ];
        if !options.no_local {
            let local = host.endpoint(options.underlay, 0);
            args.extend(["--local".into(), local.to_string()]);
        }
        args.extend(["--control".into(), host.host.control.display().to_string()]);
        args.extend(self.config_flags(name)?);
        args.extend(options.flags.iter().cloned());
        let daemon = start_daemon(
            &host.host.ns,
            &format!("homeaddr-shim-{name}"),
            "homeaddr-shim",
            args,
            &[],
            SHIM_READY,
        )
        .map_err(|e| anyhow::anyhow!("shim {name} at {site:?}: {e:#}\n{}", self.dump()))?;
        host.host.daemon = Some(daemon);
        if self.config.shim_pools {
            self.wait_client_address(&host, hoa)?;
        }
        self.clients.insert(name.into(), host);
        Ok(&self.clients[name])
    }

    /// Waits until the shim's AP session gave it its client address and
    /// the kernel routes the home address from it (`ip route get` shows
    /// `src C`): an application's connection made before would leave from
    /// another source, which the AP refuses.
    fn wait_client_address(&self, shim: &LabHost, hoa: Family) -> anyhow::Result<()> {
        let get = match hoa {
            Family::V4 => format!("-4 route get {HOA4}"),
            Family::V6 => format!("-6 route get {HOA6}"),
        };
        let routed = || {
            let status = shim.status();
            let Some(c) = status["client_address"].as_str() else {
                return false;
            };
            let c = c.strip_prefix("::ffff:").unwrap_or(c);
            shim.host
                .ns
                .ip(&get)
                .is_ok_and(|r| r.contains(&format!("src {c} ")))
        };
        self.wait(
            &format!(
                "shim {}: its client address and the route from it",
                shim.host.name
            ),
            Duration::from_secs(10),
            routed,
        )?;
        Ok(())
    }
}
