//! Periodic tasks: in one process on the embedded broker (tokio's paused clock), and the failover
//! test on the real servers — three beat processes, the leader SIGKILLed again and again and once
//! paused past its lease, and every tick run exactly once, none missing.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use celeriac::beat::{BeatReport, CatchUp, Entry};
use celeriac::broker::{BrokerError, Outgoing};
use celeriac::election::{Election, Term};
use celeriac::{App, BuildError, Envelope, MemoryBroker, TaskContext};
use celeriac_tests::beat::{BeatProcess, beat_tick, leader, now_millis, recorded_ticks};
use celeriac_tests::harness::{
    BackgroundWorker, amqp_url, eventually, redis_url, skipped, unique_queue,
};

// ---------------------------------------------------------------------------------------------
// In one process, on tokio's paused clock.

/// Ticks run in this process, by entry: (tick in ms, how many runs).
static RAN: Mutex<BTreeMap<String, BTreeMap<u64, u32>>> = Mutex::new(BTreeMap::new());

#[celeriac::task(name = "beat_local_tick")]
async fn local_tick(ctx: TaskContext, label: String) {
    if let Some((_, tick)) = celeriac::beat::tick_of(ctx.envelope()) {
        let millis = tick
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis());
        let mut ran = RAN.lock().unwrap_or_else(|p| p.into_inner());
        *ran.entry(label)
            .or_default()
            .entry(u64::try_from(millis).unwrap_or(0))
            .or_insert(0) += 1;
    }
}

fn ran(label: &str) -> BTreeMap<u64, u32> {
    RAN.lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(label)
        .cloned()
        .unwrap_or_default()
}

/// Every tick one second after the previous, each run once.
fn assert_every_second_once(label: &str, ticks: &BTreeMap<u64, u32>) {
    let twice: Vec<_> = ticks.iter().filter(|(_, runs)| **runs > 1).collect();
    assert!(
        twice.is_empty(),
        "{label}: ticks run more than once: {twice:?}"
    );
    let times: Vec<u64> = ticks.keys().copied().collect();
    let gaps: Vec<_> = times
        .windows(2)
        .filter(|pair| pair[1] - pair[0] != 1_000)
        .collect();
    assert!(gaps.is_empty(), "{label}: ticks missing between {gaps:?}");
}

fn memory_app(queue: &str) -> App {
    App::builder()
        .broker_url(format!("memory://{queue}"))
        .default_queue(queue)
        .register::<local_tick>()
        .build()
        .expect("the app builds")
}

/// Two beats of one entry `label` (every second, `catch_up`) with `lease`: the first leads, and
/// dies without resigning after `crash_after`; the second runs for `run_for`. Answers the second's
/// report, once the worker ran everything sent.
async fn crash_and_take_over(
    label: &str,
    lease: Duration,
    catch_up: CatchUp,
    crash_after: Duration,
    run_for: Duration,
) -> BeatReport {
    let app = memory_app(&unique_queue("beat"));
    let beat = |app: &App| {
        let entry = Entry::every(label, Duration::from_secs(1), local_tick::s(label.into()));
        app.beat()
            .lease(lease)
            .entry(entry.catch_up(catch_up))
            .build()
            .expect("the beat builds")
    };
    let worker = BackgroundWorker::start(app.worker().build().expect("worker"));
    let first = tokio::spawn(beat(&app).run_until(std::future::pending()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = tokio::spawn(beat(&app).run_until(tokio::time::sleep(run_for)));
    tokio::time::sleep(crash_after).await;
    // The first leads (it campaigned first); it dies without resigning.
    first.abort();
    let report = second.await.expect("the second beat ran");
    worker.stop().await;
    report
}

#[tokio::test(start_paused = true)]
async fn a_crashed_leaders_ticks_are_caught_up_by_the_next_and_none_runs_twice() {
    let second = Duration::from_secs(1);
    let report =
        crash_and_take_over("crash", 3 * second, CatchUp::All, 10 * second, 30 * second).await;
    assert_eq!(report.terms, 1, "{report:?}");
    // Its lease lapsed after up to 3 s: the ticks of those seconds are sent late, not lost.
    let ticks = ran("crash");
    assert_every_second_once("crash", &ticks);
    assert!(
        ticks.len() >= 29,
        "{} ticks in 30 s: {ticks:?}",
        ticks.len()
    );
    assert!(report.sent >= 19, "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn catch_up_latest_sends_only_the_newest_missed_tick() {
    let second = Duration::from_secs(1);
    let report = crash_and_take_over(
        "latest",
        6 * second,
        CatchUp::Latest,
        5 * second,
        20 * second,
    )
    .await;
    // About 6 s without a leader: one tick of them is sent, the others skipped.
    assert!((4..=7).contains(&report.skipped), "{report:?}");
    let ticks = ran("latest");
    assert!(ticks.values().all(|runs| *runs == 1), "{ticks:?}");
    let gaps = ticks
        .keys()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|pair| pair[1] - pair[0] > 1_000)
        .count();
    assert_eq!(gaps, 1, "one hole, where the ticks were skipped: {ticks:?}");
}

/// An election this process always wins, whose first term carries `record`: what a predecessor
/// wrote down before it died.
#[derive(Debug)]
struct Inherits {
    record: Mutex<Option<Vec<u8>>>,
}

#[celeriac::async_trait]
impl Election for Inherits {
    fn redacted_url(&self) -> String {
        "test://inherits".into()
    }

    fn lease(&self) -> Duration {
        Duration::from_secs(30)
    }

    async fn campaign(&self) -> Result<Option<Term>, BrokerError> {
        let record = self.record.lock().unwrap_or_else(|p| p.into_inner()).take();
        Ok(Some(Term::new("term", record)))
    }

    async fn renew(&self, _: &Term) -> Result<bool, BrokerError> {
        Ok(true)
    }

    async fn record(&self, _: &Term, _: &[u8]) -> Result<bool, BrokerError> {
        Ok(true)
    }

    async fn resign(&self, _: Term) -> Result<(), BrokerError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn ticks_a_predecessor_left_pending_count_as_resent_and_new_ones_as_sent() {
    let app = memory_app(&unique_queue("beat"));
    // The predecessor wrote down the tick of three seconds ago, and died before sending it.
    let last = (now_millis() / 1_000 - 3) * 1_000;
    let record = format!(r#"{{"entries":{{"inherit":{{"last":{last},"pending":[{last}]}}}}}}"#);
    let entry = Entry::every(
        "inherit",
        Duration::from_secs(1),
        local_tick::s("inherit".into()),
    );
    let beat = app
        .beat()
        .election(Inherits {
            record: Mutex::new(Some(record.into_bytes())),
        })
        .entry(entry.catch_up(CatchUp::All))
        .build()
        .expect("the beat builds");
    let report = beat
        .run_until(tokio::time::sleep(Duration::from_millis(1_500)))
        .await;
    // The inherited tick is sent again; the ticks due since, in the same round, are new.
    assert_eq!(report.resent, 1, "{report:?}");
    assert!(report.sent >= 3, "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn a_beat_that_stops_resigns_and_the_next_leads_at_once() {
    let queue = unique_queue("beat");
    let app = memory_app(&queue);
    let beat = |app: &App| {
        app.beat()
            .lease(Duration::from_secs(60))
            .entry(Entry::every(
                "resign",
                Duration::from_secs(1),
                local_tick::s("resign".into()),
            ))
            .build()
            .expect("the beat builds")
    };
    let worker = BackgroundWorker::start(app.worker().build().expect("worker"));
    let first = tokio::spawn(beat(&app).run_until(tokio::time::sleep(Duration::from_secs(5))));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = tokio::spawn(beat(&app).run_until(tokio::time::sleep(Duration::from_secs(15))));
    let first = first.await.expect("the first beat ran");
    let second = second.await.expect("the second beat ran");
    worker.stop().await;
    assert_eq!((first.terms, second.terms), (1, 1));
    // Had it waited for the 60 s lease, the second would have sent nothing.
    assert!(second.sent >= 8, "{second:?}");
    assert_every_second_once("resign", &ran("resign"));
}

/// Tick `tick` (ms) of the entry `label`'s message, as a beat sends it, with the send id `send`.
fn tick_message(app: &App, queue: &str, label: &str, tick: u64, send: &str) -> Envelope {
    let args = celeriac::CodecExt::encode(app.codec(), &(label.to_owned(),)).expect("encode");
    let mut envelope = Envelope::new("beat_local_tick", queue, args, app.codec().content_type());
    envelope.id = celeriac::beat::tick_id("beat", label, UNIX_EPOCH + Duration::from_millis(tick));
    envelope
        .headers
        .insert("x-celeriac-beat-tick".into(), format!("{label}@{tick}"));
    envelope
        .headers
        .insert("x-celeriac-beat-send".into(), send.into());
    envelope
}

#[tokio::test(start_paused = true)]
async fn a_tick_that_ran_is_dropped_when_delivered_again_and_one_cut_short_runs_again() {
    let queue = unique_queue("beat");
    let app = memory_app(&queue);
    let label = "again";
    let publish = |envelope: Envelope| {
        let (app, queue) = (app.clone(), queue.clone());
        async move {
            let bytes = envelope.to_bytes().expect("encode");
            app.broker()
                .publish(Outgoing::new(queue, bytes))
                .await
                .expect("publish");
        }
    };
    let drained = || {
        let (app, queue) = (app.clone(), queue.clone());
        async move {
            let stats = app.broker().stats(&queue).await.expect("stats");
            stats.ready == 0 && stats.unacked == 0
        }
    };
    let worker = BackgroundWorker::start(app.worker().build().expect("worker"));
    let (ran_once, cut_short) = (10_000, 11_000);
    publish(tick_message(&app, &queue, label, ran_once, "first")).await;
    eventually(Duration::from_secs(10), "the tick to run", || async {
        ran(label).contains_key(&ran_once)
    })
    .await;
    // Its ack lost to a broker restart, the same send comes back: it ran, so it is dropped. So
    // is a successor's second send of the tick.
    publish(tick_message(&app, &queue, label, ran_once, "first")).await;
    publish(tick_message(&app, &queue, label, ran_once, "second")).await;
    // A send whose run was claimed and cut short (its worker died) comes back: it runs.
    let store = app.coordination().expect("the embedded broker's store");
    let id = celeriac::beat::tick_id("beat", label, UNIX_EPOCH + Duration::from_millis(cut_short));
    let claim = store
        .claim(
            &format!("beat-ran:{id}"),
            "cut-short",
            Duration::from_secs(60),
        )
        .await
        .expect("claim");
    assert_eq!(claim, celeriac::coordination::Claim::Claimed);
    publish(tick_message(&app, &queue, label, cut_short, "cut-short")).await;
    eventually(Duration::from_secs(10), "every copy to be taken", drained).await;
    let report = worker.stop().await;
    assert_eq!(
        ran(label),
        BTreeMap::from([(ran_once, 1), (cut_short, 1)]),
        "{report:?}"
    );
    assert_eq!(report.succeeded, 2, "{report:?}");
}

#[test]
fn bad_entries_are_build_errors_naming_the_entry() {
    let app = memory_app(&unique_queue("beat"));
    let error = |entry: Entry| match app.beat().entry(entry).build() {
        Ok(_) => panic!("the entry was accepted"),
        Err(error) => error,
    };
    let sig = || local_tick::s("bad".into());
    let cases = [
        (
            Entry::cron("five-fields", "*/5 * * * *", sig()),
            "has 5 fields",
        ),
        (
            Entry::cron("bad-minute", "0 61 * * * *", sig()),
            "invalid cron expression",
        ),
        (
            Entry::cron("bad-zone", "0 0 9 * * *", sig()).time_zone("Asia/Atlantis"),
            "unknown time zone `Asia/Atlantis`",
        ),
        (
            Entry::every("jittery", Duration::from_secs(1), sig()).jitter(Duration::from_secs(2)),
            "shorter than its interval",
        ),
        (
            Entry::every("zero", Duration::ZERO, sig()),
            "at least one millisecond",
        ),
    ];
    for (entry, expected) in cases {
        let name = format!("{entry:?}");
        match error(entry) {
            BuildError::BeatEntry { entry, reason } => {
                assert!(name.contains(&entry), "{name} named {entry}");
                assert!(reason.contains(expected), "{entry}: {reason}");
            }
            other => panic!("{name}: {other}"),
        }
    }
    let twice = app
        .beat()
        .every(Duration::from_secs(1), sig())
        .every(Duration::from_secs(2), sig())
        .build();
    assert!(
        matches!(&twice, Err(BuildError::BeatEntry { entry, reason }) if entry == "beat_local_tick" && reason.contains("two entries")),
        "{:?}",
        twice.err()
    );
    // A broker with no election and no coordination store: nowhere to elect a leader.
    let bare = App::builder()
        .shared_broker(std::sync::Arc::new(MemoryBroker::new()))
        .build()
        .expect("the app builds");
    let error = bare
        .beat()
        .every(Duration::from_secs(1), sig())
        .build()
        .err();
    assert!(
        matches!(&error, Some(BuildError::NoElection { .. })),
        "{error:?}"
    );
    let message = error.map(|error| error.to_string()).unwrap_or_default();
    assert!(message.contains("coordination_url"), "{message}");
}

#[tokio::test(start_paused = true)]
async fn a_toml_schedule_runs_like_one_in_code() {
    let queue = unique_queue("beat");
    let app = memory_app(&queue);
    let schedule = r#"
        [[entry]]
        name = "from-toml"
        task = "beat_local_tick"
        every = "2s"
        args = ["toml"]
        catch_up = "skip"
    "#;
    let beat = app
        .beat()
        .entries_from_toml(schedule)
        .expect("the schedule reads")
        .build()
        .expect("the beat builds");
    let worker = BackgroundWorker::start(app.worker().build().expect("worker"));
    let report = beat
        .run_until(tokio::time::sleep(Duration::from_secs(21)))
        .await;
    worker.stop().await;
    let ticks = ran("toml");
    assert_eq!(report.sent as usize, ticks.len());
    assert!((9..=11).contains(&ticks.len()), "{ticks:?}");
    assert!(
        ticks.keys().all(|tick| tick % 2_000 == 0),
        "on the even seconds: {ticks:?}"
    );
}

#[test]
fn a_bad_toml_schedule_says_where() {
    let app = memory_app(&unique_queue("beat"));
    let error = |text: &str| match app.beat().entries_from_toml(text) {
        Ok(_) => panic!("accepted: {text}"),
        Err(error) => error.to_string(),
    };
    let entry = |body: &str| format!("[[entry]]\nname = \"e\"\ntask = \"beat_local_tick\"\n{body}");
    let cases = [
        ("[[entry]\nname = 1".to_owned(), "TOML text"),
        (
            entry("every = \"1s\"\nargs = [\"x\"]\ncolour = \"red\""),
            "unknown field `colour`",
        ),
        (
            entry("every = \"1s\"\nargs = [1]"),
            "beat entry `e`: task `beat_local_tick`: argument 1",
        ),
        (
            entry("every = \"1s\""),
            "takes 1 argument(s), and 0 were given",
        ),
        (
            entry("every = \"1s\"\ncron = \"* * * * * *\"\nargs = [\"x\"]"),
            "exactly one of `every` and `cron`",
        ),
        (
            entry("every = \"soon\"\nargs = [\"x\"]"),
            "`every = \"soon\"`",
        ),
        (
            entry("every = \"1s\"\nargs = [\"x\"]\ncatch_up = \"some\""),
            "use \"all\", \"latest\" or \"skip\"",
        ),
        (
            "[[entry]]\nname = \"e\"\ntask = \"nope\"\nevery = \"1s\"".to_owned(),
            "no task named `nope` is registered",
        ),
    ];
    for (text, expected) in cases {
        let message = error(&text);
        assert!(message.contains(expected), "{text}\n=> {message}");
    }
    let missing = app.beat().entries_from_file("/nonexistent/beat.toml").err();
    let message = missing.map(|error| error.to_string()).unwrap_or_default();
    assert!(
        message.contains("/nonexistent/beat.toml: cannot read it"),
        "{message}"
    );
}

// ---------------------------------------------------------------------------------------------
// Failover, across processes, on the real servers.

/// The lease of the failover tests' beats electing through the Redis store.
const STORE_LEASE_MS: u64 = 2_000;

/// The lease of those electing through RabbitMQ: it sets the election connection's heartbeat
/// (half the lease), and a one-second heartbeat dropped connections on a loaded two-core CI
/// machine (lapin: "no heartbeat received from server for too long"), so no leader for 45 s.
const BROKER_LEASE_MS: u64 = 4_000;

/// Runs three `celeriac-test-beat` processes on `broker_url`, electing through `election`, for
/// about two minutes: kills the leader ten times (starting a new process each time) and pauses one
/// past its lease once. A worker here records each tick run; every tick from the first to the
/// last runs exactly once.
async fn failover(broker_url: String, election: &str) {
    let lease_ms = if election == "broker" {
        BROKER_LEASE_MS
    } else {
        STORE_LEASE_MS
    };
    let bin = env!("CARGO_BIN_EXE_celeriac-test-beat");
    let run = unique_queue("beat-run");
    let queue = unique_queue("beat");
    let args = vec![
        broker_url.clone(),
        queue.clone(),
        unique_queue("beat-name"),
        lease_ms.to_string(),
        run.clone(),
        election.to_owned(),
    ];
    // The worker drops a second copy of a tick through its Redis coordination store.
    let app = App::builder()
        .broker_url(&broker_url)
        .default_queue(&queue)
        .coordination_url(redis_url())
        .register::<beat_tick>()
        .build()
        .expect("the worker's app builds");
    let worker = BackgroundWorker::start(app.worker().build().expect("worker"));
    let started = now_millis();
    let mut beats: Vec<BeatProcess> = (0..3).map(|_| BeatProcess::start(bin, &args)).collect();
    let mut kills = 0;
    for round in 0..11 {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(7_000..12_000))).await;
        let current = leader(&beats, None, Duration::from_secs(30)).await;
        if round == 5 {
            // Paused past its lease: another leads; resumed, it must not send.
            beats[current].signal("-STOP").await;
            tokio::time::sleep(Duration::from_millis(3 * lease_ms)).await;
            leader(&beats, Some(current), Duration::from_secs(30)).await;
            beats[current].signal("-CONT").await;
        } else {
            eprintln!(
                "{election}: killing {} at {}",
                beats[current].pid,
                now_millis()
            );
            beats[current].signal("-KILL").await;
            let _ = beats[current].child.wait().await;
            beats[current] = BeatProcess::start(bin, &args);
            kills += 1;
        }
    }
    // The last kill's successor takes over: a tick scheduled after the kill runs. Within a lease
    // or two usually; the bound is generous, for a busy machine (a cold CI build once took 12 s
    // with both failover tests and their six beat processes on two cores).
    let last_kill = now_millis();
    let successor = async {
        while !recorded_ticks(&run)
            .await
            .keys()
            .any(|tick| *tick > last_kill)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let took_over = tokio::time::timeout(Duration::from_secs(45), successor).await;
    assert!(
        took_over.is_ok(),
        "{election}: no successor ticked within 45 s of the last kill"
    );
    eprintln!(
        "{election}: the last kill's successor ticked within {} ms",
        now_millis().saturating_sub(last_kill)
    );
    let ended = now_millis();
    for beat in &beats {
        beat.signal("-TERM").await;
    }
    for beat in &mut beats {
        let _ = beat.child.wait().await;
    }
    // Let the worker run what was sent.
    let mut last = BTreeMap::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = recorded_ticks(&run).await;
        if now == last && !now.is_empty() {
            break;
        }
        last = now;
    }
    worker.stop().await;
    let ticks = recorded_ticks(&run).await;
    assert_eq!(kills, 10);
    assert_every_second_once(&format!("{election} on {broker_url}"), &ticks);
    let first = ticks.keys().next().copied().unwrap_or(0);
    // Three processes start and elect one: seconds, or more on a busy machine.
    assert!(
        first <= started + 20_000,
        "the first tick came {} ms after the start",
        first.saturating_sub(started)
    );
    eprintln!(
        "{election} on {}: {} ticks over {} s, each once",
        broker_url.split('@').next_back().unwrap_or_default(),
        ticks.len(),
        (ended - started) / 1_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_beat_failover_sends_every_tick_once() {
    if skipped("redis") {
        return;
    }
    failover(redis_url(), "store").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_beat_failover_sends_every_tick_once() {
    if skipped("amqp") || skipped("redis") {
        return;
    }
    failover(amqp_url(), "broker").await;
}

// ---------------------------------------------------------------------------------------------
// The elections themselves, on the real servers.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_election_fences_a_leader_whose_lease_lapsed() {
    use celeriac::election::{Election, StoreElection};
    if skipped("redis") {
        return;
    }
    let store = celeriac::redis::RedisCoordination::builder(&redis_url())
        .key_prefix(unique_queue("celeriac-test-election"))
        .connect()
        .await
        .expect("Redis is required by this test: run scripts/test.sh, which starts it");
    let store: std::sync::Arc<dyn celeriac::coordination::CoordinationStore> =
        std::sync::Arc::new(store);
    let lease = Duration::from_millis(300);
    let first = StoreElection::new(store.clone(), "beat", "first", lease);
    let second = StoreElection::new(store, "beat", "second", lease);
    let term = first
        .campaign()
        .await
        .expect("campaign")
        .expect("no one leads yet");
    assert_eq!(term.record(), None);
    assert!(second.campaign().await.expect("campaign").is_none());
    assert!(first.record(&term, b"one").await.expect("record"));
    assert!(first.renew(&term).await.expect("renew"));
    // The first stops renewing: after its lease, the second leads, with the first's record.
    tokio::time::sleep(lease * 2).await;
    let next = second
        .campaign()
        .await
        .expect("campaign")
        .expect("the lease lapsed");
    assert_eq!(next.record(), Some(&b"one"[..]));
    assert!(!first.record(&term, b"stale").await.expect("record"));
    assert!(!first.renew(&term).await.expect("renew"));
    assert!(second.record(&next, b"two").await.expect("record"));
    // Resigned: the first leads again at once, with the second's record.
    second.resign(next).await.expect("resign");
    let again = first.campaign().await.expect("campaign").expect("resigned");
    assert_eq!(again.record(), Some(&b"two"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_election_hands_the_record_to_the_next_consumer() {
    use celeriac::amqp::AmqpElection;
    use celeriac::election::Election;
    if skipped("amqp") {
        return;
    }
    let name = unique_queue("election");
    let first = AmqpElection::new(&amqp_url(), &name).lease(Duration::from_secs(2));
    let second = AmqpElection::new(&amqp_url(), &name).lease(Duration::from_secs(2));
    let term = first
        .campaign()
        .await
        .expect("RabbitMQ is required by this test: run scripts/test.sh, which starts it")
        .expect("the first consumer leads");
    assert_eq!(term.record(), None);
    assert!(second.campaign().await.expect("campaign").is_none());
    for n in 0..5 {
        assert!(
            first
                .record(&term, format!("record {n}").as_bytes())
                .await
                .expect("record")
        );
    }
    assert!(first.renew(&term).await.expect("renew"));
    assert!(second.campaign().await.expect("campaign").is_none());
    first.resign(term).await.expect("resign");
    // The tokens held go to the next consumer; it keeps the latest record.
    let mut next = None;
    for _ in 0..50 {
        next = second.campaign().await.expect("campaign");
        if next.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let next = next.expect("the second consumer leads after the first resigned");
    assert_eq!(next.record(), Some(&b"record 4"[..]));
    second.resign(next).await.expect("resign");
}
