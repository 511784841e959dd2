//! Helpers shared by the namespace tests of the infrastructure itself.

#![allow(dead_code)] // each test file uses a different subset

use std::net::{Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use homeaddr_netns_tests::wan::{HostSpec, WAN_SUBNET, Wan, WanConfig};
use homeaddr_netns_tests::{Netns, Topology, require_root, ula};

/// Whether namespace `name` still exists (mount point or `ip netns list`).
pub fn netns_exists(name: &str) -> bool {
    if Path::new("/run/netns").join(name).exists() {
        return true;
    }
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

/// Two hosts `a` and `b` joined only by the WAN emulator.
///
/// Field order matters: the emulator (holding TUN fds in the namespaces)
/// is dropped before the topology deletes them.
pub struct WanBed {
    pub wan: Wan,
    pub a: Netns,
    pub b: Netns,
    pub topo: Topology,
}

pub const A_WAN: Ipv6Addr = wan_addr(1);
pub const B_WAN: Ipv6Addr = wan_addr(2);

pub const fn wan_addr(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x4841, WAN_SUBNET, 0, 0, 0, 0, n)
}

pub fn wan_bed(tag: &str, config: WanConfig) -> WanBed {
    let topo = Topology::new(tag).expect("topology");
    let a = topo.add_netns("a").expect("netns a");
    let b = topo.add_netns("b").expect("netns b");
    let wan = Wan::start(config).expect("wan starts");
    assert_eq!(ula(WAN_SUBNET, 1), A_WAN);
    wan.attach(&HostSpec::new("a", a.name(), A_WAN))
        .expect("attach a");
    wan.attach(&HostSpec::new("b", b.name(), B_WAN))
        .expect("attach b");
    WanBed { wan, a, b, topo }
}

pub fn sock(addr: Ipv6Addr, port: u16) -> SocketAddr {
    SocketAddr::new(addr.into(), port)
}

pub const SECOND: Duration = Duration::from_secs(1);

/// Path of the testapp binary built for these tests.
pub const TESTAPP: &str = env!("CARGO_BIN_EXE_homeaddr-testapp");
/// Path of the WAN emulator binary.
pub const WAN_BIN: &str = env!("CARGO_BIN_EXE_homeaddr-wan");

/// Tests that measure timing hold this shared; tests that load both cores
/// (bulk transfers) hold it exclusively, so that the two never overlap
/// inside one test binary (cargo runs the tests of a binary in parallel).
static CPU_LOAD: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// The running test's name: libtest names the thread of each test after it.
fn test_name() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_string(),
        _ => "namespace test".to_string(),
    }
}

/// A timing-sensitive namespace test: `None` when it must skip (see
/// `require_root`), else the shared side of the CPU-load lock.
pub fn timing_test() -> Option<std::sync::RwLockReadGuard<'static, ()>> {
    require_root(&test_name()).then(|| {
        CPU_LOAD
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    })
}

/// A namespace test that saturates the CPU: `None` when it must skip,
/// else the exclusive side of the CPU-load lock.
pub fn heavy_test() -> Option<std::sync::RwLockWriteGuard<'static, ()>> {
    require_root(&test_name()).then(|| {
        CPU_LOAD
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    })
}
