//! Power-status round trips against OpenIPMI's `ipmi_sim`: ours (one reused
//! session; and a new session per call, as ipmitool does) against invoking
//! `ipmitool -I lanplus -C 3` for the same call, and ours against 1 and 32 BMCs at
//! once. `cargo bench --bench bmc_status` prints a table and writes it into
//! BENCHMARKS.md between the `bmc_status` markers.

#[path = "../tinker-bmc/tests/support/mod.rs"]
mod support;

#[path = "support/mod.rs"]
mod bench_support;

use std::time::{Duration, Instant};
use tinker::bmc::{IpmiPower, Secret};
use tinker::core::PowerController;

struct Row {
    what: String,
    bmcs: usize,
    calls: usize,
    elapsed: Duration,
}

fn ours(port: u16) -> IpmiPower {
    IpmiPower::new(
        "127.0.0.1",
        port,
        support::USER,
        Secret::new(support::PASSWORD),
    )
    .with_timeout(Duration::from_secs(2))
}

async fn reused(ports: &[u16], per_bmc: usize) -> Row {
    let start = Instant::now();
    let tasks: Vec<_> = ports
        .iter()
        .map(|&p| {
            tokio::spawn(async move {
                let bmc = ours(p);
                for _ in 0..per_bmc {
                    bmc.power_state().await.expect("power status");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    Row {
        what: "tinker IpmiPower, session reused".into(),
        bmcs: ports.len(),
        calls: ports.len() * per_bmc,
        elapsed: start.elapsed(),
    }
}

async fn fresh(port: u16, calls: usize) -> Row {
    let start = Instant::now();
    for _ in 0..calls {
        ours(port).power_state().await.expect("power status");
    }
    Row {
        what: "tinker IpmiPower, new session per call".into(),
        bmcs: 1,
        calls,
        elapsed: start.elapsed(),
    }
}

fn ipmitool(emus: &[&support::Emulator], per_bmc: usize) -> Row {
    let start = Instant::now();
    std::thread::scope(|s| {
        for e in emus {
            s.spawn(move || {
                for _ in 0..per_bmc {
                    support::ipmitool(e, &["chassis", "power", "status"]).expect("ipmitool");
                }
            });
        }
    });
    Row {
        what: "peer: ipmitool -I lanplus -C 3, one process per call".into(),
        bmcs: emus.len(),
        calls: emus.len() * per_bmc,
        elapsed: start.elapsed(),
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let sims: Vec<support::Emulator> = (0..32)
        .map(|_| support::ipmi_sim().expect("ipmi_sim installed"))
        .collect();
    let ports: Vec<u16> = sims.iter().map(|s| s.port).collect();
    let mut rows = Vec::new();
    rt.block_on(async {
        rows.push(reused(&ports[..1], 500).await);
        rows.push(fresh(ports[0], 50).await);
    });
    rows.push(ipmitool(&[&sims[0]], 50));
    rt.block_on(async {
        rows.push(reused(&ports, 100).await);
    });
    let all: Vec<&support::Emulator> = sims.iter().collect();
    rows.push(ipmitool(&all, 5));

    let mut table = String::from(
        "| client | BMCs | calls | calls/s | mean ms per call per BMC |\n|---|---:|---:|---:|---:|\n",
    );
    for r in &rows {
        let rate = r.calls as f64 / r.elapsed.as_secs_f64();
        let per = r.elapsed.as_secs_f64() * 1000.0 * r.bmcs as f64 / r.calls as f64;
        table.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.1} |\n",
            r.what, r.bmcs, r.calls, rate, per
        ));
    }
    print!("{table}");
    let body = format!(
        "Command: `cargo bench --bench bmc_status` (run {}; {} cores; `ipmi_sim` instances on loopback, one per BMC, all on this machine).\n\n{table}",
        jiff::Timestamp::now().strftime("%Y-%m-%d"),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    bench_support::write_section("bmc_status", "BMC: power-status round trips (IPMI)", &body);
}
