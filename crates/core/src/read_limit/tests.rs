//! The controller with made-up costs; the gate's permits and sharing.
use super::*;
use proptest::prelude::*;

#[test]
fn an_idle_server_keeps_the_full_limit() {
    let mut c = Aimd::new(16);
    for _ in 0..1000 {
        assert_eq!(c.observe(100.0), 16);
    }
}

#[test]
fn a_busy_server_halves_the_limit_once_per_round_then_it_grows_back() {
    let mut c = Aimd::new(16);
    for _ in 0..10 {
        c.observe(100.0);
    }
    // The app loads the server: reads cost 5x.
    assert_eq!(c.observe(500.0), 8);
    // The 8 reads that ran alongside report the same event: no new halving.
    for _ in 0..8 {
        assert_eq!(c.observe(500.0), 8);
    }
    assert_eq!(c.observe(500.0), 4);
    // Sustained load: down to one read at a time, never zero.
    for _ in 0..100 {
        assert!(c.observe(500.0) >= 1);
    }
    assert_eq!(c.limit(), 1);
    // The app goes quiet: +1 per round, back to the maximum.
    let mut steps = 0;
    while c.observe(100.0) < 16 {
        steps += 1;
        assert!(steps < 1000, "the limit never grew back");
    }
    assert!(steps > 16, "grew back faster than one per round: {steps}");
}

#[test]
fn a_lasting_higher_cost_becomes_the_new_baseline() {
    let mut c = Aimd::new(8);
    c.observe(100.0);
    for _ in 0..5000 {
        c.observe(300.0);
    }
    assert!(c.baseline().is_some_and(|b| b > 150.0));
    assert_eq!(c.limit(), 8);
}

#[test]
fn nonsense_costs_change_nothing() {
    let mut c = Aimd::new(4);
    c.observe(10.0);
    for bad in [f64::NAN, f64::INFINITY, -1.0] {
        assert_eq!(c.observe(bad), 4);
    }
    assert_eq!(c.baseline(), Some(10.0));
}

proptest! {
    #[test]
    fn the_limit_stays_within_one_and_max(max in 1usize..64,
        costs in proptest::collection::vec(0.0f64..1e6, 0..500)) {
        let mut c = Aimd::new(max);
        for cost in costs {
            let l = c.observe(cost);
            prop_assert!(l >= 1 && l <= max);
        }
    }

    #[test]
    fn after_any_history_quiet_reads_restore_the_maximum(max in 1usize..32,
        costs in proptest::collection::vec(1.0f64..1e5, 0..300)) {
        let mut c = Aimd::new(max);
        for cost in costs {
            c.observe(cost);
        }
        let floor = c.baseline().unwrap_or(1.0);
        for _ in 0..(max * max + max + 64) {
            c.observe(floor);
        }
        prop_assert_eq!(c.limit(), max);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_admits_no_more_than_the_limit_and_every_waiter_gets_through() {
    let gate = Arc::new(ReadGate::new(
        3,
        true,
        Default::default(),
        Default::default(),
    ));
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let (gate, running, peak) = (gate.clone(), running.clone(), peak.clone());
            tokio::spawn(async move {
                let p = gate.acquire().await;
                let now = running.fetch_add(1, Relaxed) + 1;
                peak.fetch_max(now, Relaxed);
                tokio::task::yield_now().await;
                running.fetch_sub(1, Relaxed);
                p.finish(1);
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    assert!(peak.load(Relaxed) <= 3, "peak {}", peak.load(Relaxed));
    assert!(gate.current.load(Relaxed) >= 1);
}

fn sharing_gate(share: f64) -> (ReadGate, Arc<AppActivity>) {
    let app = Arc::new(AppActivity::for_share(share));
    let mut gate = ReadGate::new(4, true, Default::default(), Default::default())
        .sharing_with_app(share, app.clone());
    gate.quiet = Duration::from_secs(3600); // the test's steps never outlast "writing"
    (gate, app)
}

fn wait_left(gate: &ReadGate, from: Instant) -> Option<Duration> {
    lock(&gate.state)
        .not_before
        .map(|t| t.saturating_duration_since(from))
}

#[tokio::test]
async fn while_the_app_writes_a_backlog_read_is_followed_by_nine_times_its_time_away() {
    let (gate, app) = sharing_gate(0.1);
    app.record(std::iter::empty()); // the app writes, but nothing this read covers
    let p = gate.acquire().await;
    std::thread::sleep(Duration::from_millis(20));
    let before = Instant::now();
    p.finish(10);
    let left = wait_left(&gate, before).expect("a wait after the read");
    assert!(
        left >= Duration::from_millis(180),
        "waits {left:?} after a 20 ms read"
    );
    assert_eq!(gate.share_permille.load(Relaxed), 100);
}

#[tokio::test]
async fn the_wait_after_one_read_is_bounded() {
    let (gate, app) = sharing_gate(0.01);
    app.record(std::iter::empty());
    let p = gate.acquire().await;
    std::thread::sleep(Duration::from_millis(20)); // x99 would be about 2 s
    p.finish(1);
    let after = Instant::now();
    let left = wait_left(&gate, after).expect("a wait");
    assert!(left <= MAX_WAIT, "waits {left:?}");
}

#[tokio::test]
async fn documents_the_app_wrote_meanwhile_cost_no_wait() {
    let (gate, app) = sharing_gate(0.1);
    app.record((1..=10u64).map(|i| i * 7919));
    let p = gate.acquire().await;
    std::thread::sleep(Duration::from_millis(5));
    p.finish(10);
    let after = Instant::now();
    assert_eq!(wait_left(&gate, after), Some(Duration::ZERO));
    // The credit is spent: the next backlog read waits again.
    let p = gate.acquire().await;
    std::thread::sleep(Duration::from_millis(5));
    let before = Instant::now();
    p.finish(10);
    assert!(wait_left(&gate, before).is_some_and(|d| d >= Duration::from_millis(45)));
}

#[test]
fn a_document_written_again_earns_no_more_credit() {
    let app = AppActivity::for_share(0.5);
    app.record([4200u64, 4200, 4200].into_iter());
    app.record([8400u64].into_iter());
    app.record([4200u64].into_iter());
    assert_eq!(app.writes.load(Relaxed), 2);
}

#[test]
fn at_a_share_of_one_the_written_documents_are_not_hashed() {
    let hashed = std::cell::Cell::new(0);
    // odd, distinct hashes (the table keeps `h | 1`)
    let written = || {
        (1..=5u64)
            .map(|i| i * 7919)
            .inspect(|_| hashed.set(hashed.get() + 1))
    };
    let full = AppActivity::for_share(1.0);
    full.record(written());
    assert_eq!(hashed.get(), 0, "nothing reads the credit at a share of 1");
    assert!(
        full.last_mark_ms.load(Relaxed) > 0,
        "the app still counts as writing"
    );
    let shared = AppActivity::for_share(0.2);
    shared.record(written());
    assert_eq!((hashed.get(), shared.writes.load(Relaxed)), (5, 5));
}

#[tokio::test]
async fn without_app_writes_or_with_a_share_of_one_the_drain_never_waits() {
    let app = Arc::new(AppActivity::for_share(0.1));
    let quiet = ReadGate::new(4, true, Default::default(), Default::default())
        .sharing_with_app(0.1, app.clone());
    let p = quiet.acquire().await;
    p.finish(10);
    assert_eq!(lock(&quiet.state).not_before, None, "the app never wrote");
    let full = ReadGate::new(4, true, Default::default(), Default::default())
        .sharing_with_app(1.0, app.clone());
    app.record(std::iter::empty());
    let p = full.acquire().await;
    p.finish(10);
    assert_eq!(lock(&full.state).not_before, None, "a share of 1");
    assert_eq!(full.share_permille.load(Relaxed), 1000);
}

#[tokio::test]
async fn while_sharing_one_read_runs_at_a_time_and_a_flush_skips_the_wait() {
    let (gate, app) = sharing_gate(0.1);
    app.record(std::iter::empty());
    let urgent = Arc::new(AtomicUsize::new(0));
    gate.hurry_when(urgent.clone());
    let first = gate.acquire().await;
    let second = tokio::time::timeout(Duration::from_millis(50), gate.acquire()).await;
    assert!(
        second.is_err(),
        "a second read ran beside the first while sharing"
    );
    first.finish(1);
    lock(&gate.state).not_before = Some(Instant::now() + Duration::from_secs(3600));
    urgent.store(1, Relaxed);
    gate.wake();
    let flushed = tokio::time::timeout(Duration::from_secs(30), gate.acquire()).await;
    assert!(flushed.is_ok(), "a flush waited out the share");
}
