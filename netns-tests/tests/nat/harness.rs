//! The lab's plain kernel NAT, without any homeaddr daemon: what the other
//! tests rely on.

use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use homeaddr_netns_tests::natlab::{AP4, HOA4, Lab, LabConfig, NatOptions, Site};

use crate::common::heavy_test;

/// A UDP echo server on `sock` that answers every datagram with the
/// sender's endpoint as text, until 30 s without one.
fn echo_observed(sock: UdpSocket) {
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 64];
    while let Ok((_, from)) = sock.recv_from(&mut buf) {
        let _ = sock.send_to(from.to_string().as_bytes(), from);
    }
}

/// Sends one datagram from `sock` to `server`; the endpoint it saw.
fn observed(sock: &UdpSocket, server: SocketAddr) -> SocketAddrV4 {
    sock.send_to(b"x", server).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = sock.recv_from(&mut buf).expect("an echo through the NAT");
    std::str::from_utf8(&buf[..n]).unwrap().parse().unwrap()
}

/// UDP and TCP from behind the masquerade to a public host; `random`
/// mappings; `conntrack -F` gives the flow a new mapped port; deleting and
/// re-adding the nft table keeps it; a UDP timeout of 2 s forgets an idle
/// mapping. Needs `nft` and `conntrack`.
#[test]
fn plain_kernel_nat_in_namespaces() {
    let Some(_guard) = heavy_test() else { return };
    let mut lab = Lab::new("natplain", LabConfig::default()).expect("lab");
    let n = lab
        .add_nat(NatOptions {
            random: true,
            udp_timeouts: None,
            ..NatOptions::default()
        })
        .expect("NAT router (needs nft)");
    let inside = lab.add_host("in", Site::Nat(n)).expect("inside host");
    let public = lab.add_host("pub", Site::Public).expect("public host");
    let nat = lab.nat(n);
    let server = SocketAddr::new(public.v4.into(), 5000);
    let sock = public
        .host
        .ns
        .enter(|| UdpSocket::bind(server))
        .unwrap()
        .unwrap();
    // Detached: it ends by itself 30 s after the last datagram.
    std::thread::spawn(move || echo_observed(sock));

    let local = SocketAddrV4::new(inside.v4, 4000);
    let client = inside
        .host
        .ns
        .enter(|| UdpSocket::bind(local))
        .unwrap()
        .unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let first = observed(&client, server);
    println!("UDP {local} -> {server} seen from {first}");
    assert_eq!(
        *first.ip(),
        nat.outside,
        "masqueraded to the outside address"
    );
    let remote = SocketAddrV4::new(public.v4, 5000);
    assert_eq!(nat.mapping_of(local, remote), Some(first), "{}", nat.dump());

    nat.flush().expect("conntrack -F");
    assert_eq!(
        nat.mapping_of(local, remote),
        None,
        "flushed: {}",
        nat.dump()
    );
    let second = observed(&client, server);
    println!("after conntrack -F: seen from {second}");
    assert_ne!(
        first.port(),
        second.port(),
        "random: a new mapping, a new port"
    );

    nat.reload_table().expect("nft table reload");
    let third = observed(&client, server);
    println!("after deleting and re-adding the nft table: seen from {third}");
    assert_eq!(
        second, third,
        "a table reload keeps existing conntrack mappings (it is no flush)"
    );

    nat.set_udp_timeouts(2, 2).expect("UDP timeouts");
    let _ = observed(&client, server);
    let idle = Instant::now();
    lab.wait(
        "the idle mapping to expire (UDP timeout 2 s)",
        Duration::from_secs(10),
        || nat.mapping_of(local, remote).is_none(),
    )
    .unwrap();
    println!(
        "idle UDP mapping gone after {} ms",
        idle.elapsed().as_millis()
    );
    let fourth = observed(&client, server);
    assert_ne!(
        third.port(),
        fourth.port(),
        "an expired mapping comes back elsewhere"
    );

    // TCP through the masquerade.
    let listen = SocketAddr::new(public.v4.into(), 5001);
    let listener = public
        .host
        .ns
        .enter(|| TcpListener::bind(listen))
        .unwrap()
        .unwrap();
    let accept = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        s.write_all(b"ok").unwrap();
        peer
    });
    let mut stream = inside
        .host
        .ns
        .enter(|| TcpStream::connect_timeout(&listen, Duration::from_secs(5)))
        .unwrap()
        .expect("TCP through the NAT");
    let mut buf = [0u8; 2];
    stream.read_exact(&mut buf).unwrap();
    let peer = accept.join().unwrap();
    println!("TCP from {} seen from {peer}", inside.v4);
    assert_eq!(peer.ip(), std::net::IpAddr::from(nat.outside));

    // The home addresses are routed to the AP host.
    let route = nat.ns.ip(&format!("-4 route get {HOA4}")).unwrap();
    assert!(route.contains(&format!("via {AP4}")), "{route}");
}
