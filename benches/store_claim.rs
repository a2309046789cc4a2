//! The store's claim-and-report cycle: a worker claims its next action and reports
//! it done, the two atomic transactions every action costs. Actions per second and
//! per-cycle latency, for each store (PostgreSQL in a throwaway cluster on
//! loopback), with 1 and 64 workers at once.
//!
//! `cargo bench --bench store_claim` prints a table and writes it into
//! BENCHMARKS.md between the `store_claim` markers.

use jiff::Timestamp;
#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};
use tinker::core::WorkflowStore;
use tinker::core::state::{ActionOutcome, WorkflowEvent};
use tinker::core::store::Precondition;
use tinker::core::testing::{mac, rendered_workflow};
use tinker::store::{MemoryStore, PostgresStore, RedbStore};

struct Figures {
    store: &'static str,
    workers: usize,
    actions: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

async fn run(
    store: Arc<dyn WorkflowStore>,
    name: &'static str,
    workers: usize,
    actions_per_worker: usize,
) -> Figures {
    const ACTIONS_PER_WORKFLOW: usize = 4;
    let workflows = actions_per_worker.div_ceil(ACTIONS_PER_WORKFLOW);
    for w in 0..workers {
        for k in 0..workflows {
            let wf = rendered_workflow(
                &format!("bench-{workers}-{w}-{k}"),
                mac(w as u32),
                ACTIONS_PER_WORKFLOW,
                3600,
            );
            store.put(wf.into(), Precondition::Absent).await.unwrap();
        }
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let worker = mac(w as u32).to_string();
            let mut lat = Vec::new();
            loop {
                let t = Instant::now();
                let Some(a) = store
                    .claim_next_action(&worker, Timestamp::now())
                    .await
                    .unwrap()
                else {
                    break;
                };
                let report = WorkflowEvent::Report {
                    action: a.action_index,
                    attempt: a.attempt,
                    outcome: ActionOutcome::Success,
                };
                store
                    .apply_event(&a.workflow, &report, Timestamp::now())
                    .await
                    .unwrap();
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    latencies.sort();
    Figures {
        store: name,
        workers,
        actions: latencies.len(),
        elapsed,
        latencies,
    }
}

/// The peer: the same two transactions on SQLite (WAL, synchronous=FULL), one
/// connection per worker, as a hand-written SQL store would do them.
fn sqlite_peer(path: &std::path::Path, workers: usize, actions_per_worker: usize) -> Figures {
    let setup = rusqlite::Connection::open(path).unwrap();
    setup
        .execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE actions (worker TEXT, wf INTEGER, idx INTEGER, state TEXT, attempt INTEGER,
               PRIMARY KEY (worker, wf, idx));",
        )
        .unwrap();
    for w in 0..workers {
        let tx = setup.unchecked_transaction().unwrap();
        for i in 0..actions_per_worker {
            tx.execute(
                "INSERT INTO actions VALUES (?1, ?2, ?3, 'PENDING', 0)",
                rusqlite::params![w.to_string(), (i / 4) as i64, (i % 4) as i64],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let start = Instant::now();
    let threads: Vec<_> = (0..workers)
        .map(|w| {
            let path = path.to_path_buf();
            std::thread::spawn(move || {
                let c = rusqlite::Connection::open(path).unwrap();
                c.busy_timeout(Duration::from_secs(30)).unwrap();
                c.execute_batch("PRAGMA synchronous=FULL;").unwrap();
                let mut lat = Vec::new();
                loop {
                    let t = Instant::now();
                    let tx = rusqlite::Transaction::new_unchecked(&c, rusqlite::TransactionBehavior::Immediate).unwrap();
                    let next: Option<(i64, i64)> = tx
                        .query_row(
                            "SELECT wf, idx FROM actions WHERE worker = ?1 AND state != 'SUCCESS' ORDER BY wf, idx LIMIT 1",
                            [w.to_string()],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )
                        .ok();
                    let Some((wf, idx)) = next else { break };
                    tx.execute(
                        "UPDATE actions SET state = 'RUNNING', attempt = attempt + 1 WHERE worker = ?1 AND wf = ?2 AND idx = ?3",
                        rusqlite::params![w.to_string(), wf, idx],
                    )
                    .unwrap();
                    tx.commit().unwrap();
                    let tx = rusqlite::Transaction::new_unchecked(&c, rusqlite::TransactionBehavior::Immediate).unwrap();
                    tx.execute(
                        "UPDATE actions SET state = 'SUCCESS' WHERE worker = ?1 AND wf = ?2 AND idx = ?3 AND state = 'RUNNING'",
                        rusqlite::params![w.to_string(), wf, idx],
                    )
                    .unwrap();
                    tx.commit().unwrap();
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let elapsed = start.elapsed();
    latencies.sort();
    Figures {
        store: "peer: SQLite, hand-written SQL (WAL, synchronous=FULL)",
        workers,
        actions: latencies.len(),
        elapsed,
        latencies,
    }
}

fn pct(l: &[Duration], p: f64) -> f64 {
    let i = ((l.len() as f64 - 1.0) * p).round() as usize;
    l[i].as_secs_f64() * 1000.0
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    // A throwaway PostgreSQL cluster on loopback, sharing the cores (skipped,
    // and said so, where PostgreSQL is not installed).
    let pg = tinker::store::testing::TempPostgres::start();
    if pg.is_none() {
        eprintln!("PostgreSQL is not installed here: its rows are left out");
    }
    rt.block_on(async {
        for (workers, per_worker_mem, per_worker_redb) in
            [(1usize, 20_000usize, 2_000usize), (64, 400, 40)]
        {
            let mem: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
            rows.push(run(mem, "MemoryStore", workers, per_worker_mem).await);
            let path = dir.path().join(format!("bench-{workers}.redb"));
            let redb: Arc<dyn WorkflowStore> = Arc::new(RedbStore::open(&path).await.unwrap());
            rows.push(
                run(
                    redb,
                    "RedbStore (group commit: one fsync per batch)",
                    workers,
                    per_worker_redb,
                )
                .await,
            );
            if let Some(pg) = &pg {
                let store: Arc<dyn WorkflowStore> =
                    Arc::new(PostgresStore::connect(&pg.url).await.unwrap());
                rows.push(
                    run(
                        store,
                        "PostgresStore (a pool of 16 connections)",
                        workers,
                        per_worker_redb,
                    )
                    .await,
                );
            }
            rows.push(sqlite_peer(
                &dir.path().join(format!("peer-{workers}.sqlite")),
                workers,
                per_worker_redb,
            ));
        }
    });
    let mut table = String::from(
        "| store | workers | actions | actions/s | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for f in &rows {
        table.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.3} | {:.3} |\n",
            f.store,
            f.workers,
            f.actions,
            f.actions as f64 / f.elapsed.as_secs_f64(),
            pct(&f.latencies, 0.5),
            pct(&f.latencies, 0.99)
        ));
    }
    print!("{table}");
    let body = format!(
        "Command: `cargo bench --bench store_claim` (run {}; {} cores). One action = one claim transaction + one report transaction; each worker has its own workflows of 4 actions; latency is per claim+report cycle.\n\n{table}",
        Timestamp::now().strftime("%Y-%m-%d"),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    support::write_section("store_claim", "Store: claim-and-report cycle", &body);
}
