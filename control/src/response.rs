//! What a daemon answers: one typed result per request, with typed rows.
//!
//! Field names are the wire's: renaming one is a compile error in every
//! reader. Seconds are `f64` fields named `*_s`; addresses are written as
//! text (`"[fd00::2]:4790"`, `"fd00::9"`).

use std::collections::BTreeMap;
use std::net::{Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Request;

/// Drop counters by reason name (`"spoofed_source"`, ...).
pub type Drops = BTreeMap<String, u64>;

/// The answer to a [`Request`]; on the wire, just its payload (the
/// request says which variant it is: [`Response::decode`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum Response {
    /// `status`.
    Status(Box<Status>),
    /// `metrics`: Prometheus text.
    Metrics(String),
    /// `members` (AP).
    Members(Vec<MemberRow>),
    /// `flows` (AP).
    Flows(FlowTable),
    /// `drain` with a member (AP).
    MemberDrained(MemberDrained),
    /// `undrain` with a member (AP).
    MemberActive(MemberActive),
    /// `weight` (AP).
    WeightSet(WeightSet),
    /// `remove` (AP).
    MemberRemoved(MemberRemoved),
    /// `reload` (AP).
    Reloaded(Reloaded),
    /// `drain` / `undrain` without a member (member).
    Draining(Draining),
    /// `move` (member).
    Moved(Moved),
    /// `leave` (member).
    Leaving(Leaving),
}

impl Response {
    /// Read the `result` of an answer to `request`.
    pub fn decode(request: &Request, result: Value) -> Result<Self, serde_json::Error> {
        use serde_json::from_value as from;
        Ok(match request {
            Request::Status => Self::Status(Box::new(from(result)?)),
            Request::Metrics => Self::Metrics(from(result)?),
            Request::Members => Self::Members(from(result)?),
            Request::Flows { .. } => Self::Flows(from(result)?),
            Request::Drain {
                member: Some(_), ..
            } => Self::MemberDrained(from(result)?),
            Request::Undrain { member: Some(_) } => Self::MemberActive(from(result)?),
            Request::Drain { member: None, .. } | Request::Undrain { member: None } => {
                Self::Draining(from(result)?)
            }
            Request::Weight { .. } => Self::WeightSet(from(result)?),
            Request::Remove { .. } => Self::MemberRemoved(from(result)?),
            Request::Reload => Self::Reloaded(from(result)?),
            Request::Move { .. } => Self::Moved(from(result)?),
            Request::Leave => Self::Leaving(from(result)?),
        })
    }
}

/// A [`Response`] that was not the variant the caller expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the daemon answered with an unexpected kind of result: {0:?}")]
pub struct UnexpectedResponse(pub Box<Response>);

macro_rules! payload {
    ($($variant:ident => $ty:ty),* $(,)?) => {$(
        impl TryFrom<Response> for $ty {
            type Error = UnexpectedResponse;
            fn try_from(r: Response) -> Result<Self, Self::Error> {
                match r {
                    Response::$variant(v) => Ok(v.into()),
                    other => Err(UnexpectedResponse(Box::new(other))),
                }
            }
        }
    )*};
}

payload! {
    Status => Status,
    Metrics => String,
    Members => Vec<MemberRow>,
    Flows => FlowTable,
    MemberDrained => MemberDrained,
    MemberActive => MemberActive,
    WeightSet => WeightSet,
    MemberRemoved => MemberRemoved,
    Reloaded => Reloaded,
    Draining => Draining,
    Moved => Moved,
    Leaving => Leaving,
}

impl From<Box<Status>> for Status {
    fn from(s: Box<Status>) -> Self {
        *s
    }
}

/// A daemon's state, by role (`"role"` on the wire).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role")]
pub enum Status {
    /// `homeaddr-ap`.
    #[serde(rename = "access-point")]
    AccessPoint(ApStatus),
    /// `homeaddr-member`.
    #[serde(rename = "member")]
    Member(MemberStatus),
    /// `homeaddr-shim`.
    #[serde(rename = "shim")]
    Shim(ShimStatus),
}

impl Status {
    /// The role as the wire names it: "access-point", "member" or "shim".
    pub fn role(&self) -> &'static str {
        match self {
            Self::AccessPoint(_) => "access-point",
            Self::Member(_) => "member",
            Self::Shim(_) => "shim",
        }
    }

    /// The daemon's I/O counters.
    pub fn io(&self) -> &IoStatus {
        match self {
            Self::AccessPoint(s) => &s.io,
            Self::Member(s) => &s.io,
            Self::Shim(s) => &s.io,
        }
    }

    /// The role's engine counters, as their JSON object.
    pub fn counters(&self) -> Value {
        let v = match self {
            Self::AccessPoint(s) => serde_json::to_value(&s.counters),
            Self::Member(s) => serde_json::to_value(&s.counters),
            Self::Shim(s) => serde_json::to_value(&s.counters),
        };
        v.unwrap_or(Value::Null)
    }
}

/// The I/O counters of a daemon's TUN device and tunnel socket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IoStatus {
    /// The TUN device.
    pub tun: TunIo,
    /// The UDP tunnel socket in use.
    pub udp: UdpIo,
    /// Busy polling after traffic (absent from daemons that predate it).
    #[serde(default)]
    pub busy_poll: BusyPollIo,
}

/// Busy polling after traffic: the window and how often it paid.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BusyPollIo {
    /// The window after traffic, microseconds (0: off).
    pub window_us: u64,
    /// Windows opened: traffic that found the daemon asleep.
    pub windows: u64,
    /// Batches that found the daemon polling (no wake-up needed).
    pub hits: u64,
}

/// TUN device counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct TunIo {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_reads: u64,
    pub rx_errors: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// UDP tunnel socket counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct UdpIo {
    pub rx_datagrams: u64,
    pub rx_bytes: u64,
    pub rx_syscalls: u64,
    pub rx_errors: u64,
    pub tx_datagrams: u64,
    pub tx_bytes: u64,
    pub tx_syscalls: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

// ---- access point ----

/// The access point's `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApStatus {
    /// The (primary) home address it owns: the IPv6 one, or the IPv4 one
    /// IPv4-mapped.
    pub home_address: Ipv6Addr,
    /// Its IPv4 home address, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_address_v4: Option<std::net::Ipv4Addr>,
    /// The member table.
    pub members: Vec<MemberRow>,
    /// Shim clients it knows.
    pub shim_clients: Vec<ShimClientRow>,
    /// Flows in the affinity table.
    pub flows: u64,
    /// Digest of the Maglev table's input (member ids and weights, table
    /// size): 16 lowercase hex digits; APs with equal digests give new
    /// clients the same members. Empty from a daemon that predates it.
    #[serde(default)]
    pub table_digest: String,
    /// Still settling after its start: segments of unknown flows are held
    /// back until their members report them.
    #[serde(default)]
    pub settling: bool,
    /// Flows members reported (Flow Reports).
    #[serde(default)]
    pub flows_reported: u64,
    /// Reported flows re-pinned from another member.
    #[serde(default)]
    pub flows_moved: u64,
    /// Engine counters.
    pub counters: ApCounters,
    /// I/O counters.
    pub io: IoStatus,
}

/// Where a member is in its life at the AP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Serving new and established flows.
    Active,
    /// Weight 0: established flows only.
    Draining,
    /// No refresh in time: removed from Maglev.
    Down,
}

impl MemberState {
    /// The state as the wire and the tables name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Draining => "draining",
            Self::Down => "down",
        }
    }
}

/// One row of the AP's member table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRow {
    /// Member id.
    pub id: u16,
    /// Its registered care-of endpoint.
    pub care_of: SocketAddr,
    /// Active, draining or down.
    pub state: MemberState,
    /// Seconds until a draining member's flows are cut (none: never).
    pub drain_deadline_s: Option<f64>,
    /// Maglev weight in force (0 while draining or down).
    pub weight: u32,
    /// How long this member process has been registered.
    pub registered_s: f64,
    /// Registration lifetime left.
    pub lifetime_left_s: f64,
    /// Shim clients told about the member.
    pub shim_clients: u64,
    /// Flows pinned to it in the affinity table.
    pub flows: u64,
    /// Packets forwarded to it.
    pub packets_to: u64,
    /// Bytes forwarded to it.
    pub bytes_to: u64,
    /// Packets received from it.
    pub packets_from: u64,
    /// Bytes received from it.
    pub bytes_from: u64,
}

/// A shim client the AP knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShimClientRow {
    /// The client's address.
    pub client: Ipv6Addr,
    /// Its shim's tunnel endpoint.
    pub endpoint: SocketAddr,
    /// Members told about it (that route-optimize it).
    pub members: Vec<u16>,
    /// Its flows in the affinity table, per member id (keys are text on the wire).
    #[serde(deserialize_with = "member_keys")]
    pub flows_by_member: BTreeMap<u16, u64>,
    /// Since its last packet.
    pub idle_s: f64,
}

/// A map keyed by member id, whose keys JSON writes as text. (serde_json
/// reads them back as numbers only when not inside a tagged enum such as
/// [`Status`], hence this.)
fn member_keys<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<u16, u64>, D::Error> {
    BTreeMap::<String, u64>::deserialize(d)?
        .into_iter()
        .map(|(k, n)| {
            k.parse()
                .map(|id| (id, n))
                .map_err(|_| serde::de::Error::custom(format!("{k:?} is not a member id")))
        })
        .collect()
}

/// The access point's counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApCounters {
    /// Native packets from legacy clients forwarded to members.
    pub legacy_in: u64,
    /// Answers to legacy clients written into the TUN.
    pub legacy_out: u64,
    /// Tunnelled packets from shims forwarded to members.
    pub shim_in: u64,
    /// Answers tunnelled back to shims.
    pub shim_out: u64,
    /// Home tests relayed (HoTI and HoT).
    pub home_tests_relayed: u64,
    /// Shim Notices sent to members.
    pub notices: u64,
    /// Revocations sent to shims.
    pub revocations: u64,
    /// Registrations accepted, refreshes included.
    pub registrations: u64,
    /// TCP SYNs whose MSS was clamped.
    pub mss_clamped: u64,
    /// Shim records moved to the source of a newer sealed frame (roaming).
    #[serde(default)]
    pub shim_roams: u64,
    /// Drops by reason.
    pub drops: Drops,
}

/// The state of a flow in the AP's affinity table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowState {
    /// TCP: a SYN was seen, the handshake has not completed.
    Opening,
    /// Established TCP, or any non-TCP flow.
    Open,
    /// TCP: a FIN was seen.
    Closing,
}

impl FlowState {
    /// The state as the wire and the tables name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Opening => "opening",
            Self::Open => "open",
            Self::Closing => "closing",
        }
    }
}

/// The AP's `flows`: the largest flows and how many there are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowTable {
    /// Flows in the affinity table.
    pub total: u64,
    /// The largest, by bytes.
    pub flows: Vec<FlowRow>,
}

/// One flow of the AP's affinity table (client -> home address).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowRow {
    /// Client address.
    pub client: Ipv6Addr,
    /// Client port.
    pub client_port: u16,
    /// Service port.
    pub port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// The member it is pinned to.
    pub member: u16,
    /// Opening, open or closing.
    pub state: FlowState,
    /// Packets seen.
    pub packets: u64,
    /// Bytes seen.
    pub bytes: u64,
    /// Since its last packet.
    pub idle_s: f64,
}

/// `drain MEMBER` done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberDrained {
    /// The member now draining.
    pub draining: u16,
}

/// `undrain MEMBER` done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberActive {
    /// The member active again.
    pub active: u16,
}

/// `weight` done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightSet {
    /// The member.
    pub member: u16,
    /// Its new weight.
    pub weight: u32,
}

/// `remove` done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRemoved {
    /// The member removed.
    pub removed: u16,
}

/// `reload` done: what is now in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    /// The file read.
    pub config: String,
    /// Registration keys.
    pub keys: u64,
    /// Log level.
    pub log_level: String,
    /// Per-member policies (weights, drains).
    pub member_policies: u64,
}

// ---- member ----

/// A member's `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Member id.
    pub id: u16,
    /// Its care-of endpoint.
    pub care_of: SocketAddr,
    /// The first access point it registers with (all of them: `aps`).
    pub access_point: SocketAddr,
    /// Registration state over all its APs: registered if any AP
    /// registered it, refused only if every AP refused.
    pub registration: Registration,
    /// Each access point it registers with, in configured order (empty
    /// from a member older than several APs).
    #[serde(default)]
    pub aps: Vec<MemberApRow>,
    /// Legacy flows it serves (tracked and reported to its APs).
    #[serde(default)]
    pub flows: u64,
    /// Whether it drains itself.
    pub draining: bool,
    /// An AP saw it at an endpoint other than its care-of endpoint (the
    /// socket's local one): it is behind a NAT and sends NAT keepalives.
    #[serde(default)]
    pub behind_nat: bool,
    /// It runs with direct server return: its kernel sends legacy
    /// clients' answers natively, past the daemon and the APs.
    #[serde(default)]
    pub direct_return: bool,
    /// Correspondent shims and their bindings.
    pub bindings: Vec<CorrespondentRow>,
    /// Engine counters.
    pub counters: MemberCounters,
    /// I/O counters.
    pub io: IoStatus,
}

/// A member's registration with one of its access points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberApRow {
    /// The AP's tunnel endpoint.
    pub endpoint: SocketAddr,
    /// The registration with it.
    pub state: Registration,
    /// Since its last sealed frame (or registration), if any.
    pub heard_ms_ago: Option<u64>,
    /// Its operator drains the member.
    pub draining: bool,
    /// The member's endpoint as this AP saw it (its last BA 0), if told.
    #[serde(default)]
    pub observed: Option<SocketAddr>,
}

/// A member's registration with an AP, or with all of them (`"state"` on
/// the wire).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Registration {
    /// Not started.
    Idle,
    /// A registration is out, none granted yet.
    Registering,
    /// Registered.
    Registered {
        /// Lifetime left.
        lifetime_left_s: f64,
    },
    /// The AP refused it.
    Refused {
        /// The AP's status code.
        status: u8,
    },
    /// A deregistration is out.
    Deregistering,
    /// Deregistered.
    Left,
}

impl Registration {
    /// The state as the wire names it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Registering => "registering",
            Self::Registered { .. } => "registered",
            Self::Refused { .. } => "refused",
            Self::Deregistering => "deregistering",
            Self::Left => "left",
        }
    }
}

/// A shim client a member talks to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorrespondentRow {
    /// The client's address.
    pub client: Ipv6Addr,
    /// Its shim's endpoint.
    pub shim: SocketAddr,
    /// Return routability progress, as text (e.g. `Idle`, `Testing { attempt: 1 }`).
    pub route_optimization: String,
    /// Whether a binding is in force.
    pub bound: bool,
    /// Lifetime left of the binding, if any.
    pub lifetime_left_s: Option<f64>,
    /// Why there is no binding, when return routability keeps failing
    /// (e.g. "care-of test unanswered (3 tries): NAT without a hole?").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ro: Option<String>,
}

/// A member's counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct MemberCounters {
    pub direct_return: u64,
    pub via_ap_in: u64,
    pub direct_in: u64,
    pub via_ap_out: u64,
    pub direct_out: u64,
    pub registration_bus: u64,
    pub retransmissions: u64,
    pub rr_successes: u64,
    pub rr_failures: u64,
    /// Flow Report messages sent to the APs.
    #[serde(default)]
    pub flow_reports: u64,
    /// Flows reported in them.
    #[serde(default)]
    pub flows_reported: u64,
    /// Zero-nonce hints of a restarted AP acted on.
    #[serde(default)]
    pub ap_hints: u64,
    /// Punches from shims (dropped).
    #[serde(default)]
    pub punches: u64,
    /// NAT keepalives (empty sealed data frames) received.
    #[serde(default)]
    pub keepalives: u64,
    /// NAT keepalives sent.
    #[serde(default)]
    pub nat_keepalives: u64,
    /// Shim endpoints moved (roaming, a Shim Notice of a roamed shim, a CoT
    /// from the punched endpoint).
    #[serde(default)]
    pub roams: u64,
    /// Drops by reason.
    pub drops: Drops,
}

/// `drain` / `undrain` on a member done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draining {
    /// Whether it drains now.
    pub draining: bool,
}

/// `move` done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    /// The new care-of endpoint (the port the OS chose if 0 was asked).
    pub care_of: SocketAddr,
}

/// `leave` accepted: the member deregisters and stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leaving {
    /// Always true.
    pub leaving: bool,
}

// ---- shim ----

/// A shim's `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShimStatus {
    /// The service's home address.
    pub home_address: Ipv6Addr,
    /// The access point in use.
    pub access_point: SocketAddr,
    /// Its tunnel endpoint.
    pub local: SocketAddr,
    /// The inner source address the AP gave it (Shim Welcome), once a
    /// session is up.
    #[serde(default)]
    pub client_address: Option<Ipv6Addr>,
    /// Its endpoint as the AP saw it (Shim Welcome).
    #[serde(default)]
    pub observed: Option<SocketAddr>,
    /// The AP saw another endpoint than `local`: a NAT is in the way.
    #[serde(default)]
    pub behind_nat: bool,
    /// Bindings per member.
    pub bindings: Vec<ShimBindingRow>,
    /// The largest flows (at most 100), by bytes.
    pub flows: Vec<ShimFlowRow>,
    /// Engine counters.
    pub counters: ShimCounters,
    /// I/O counters.
    pub io: IoStatus,
}

/// A member binding at a shim (route optimization in force).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShimBindingRow {
    /// The member.
    pub member: u16,
    /// Its care-of endpoint.
    pub care_of: SocketAddr,
    /// Binding lifetime left.
    pub lifetime_left_s: f64,
    /// Whether the member drains (no new flows there).
    pub draining: bool,
    /// Flows of this shim pinned to the member.
    pub flows: u64,
}

/// Which way a shim's flow goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlowPath {
    /// Straight to the member.
    Direct,
    /// Through the access point.
    AccessPoint,
}

impl FlowPath {
    /// The path as the wire and the tables name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::AccessPoint => "access-point",
        }
    }
}

/// One flow of a shim's flow table (application -> home address).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShimFlowRow {
    /// Local source address.
    pub src: Ipv6Addr,
    /// Local source port.
    pub src_port: u16,
    /// Service port.
    pub dst_port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// The member serving it, once known.
    pub member: Option<u16>,
    /// Direct or through the AP.
    pub path: FlowPath,
    /// Packets sent.
    pub packets_out: u64,
    /// Packets received.
    pub packets_in: u64,
    /// Bytes both ways.
    pub bytes: u64,
}

/// A shim's counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct ShimCounters {
    pub via_ap_out: u64,
    pub direct_out: u64,
    pub via_ap_in: u64,
    pub direct_in: u64,
    pub bus_accepted: u64,
    pub bus_rejected: u64,
    pub tests_answered: u64,
    pub binding_errors: u64,
    pub resets: u64,
    /// Bindings whose care-of endpoint moved (roaming).
    #[serde(default)]
    pub roams: u64,
    /// Welcomes without a Client Address (a new instance was drawn).
    #[serde(default)]
    pub pool_collisions: u64,
    /// Our own moves (the host's address changed).
    #[serde(default)]
    pub moves: u64,
    /// Bindings dropped because their member answered through the AP.
    #[serde(default)]
    pub fallbacks: u64,
    /// Drops by reason.
    pub drops: Drops,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{ControlError, ErrorCode, Reply};
    use serde_json::json;

    fn io() -> IoStatus {
        IoStatus {
            tun: TunIo {
                rx_packets: 3,
                tx_bytes: 9,
                ..TunIo::default()
            },
            udp: UdpIo {
                tx_dropped: 1,
                ..UdpIo::default()
            },
            busy_poll: BusyPollIo {
                window_us: 200,
                windows: 4,
                hits: 40,
            },
        }
    }

    fn member_row() -> MemberRow {
        MemberRow {
            id: 1,
            care_of: "[fd00:4841:ffff::2]:4790".parse().unwrap(),
            state: MemberState::Draining,
            drain_deadline_s: Some(119.5),
            weight: 0,
            registered_s: 0.25,
            lifetime_left_s: 59.5,
            shim_clients: 0,
            flows: 2,
            packets_to: 11,
            bytes_to: 827,
            packets_from: 8,
            bytes_from: 614,
        }
    }

    fn ap_status() -> Status {
        Status::AccessPoint(ApStatus {
            home_address: "fd00:4841:aaaa::1".parse().unwrap(),
            home_address_v4: Some("198.19.0.1".parse().unwrap()),
            members: vec![member_row()],
            shim_clients: vec![ShimClientRow {
                client: "fd00::9".parse().unwrap(),
                endpoint: "[fd00::9]:5000".parse().unwrap(),
                members: vec![1],
                flows_by_member: [(1, 2)].into(),
                idle_s: 0.5,
            }],
            flows: 2,
            table_digest: "0123456789abcdef".into(),
            settling: false,
            flows_reported: 3,
            flows_moved: 1,
            counters: ApCounters {
                legacy_in: 4,
                drops: [("spoofed_source".to_string(), 2)].into(),
                ..ApCounters::default()
            },
            io: io(),
        })
    }

    fn member_status() -> Status {
        Status::Member(MemberStatus {
            id: 2,
            care_of: "[fd00::3]:4790".parse().unwrap(),
            access_point: "[fd00::1]:4790".parse().unwrap(),
            registration: Registration::Registered {
                lifetime_left_s: 60.0,
            },
            aps: vec![
                MemberApRow {
                    endpoint: "[fd00::1]:4790".parse().unwrap(),
                    state: Registration::Registered {
                        lifetime_left_s: 60.0,
                    },
                    heard_ms_ago: Some(250),
                    draining: false,
                    observed: Some("198.18.0.9:31000".parse().unwrap()),
                },
                MemberApRow {
                    endpoint: "[fd00::11]:4790".parse().unwrap(),
                    state: Registration::Refused { status: 129 },
                    heard_ms_ago: None,
                    draining: false,
                    observed: None,
                },
            ],
            flows: 3,
            draining: false,
            behind_nat: true,
            direct_return: false,
            bindings: vec![CorrespondentRow {
                client: "fd00::9".parse().unwrap(),
                shim: "[fd00::9]:5000".parse().unwrap(),
                route_optimization: "Testing { attempt: 1 }".into(),
                bound: false,
                lifetime_left_s: None,
                ro: Some("care-of test unanswered (3 tries): NAT without a hole?".into()),
            }],
            counters: MemberCounters {
                retransmissions: 1,
                ..MemberCounters::default()
            },
            io: io(),
        })
    }

    fn shim_status() -> Status {
        Status::Shim(ShimStatus {
            home_address: "fd00:4841:aaaa::1".parse().unwrap(),
            access_point: "[fd00::1]:4790".parse().unwrap(),
            local: "[fd00::9]:5000".parse().unwrap(),
            client_address: Some("fd00:4841:cccc::9".parse().unwrap()),
            observed: Some("198.18.0.10:40000".parse().unwrap()),
            behind_nat: true,
            bindings: vec![ShimBindingRow {
                member: 1,
                care_of: "[fd00::2]:4790".parse().unwrap(),
                lifetime_left_s: 30.0,
                draining: true,
                flows: 1,
            }],
            flows: vec![ShimFlowRow {
                src: "fd00::9".parse().unwrap(),
                src_port: 40000,
                dst_port: 8080,
                proto: 6,
                member: None,
                path: FlowPath::AccessPoint,
                packets_out: 5,
                packets_in: 4,
                bytes: 900,
            }],
            counters: ShimCounters::default(),
            io: io(),
        })
    }

    /// Every kind of answer with a request it answers.
    pub(crate) fn every_answer() -> Vec<(Request, Response)> {
        let care_of: SocketAddr = "[2001:db8::7]:4790".parse().unwrap();
        vec![
            (Request::Status, Response::Status(Box::new(ap_status()))),
            (Request::Status, Response::Status(Box::new(member_status()))),
            (Request::Status, Response::Status(Box::new(shim_status()))),
            (Request::Metrics, Response::Metrics("up 1\n".into())),
            (Request::Members, Response::Members(vec![member_row()])),
            (
                Request::Flows { top: 1 },
                Response::Flows(FlowTable {
                    total: 7,
                    flows: vec![FlowRow {
                        client: "fd00::8".parse().unwrap(),
                        client_port: 1234,
                        port: 8080,
                        proto: 17,
                        member: 2,
                        state: FlowState::Closing,
                        packets: 3,
                        bytes: 100,
                        idle_s: 1.5,
                    }],
                }),
            ),
            (
                Request::Drain {
                    member: Some(2),
                    deadline_s: None,
                },
                Response::MemberDrained(MemberDrained { draining: 2 }),
            ),
            (
                Request::Undrain { member: Some(2) },
                Response::MemberActive(MemberActive { active: 2 }),
            ),
            (
                Request::Weight {
                    member: 2,
                    weight: 5,
                },
                Response::WeightSet(WeightSet {
                    member: 2,
                    weight: 5,
                }),
            ),
            (
                Request::Remove { member: 2 },
                Response::MemberRemoved(MemberRemoved { removed: 2 }),
            ),
            (
                Request::Reload,
                Response::Reloaded(Reloaded {
                    config: "/etc/homeaddr/ap.toml".into(),
                    keys: 1,
                    log_level: "info".into(),
                    member_policies: 2,
                }),
            ),
            (
                Request::Drain {
                    member: None,
                    deadline_s: None,
                },
                Response::Draining(Draining { draining: true }),
            ),
            (
                Request::Undrain { member: None },
                Response::Draining(Draining { draining: false }),
            ),
            (
                Request::Move { care_of },
                Response::Moved(Moved { care_of }),
            ),
            (Request::Leave, Response::Leaving(Leaving { leaving: true })),
        ]
    }

    #[test]
    fn every_answer_round_trips_through_its_reply_line() {
        for (request, response) in every_answer() {
            let line = Reply::new(Ok(response.clone())).to_line();
            assert!(line.starts_with(r#"{"ok":true,"result":"#), "{line}");
            assert!(line.ends_with(r#","v":1}"#), "{line}");
            let reply: Reply = serde_json::from_str(&line).unwrap();
            assert_eq!(reply.outcome(&request).unwrap(), Ok(response), "{line}");
        }
    }

    #[test]
    fn an_error_reply_carries_its_code() {
        let e = ControlError::new(ErrorCode::UnknownMember, "unknown member m9");
        let line = Reply::new(Err(e.clone())).to_line();
        assert_eq!(
            line,
            r#"{"code":"unknown_member","error":"unknown member m9","ok":false,"v":1}"#
        );
        let reply: Reply = serde_json::from_str(&line).unwrap();
        assert_eq!(reply.outcome(&Request::Status).unwrap(), Err(e));
        // A daemon from before codes and versions; a code from a newer one.
        let old: Reply = serde_json::from_str(r#"{"ok":false,"error":"no"}"#).unwrap();
        assert_eq!(old.v, 1);
        assert_eq!(
            old.outcome(&Request::Status).unwrap().unwrap_err().code,
            ErrorCode::Other
        );
        let newer: Reply =
            serde_json::from_str(r#"{"v":1,"ok":false,"code":"quota","error":"no"}"#).unwrap();
        assert_eq!(newer.code, Some(ErrorCode::Other));
    }

    #[test]
    fn the_documented_wire_fields_read_into_the_rows() {
        // docs/OPERATING.md, `homeaddr-ctl members --json`, and a member's status.
        let row: MemberRow = serde_json::from_value(json!({
            "bytes_from": 614, "bytes_to": 827, "care_of": "[fd00:4841:ffff::2]:4790",
            "drain_deadline_s": 119.997533394, "flows": 2, "id": 1, "lifetime_left_s": 59.998130185,
            "packets_from": 8, "packets_to": 11, "registered_s": 0.330360296, "shim_clients": 0,
            "state": "draining", "weight": 0
        }))
        .unwrap();
        assert_eq!(row.state, MemberState::Draining);
        assert_eq!(row.bytes_from, 614);
        let active: MemberRow = serde_json::from_value(json!({
            "bytes_from": 0, "bytes_to": 0, "care_of": "[fd00::2]:4790", "drain_deadline_s": null,
            "flows": 0, "id": 4, "lifetime_left_s": 59.9, "packets_from": 0, "packets_to": 0,
            "registered_s": 0.1, "shim_clients": 0, "state": "active", "weight": 100
        }))
        .unwrap();
        assert_eq!(active.drain_deadline_s, None);
        let v = serde_json::to_value(member_status()).unwrap();
        assert_eq!(v["role"], "member");
        assert_eq!(
            v["registration"],
            json!({"state": "registered", "lifetime_left_s": 60.0})
        );
        assert_eq!(v["bindings"][0]["lifetime_left_s"], Value::Null);
        let v = serde_json::to_value(ap_status()).unwrap();
        assert_eq!(v["role"], "access-point");
        assert_eq!(v["shim_clients"][0]["flows_by_member"], json!({"1": 2}));
        assert_eq!(v["counters"]["drops"]["spoofed_source"], 2);
        assert_eq!(v["io"]["tun"]["rx_packets"], 3);
        assert_eq!(
            v["io"]["busy_poll"],
            json!({"window_us": 200, "windows": 4, "hits": 40})
        );
        assert_eq!(v["table_digest"], "0123456789abcdef");
        assert_eq!(
            (&v["settling"], &v["flows_reported"], &v["flows_moved"]),
            (&json!(false), &json!(3), &json!(1))
        );
        // An AP from before several APs per home address: the new fields
        // read as empty.
        let mut old = v.clone();
        for field in ["table_digest", "settling", "flows_reported", "flows_moved"] {
            old.as_object_mut().unwrap().remove(field);
        }
        // ... and from before busy polling: none.
        old["io"].as_object_mut().unwrap().remove("busy_poll");
        let Status::AccessPoint(old) = serde_json::from_value(old).unwrap() else {
            panic!("an AP status");
        };
        assert_eq!((old.table_digest.as_str(), old.settling), ("", false));
        assert_eq!(old.io.busy_poll, BusyPollIo::default());
        let v = serde_json::to_value(shim_status()).unwrap();
        assert_eq!(v["flows"][0]["path"], "access-point");
        assert_eq!(v["flows"][0]["member"], Value::Null);
    }

    #[test]
    fn a_result_of_the_wrong_kind_is_an_error() {
        let r = Response::Metrics("x".into());
        assert!(Vec::<MemberRow>::try_from(r.clone()).is_err());
        assert_eq!(String::try_from(r), Ok("x".to_string()));
        assert!(Response::decode(&Request::Members, json!({"total": 1})).is_err());
    }
}
