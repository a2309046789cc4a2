//! The embedded store's reads run on tokio's blocking threads; a burst of
//! them (a boot storm's lookups) must not start a thread each. Alone in its
//! own test binary, so the process's thread count is this test's.

use std::sync::Arc;
use tinker_core::WorkflowStore;
use tinker_core::store::Precondition;
use tinker_store::RedbStore;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// The peak number of threads the process had while `reads` lookups ran at
/// once on a store allowing `bound` reads at a time.
fn peak_threads_during_a_burst(bound: usize, reads: usize) -> usize {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let store = Arc::new(
            RedbStore::open(dir.path().join("s.redb"))
                .await
                .unwrap()
                .with_reader_threads(bound)
                .unwrap(),
        );
        let hw = tinker_core::testing::hardware("m", 1);
        store.put(hw.into(), Precondition::Absent).await.unwrap();
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(threads()));
        let watcher = {
            let peak = peak.clone();
            std::thread::spawn(move || {
                for _ in 0..2000 {
                    peak.fetch_max(threads(), std::sync::atomic::Ordering::Relaxed);
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
            })
        };
        let lookups: Vec<_> = (0..reads)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .hardware_by_mac(tinker_core::testing::mac(1 + (i % 2) as u32))
                        .await
                        .unwrap()
                })
            })
            .collect();
        for l in lookups {
            l.await.unwrap();
        }
        watcher.join().unwrap();
        // The watcher itself is one of the threads it counted.
        peak.load(std::sync::atomic::Ordering::Relaxed) - 1
    })
}

#[test]
fn a_burst_of_reads_runs_on_a_bounded_number_of_threads() {
    let before = threads();
    let bounded = peak_threads_during_a_burst(2, 2000);
    // The runtime's two workers, the blocking thread that opened the file,
    // the store's writer and its two readers, beside what the process had
    // (the test harness's own threads); not a thread per waiting read.
    assert!(
        bounded <= before + 2 + 1 + 2 + 1,
        "{bounded} threads at the peak, {before} before"
    );
}
