//! A whole homeaddr service in namespaces: one access point, members,
//! shim and legacy clients, every host joined by the WAN emulator.
//!
//! Used by the daemon namespace tests and by the demo. Each host is a
//! namespace with one WAN address (`fd00:4841:ffff::N`); the home address
//! `fd00:4841:aaaa::1` is routed by the emulator to the AP host, whose
//! daemon routes it into its TUN. Members run `homeaddr-member` and a
//! `homeaddr-testapp serve` bound to `[::]:8080` answering with the
//! member's name, so a client can tell which member served it.
//!
//! Field order matters: the emulator is dropped before the topology
//! deletes the namespaces its TUN devices live in.

use std::collections::BTreeMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use homeaddr_control::{
    ClientError, MemberRow, Request, Response, Status, UnexpectedResponse, call_blocking,
};
use ipnet::Ipv6Net;
use serde_json::{Value, json};

use crate::attacker::{ATTACKER_PREFIX, Attacker, attacker_addr};
use crate::topology::{Daemon, Netns, Topology};
use crate::ula;
use crate::wan::{HostSpec, WAN_SUBNET, Wan, WanConfig};

/// The service's home address.
pub const HOME_ADDRESS: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x4841, 0xaaaa, 0, 0, 0, 0, 1);
/// The port the member servers listen on.
pub const SERVICE_PORT: u16 = 8080;
/// The AP's and members' tunnel port.
pub const TUNNEL_PORT: u16 = 4790;
/// The registration key of the test service.
pub const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// How long a daemon may take to come up.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the workspace's binaries are: `$HOMEADDR_BIN_DIR`, else the
/// directory of the running test executable's parent (`target/<profile>`).
pub fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("HOMEADDR_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe()?;
            let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
            if dir.ends_with("deps") || dir.ends_with("examples") {
                dir.pop();
            }
            dir
        }
    };
    let path = dir.join(name);
    if path.exists() {
        Ok(path)
    } else {
        anyhow::bail!(
            "{} not found: build the daemons first (cargo build --workspace --bins) or set HOMEADDR_BIN_DIR",
            path.display()
        )
    }
}

/// One host of the service.
#[derive(Debug)]
pub struct Host {
    /// Name on the WAN (and role of the namespace).
    pub name: String,
    /// Its namespace.
    pub ns: Netns,
    /// Its WAN address.
    pub addr: Ipv6Addr,
    /// Its homeaddr daemon, if any.
    pub daemon: Option<Daemon>,
    /// Other processes (the member's server).
    pub extra: Vec<Daemon>,
    /// The daemon's control socket.
    pub control: PathBuf,
}

impl Host {
    /// Send one control request to the host's daemon.
    pub fn control(&self, request: Request) -> Result<Response, ClientError> {
        call_blocking(&self.control, &request)
    }

    /// [`Host::control`], expecting the result type `T` (e.g. [`Status`]).
    pub fn ask<T>(&self, request: Request) -> Result<T, ClientError>
    where
        T: TryFrom<Response, Error = UnexpectedResponse>,
    {
        Ok(T::try_from(self.control(request)?)?)
    }

    /// The daemon's `status` as its JSON (for reads by JSON pointer), or
    /// `{"error": ...}` when it cannot be had.
    pub fn status(&self) -> Value {
        status_at(&self.control)
    }

    /// The daemon, which must exist.
    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("host runs a daemon")
    }
}

/// The `status` of the daemon whose control socket is `path`, as its JSON
/// (for reads by JSON pointer), or `{"error": ...}` when it cannot be had.
pub fn status_at(path: &Path) -> Value {
    let status = call_blocking(path, &Request::Status)
        .map_err(|e| e.to_string())
        .and_then(|r| Status::try_from(r).map_err(|e| e.to_string()));
    match status {
        Ok(s) => serde_json::to_value(s).unwrap_or_else(|e| json!({"error": e.to_string()})),
        Err(e) => json!({ "error": e }),
    }
}

/// One control request through the one client (`homeaddr_control`), its
/// answer as JSON.
pub fn control_call(path: &Path, request: &Request) -> Result<Value, ClientError> {
    let answer = call_blocking(path, request)?;
    serde_json::to_value(answer).map_err(|e| ClientError::BadAnswer(e.to_string()))
}

/// The service.
#[derive(Debug)]
pub struct Service {
    /// The WAN emulator (dropped first).
    pub wan: Wan,
    /// The access point host.
    pub ap: Host,
    /// Members by id.
    pub members: BTreeMap<u16, Host>,
    /// Clients, in creation order (shim clients run `homeaddr-shim`).
    pub clients: Vec<Host>,
    next_host: u16,
    /// The namespaces (dropped last).
    pub topo: Topology,
}

/// Arguments common to every daemon of the service: the log level
/// (`$HOMEADDR_TEST_LOG`, default `info`).
pub fn log_args() -> Vec<String> {
    vec![
        "--log-level".into(),
        std::env::var("HOMEADDR_TEST_LOG").unwrap_or_else(|_| "info".into()),
    ]
}

/// The flags of a `homeaddr-ap` serving `home_address` with the service's
/// [`KEY`], listening on `listen`, with its control socket at `control`.
pub fn ap_args(home_address: Ipv6Addr, listen: SocketAddr, control: &Path) -> Vec<String> {
    vec![
        "--home-address".into(),
        home_address.to_string(),
        "--key".into(),
        KEY.into(),
        "--listen".into(),
        listen.to_string(),
        "--control".into(),
        control.display().to_string(),
    ]
}

/// The flags of a `homeaddr-member --id id` serving [`HOME_ADDRESS`] at
/// `care_of`, registering with `key` with every one of `access_points`
/// (`--access-point` once per AP), its control socket at `control`.
pub fn member_args(
    id: u16,
    access_points: &[SocketAddr],
    care_of: SocketAddr,
    key: &str,
    control: &Path,
) -> Vec<String> {
    let mut args = vec![
        "--id".into(),
        id.to_string(),
        "--home-address".into(),
        HOME_ADDRESS.to_string(),
    ];
    for ap in access_points {
        args.extend(["--access-point".into(), ap.to_string()]);
    }
    args.extend([
        "--care-of".into(),
        care_of.to_string(),
        "--key".into(),
        key.into(),
        "--control".into(),
        control.display().to_string(),
    ]);
    args
}

/// Starts member `id`'s server in `ns`: `homeaddr-testapp serve` on
/// `[::]:`[`SERVICE_PORT`] answering `WHO` with `member<id>`; returns once
/// it listens.
pub fn member_server(ns: &Netns, id: u16) -> anyhow::Result<Daemon> {
    let server = ns.spawn(
        &format!("server-{id}"),
        &bin("homeaddr-testapp")?,
        &[
            "serve".to_string(),
            "--bind".into(),
            format!("[::]:{SERVICE_PORT}"),
            "--name".into(),
            format!("member{id}"),
        ],
    )?;
    server.wait_for_output("listening on", START_TIMEOUT)?;
    Ok(server)
}

/// Starts `program` as `name` in `ns` with `args`, the log flags and the
/// caller's `flags`, and waits until it logs `ready`.
pub fn start_daemon(
    ns: &Netns,
    name: &str,
    program: &str,
    mut args: Vec<String>,
    flags: &[&str],
    ready: &str,
) -> anyhow::Result<Daemon> {
    args.extend(log_args());
    args.extend(flags.iter().map(|s| s.to_string()));
    let daemon = ns.spawn(name, &bin(program)?, &args)?;
    daemon.wait_for_output(ready, START_TIMEOUT)?;
    Ok(daemon)
}

impl Service {
    /// Namespaces, the WAN emulator and a running access point.
    pub fn start(tag: &str) -> anyhow::Result<Self> {
        Self::start_with(tag, &[])
    }

    /// As [`Service::start`], with extra flags for `homeaddr-ap`.
    pub fn start_with(tag: &str, ap_flags: &[&str]) -> anyhow::Result<Self> {
        let topo = Topology::new(tag)?;
        let wan = Wan::start(WanConfig::default())?;
        let ap_ns = topo.add_netns("ap")?;
        let mut service = Self {
            wan,
            ap: Host {
                name: "ap".into(),
                ns: ap_ns,
                addr: ula(WAN_SUBNET, 1),
                daemon: None,
                extra: Vec::new(),
                control: PathBuf::new(),
            },
            members: BTreeMap::new(),
            clients: Vec::new(),
            next_host: 2,
            topo,
        };
        service.attach("ap", service.ap.ns.name(), service.ap.addr)?;
        service
            .wan
            .add_prefix("ap", Ipv6Net::new(HOME_ADDRESS, 128).expect("/128"))?;
        let control = service.topo.dir().join("ap.sock");
        let listen = SocketAddr::new(service.ap.addr.into(), TUNNEL_PORT);
        let args = ap_args(HOME_ADDRESS, listen, &control);
        let daemon = start_daemon(
            &service.ap.ns,
            "homeaddr-ap",
            "homeaddr-ap",
            args,
            ap_flags,
            "access point up",
        )?;
        service.ap.daemon = Some(daemon);
        service.ap.control = control;
        Ok(service)
    }

    fn attach(&self, name: &str, ns: &str, addr: Ipv6Addr) -> anyhow::Result<()> {
        self.wan.attach(&HostSpec::new(name, ns, addr))?;
        Ok(())
    }

    fn new_host(&mut self, name: &str) -> anyhow::Result<Host> {
        let ns = self.topo.add_netns(name)?;
        let addr = ula(WAN_SUBNET, self.next_host);
        self.next_host += 1;
        self.attach(name, ns.name(), addr)?;
        let control = self.topo.dir().join(format!("{name}.sock"));
        Ok(Host {
            name: name.into(),
            ns,
            addr,
            daemon: None,
            extra: Vec::new(),
            control,
        })
    }

    /// The AP's tunnel endpoint.
    pub fn ap_endpoint(&self) -> SocketAddr {
        SocketAddr::new(self.ap.addr.into(), TUNNEL_PORT)
    }

    /// The service endpoint clients connect to.
    pub fn service_endpoint(&self) -> SocketAddr {
        SocketAddr::new(HOME_ADDRESS.into(), SERVICE_PORT)
    }

    /// The flags of a `homeaddr-member --id id` of this service at
    /// `care_of`, registering with `key`, its control socket at `control`.
    pub fn member_args(
        &self,
        id: u16,
        care_of: SocketAddr,
        key: &str,
        control: &Path,
    ) -> Vec<String> {
        member_args(id, &[self.ap_endpoint()], care_of, key, control)
    }

    /// Start member `id` (daemon and server) and wait until it is registered.
    pub fn add_member(&mut self, id: u16, flags: &[&str]) -> anyhow::Result<&Host> {
        let name = format!("m{id}");
        let mut host = self.new_host(&name)?;
        let care_of = SocketAddr::new(host.addr.into(), TUNNEL_PORT);
        let args = self.member_args(id, care_of, KEY, &host.control);
        let daemon = start_daemon(
            &host.ns,
            &format!("homeaddr-member-{id}"),
            "homeaddr-member",
            args,
            flags,
            "registered with the access point",
        )?;
        host.daemon = Some(daemon);
        host.extra.push(member_server(&host.ns, id)?);
        self.members.insert(id, host);
        Ok(&self.members[&id])
    }

    /// Add a client; with `shim`, run `homeaddr-shim` on it. Returns its index.
    pub fn add_client(&mut self, shim: bool, flags: &[&str]) -> anyhow::Result<usize> {
        let name = format!("c{}", self.clients.len());
        let mut host = self.new_host(&name)?;
        if shim {
            let mut args: Vec<String> = vec!["--home-address".into(), HOME_ADDRESS.to_string()];
            // With --dns-server the shim discovers the AP itself.
            if !flags.contains(&"--dns-server") {
                args.extend(["--access-point".into(), self.ap_endpoint().to_string()]);
            }
            args.extend([
                "--local".into(),
                format!("[{}]:0", host.addr),
                "--control".into(),
                host.control.display().to_string(),
            ]);
            let daemon = start_daemon(
                &host.ns,
                &format!("homeaddr-shim-{name}"),
                "homeaddr-shim",
                args,
                flags,
                "shim up",
            )?;
            host.daemon = Some(daemon);
        }
        self.clients.push(host);
        Ok(self.clients.len() - 1)
    }

    /// Add the off-path attacker host "x" (see [`crate::attacker`]): a
    /// namespace on the WAN with address `fd00:4841:bad::1` and the whole
    /// [`ATTACKER_PREFIX`] routed to it, no daemon. The WAN delivers it only
    /// what is addressed to that prefix.
    pub fn add_attacker(&mut self) -> anyhow::Result<Attacker> {
        let ns = self.topo.add_netns("x")?;
        let prefix: Ipv6Net = ATTACKER_PREFIX.parse()?;
        let addr = attacker_addr(1);
        self.wan
            .attach(&HostSpec::new("x", ns.name(), addr).with_prefix(prefix))?;
        Ok(Attacker { ns, addr, prefix })
    }

    /// A bare host on the WAN named `name`: a namespace with the next WAN
    /// address and no daemon; the caller starts what it needs there (the
    /// demo's second site, name server and resolver).
    pub fn add_host(&mut self, name: &str) -> anyhow::Result<Host> {
        self.new_host(name)
    }

    /// Set the one-way latency between two hosts (by WAN name: "ap", "m1", "c0").
    pub fn set_latency(&self, a: &str, b: &str, one_way: Duration) -> anyhow::Result<()> {
        Ok(self.wan.set_latency(a, b, one_way)?)
    }

    /// Give member `id` a new WAN address and move its care-of endpoint
    /// there (make before break: the old address stays until `retire_old`).
    pub fn move_member(&mut self, id: u16) -> anyhow::Result<(Ipv6Addr, Ipv6Addr)> {
        let new = ula(WAN_SUBNET, self.next_host);
        self.next_host += 1;
        let host = self.members.get_mut(&id).expect("member exists");
        let old = host.addr;
        host.ns.add_addr("wan0", new, 128)?;
        self.wan
            .add_prefix(&host.name, Ipv6Net::new(new, 128).expect("/128"))?;
        host.control(Request::Move {
            care_of: SocketAddr::new(new.into(), TUNNEL_PORT),
        })?;
        host.addr = new;
        Ok((old, new))
    }

    /// Stop routing a member's old address.
    pub fn retire_address(&self, addr: Ipv6Addr) {
        self.wan
            .remove_prefix(Ipv6Net::new(addr, 128).expect("/128"));
    }

    /// The member the AP lists with `id`.
    pub fn ap_member(&self, id: u16) -> Option<MemberRow> {
        let members: Vec<MemberRow> = self.ap.ask(Request::Members).ok()?;
        members.into_iter().find(|m| m.id == id)
    }
}

impl Drop for Service {
    /// Members leave while the WAN still carries their deregistration:
    /// otherwise each one waits for an answer that cannot come and is
    /// killed after the stop grace (2 s per member).
    fn drop(&mut self) {
        for host in self.members.values() {
            if host.daemon.as_ref().is_some_and(|d| d.is_running()) {
                let _ = host.control(Request::Leave);
            }
        }
        for host in self.members.values() {
            if let Some(d) = host.daemon.as_ref() {
                let _ = d.wait_timeout(Duration::from_secs(3));
            }
        }
    }
}
