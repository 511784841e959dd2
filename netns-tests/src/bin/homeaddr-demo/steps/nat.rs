//! Step 8: today's Internet. In namespaces of their own (the NAT lab,
//! `natlab`: kernel forwarding, no WAN emulator): the access point on an
//! IPv4 "internet" segment with an IPv6 and an IPv4 home address, member 1
//! on that segment, member 2 behind a NAT router, and behind another NAT
//! router (nftables masquerade, the real Linux NAT) two IPv4-only clients:
//! a legacy one and one with the shim for the IPv4 home address. The
//! legacy client is served through the access point; the shim's first
//! connection too, then its member route-optimizes it and the download
//! goes direct through both NATs' mappings, with its SHA-256 checked and
//! the access point's shim counters flat. The [`Lab`] owns its namespaces
//! and daemons (RAII: gone at the end of the step, on an error or Ctrl-C).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use homeaddr_netns_tests::natlab::daemons::DaemonOptions;
use homeaddr_netns_tests::natlab::{Family, HOA4, Lab, LabConfig, LabHost, NatOptions, Site};
use homeaddr_netns_tests::scenario::{self, member_of, read};
use homeaddr_netns_tests::testapp;

use super::{header, verified};
use crate::output::{mib, ms, say};
use crate::report::Report;

/// The check's name (the summary lists it as NOT RUN if the step stops).
pub(crate) const NAT_CLIENT: &str = "IPv4 client behind a NAT: through the AP, then direct";

/// The shim's route-optimized download.
const BULK: u64 = 16 << 20;
/// Return routability through the NATs (a punch, maybe a retried care-of
/// test) takes well under this.
const RO_TIMEOUT: Duration = Duration::from_secs(15);
const OP_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn step_nat(report: &mut Report) -> anyhow::Result<()> {
    header(
        8,
        "Today's Internet: IPv4-only clients behind a NAT, a member behind another",
    )?;
    say(
        "new namespaces: an IPv4 internet segment (198.18.0.0/24) with the access point and member 1;",
    );
    say(
        "NAT router 1 (nftables masquerade) with two IPv4-only clients on 100.64.1.0/24, NAT router 2 with member 2",
    );
    let mut lab = Lab::start("demonat", LabConfig::full()).context("starting the NAT lab")?;
    let clients_nat = lab.add_nat(NatOptions::default()).context("NAT router 1")?;
    let members_nat = lab.add_nat(NatOptions::default()).context("NAT router 2")?;
    lab.add_member(1, Site::Public, &DaemonOptions::default())
        .context("member 1")?;
    lab.add_member(2, Site::Nat(members_nat), &DaemonOptions::default())
        .context("member 2 behind NAT 2")?;
    lab.add_legacy("phone", Site::Nat(clients_nat))
        .context("the legacy client")?;
    lab.add_shim(
        "laptop",
        Site::Nat(clients_nat),
        Family::V4,
        &DaemonOptions::default(),
    )
    .context("the shim client")?;
    let result = story(&lab, report);
    if result.is_err() || !report.all_ok() {
        lab.topo.keep_logs();
        say(&format!(
            "NAT lab logs kept in {}",
            lab.topo.dir().display()
        ));
    }
    result
}

fn story(lab: &Lab, report: &mut Report) -> anyhow::Result<()> {
    let m2 = lab.member(2);
    say(&format!(
        "member 2 ({} inside NAT 2) registered; the access point sees it at {} (it learned that from the registration's answer: behind_nat {})",
        m2.v4,
        observed_by_ap(m2),
        m2.status()["behind_nat"]
    ));
    let service = lab.service(Family::V4);
    let phone = lab.client("phone");
    let served = who(phone, service)?;
    let small = get(phone, service, 1 << 20)?;
    let phone_ok = member_of(&served).is_some() && scenario::intact(&small);
    say(&format!(
        "legacy client {} -> {service}: served by {served} through the access point, 1 MiB SHA-256 {}",
        phone.v4,
        verified(scenario::intact(&small))
    ));

    let laptop = lab.client("laptop");
    let status = laptop.status();
    say(&format!(
        "shim client {}: the access point saw it at {}, so it is behind a NAT ({}) and gave it the client address {} from its pool",
        laptop.v4,
        status["observed"].as_str().unwrap_or("?"),
        status["behind_nat"],
        status["client_address"].as_str().unwrap_or("?")
    ));
    let first = who(laptop, service)?;
    let id = member_of(&first).unwrap_or(0);
    say(&format!(
        "its first connection to {HOA4}: served by {first} through the access point"
    ));
    let member = lab
        .members
        .get(&id)
        .with_context(|| format!("no member behind {first}"))?;
    let took = lab.wait("route optimization through the NAT", RO_TIMEOUT, || {
        bound(laptop, member, id)
    })?;
    say(&format!(
        "route optimization with member {id} ({}) {} later: the return routability test went through the access point, the care-of test and binding update straight through the NAT{}",
        match member.site {
            Site::Public => "public",
            Site::Nat(_) => "behind NAT 2",
        },
        ms(took),
        if member.site == Site::Public {
            ""
        } else {
            "s (the shim punched its NAT towards the member first)"
        }
    ));
    let before = ap_shim_packets(lab);
    let bulk = get(laptop, service, BULK)?;
    let after = ap_shim_packets(lab);
    let path = read::shim_service_flow(&laptop.host)
        .map(|f| f.path.name().to_string())
        .unwrap_or_else(|| "no flow".into());
    let bulk_ok = scenario::intact(&bulk);
    say(&format!(
        "download of {} direct: SHA-256 {}, {:.0} Mbit/s, flow path {path}, access point shim packets +{} (of about {} data packets)",
        mib(BULK),
        verified(bulk_ok),
        bulk.mbit_per_s(),
        after - before,
        BULK / 1400
    ));
    report.check(
        NAT_CLIENT,
        phone_ok && bulk_ok && path == "direct" && after - before < 200,
        format!(
            "legacy via the AP ({served}); shim direct with member {id} after {}, {} intact, AP +{} packets",
            ms(took),
            mib(BULK),
            after - before
        ),
    );
    Ok(())
}

/// The care-of endpoint the AP holds for `member`.
fn observed_by_ap(member: &LabHost) -> String {
    member.status()["aps"]
        .as_array()
        .and_then(|aps| aps.first())
        .and_then(|ap| ap["observed"].as_str())
        .unwrap_or("?")
        .to_string()
}

fn who(client: &LabHost, server: SocketAddr) -> anyhow::Result<String> {
    scenario::who_at(&client.host, server)
        .with_context(|| format!("{} cannot reach {server}", client.host.name))
}

fn get(client: &LabHost, server: SocketAddr, bytes: u64) -> anyhow::Result<testapp::GetReport> {
    client
        .host
        .ns
        .enter(|| testapp::get(server, bytes, OP_TIMEOUT))?
        .map_err(|e| anyhow::anyhow!("{}: download from {server}: {e}", client.host.name))
}

/// Whether the shim holds a binding with member `id` and the member one
/// with a correspondent.
fn bound(shim: &LabHost, member: &LabHost, id: u16) -> bool {
    let shim_has = shim.status()["bindings"].as_array().is_some_and(|b| {
        b.iter()
            .any(|r| r["member"].as_u64() == Some(u64::from(id)))
    });
    let member_has = member.status()["bindings"].as_array().is_some_and(|b| {
        b.iter()
            .any(|r| r["bound"] == serde_json::Value::Bool(true))
    });
    shim_has && member_has
}

fn ap_shim_packets(lab: &Lab) -> u64 {
    let s = lab.ap.status();
    read::counter(&s, "shim_in") + read::counter(&s, "shim_out")
}
