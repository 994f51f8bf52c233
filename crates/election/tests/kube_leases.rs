//! The election through the Kubernetes API: kube's client against the
//! project's fake apiserver, which keeps Leases with the apiserver's
//! resourceVersion conflicts. Real HTTP, real JSON; the outcomes are
//! waited for, never timed.

use std::time::Duration;

use apiserver_proxy_election::{
    Elector, Holder, KubeLeases, KubeLeasesError, Leadership, LeaseRecord, LeaseStore, Step,
    StoreError, Timings,
};
use apiserver_proxy_testkit::apiserver::{FakeApiServer, LeaseMode};
use tokio::sync::watch;

fn store(urls: &[&str]) -> apiserver_proxy_election::KubeLeases {
    apiserver_proxy_election::KubeLeases::new(
        urls.iter()
            .map(|u| kube::Config::new(u.parse().expect("url")))
            .collect(),
        "kube-system",
        "bcs-apiserver-proxy-vip",
        Duration::from_millis(500),
    )
    .expect("clients")
}

async fn fake() -> FakeApiServer {
    FakeApiServer::plain("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve")
}

/// Waits (up to a minute: the outcome matters, not its speed) for `what`.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..6000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test]
async fn create_read_replace_and_a_stale_write_is_a_conflict() {
    let server = fake().await;
    let mut s = store(&[&server.url()]);
    assert_eq!(s.get().await.expect("read"), None);
    let made = s
        .create(&LeaseRecord {
            holder: Some("node-a".into()),
            lease_duration_seconds: Some(2),
            renew_time: Some("2026-12-05T10:00:00.123456Z".into()),
            ..LeaseRecord::default()
        })
        .await
        .expect("create");
    let v1 = made.version.clone().expect("a version");
    assert!(matches!(s.create(&made).await, Err(StoreError::Conflict)));
    let stored = server
        .lease("kube-system", "bcs-apiserver-proxy-vip")
        .expect("stored");
    assert_eq!(stored["spec"]["holderIdentity"], "node-a");
    assert_eq!(stored["spec"]["leaseDurationSeconds"], 2);
    assert_eq!(stored["spec"]["renewTime"], "2026-12-05T10:00:00.123456Z");
    assert_eq!(stored["kind"], "Lease");

    let renewed = s
        .replace(&LeaseRecord {
            renew_time: Some("2026-12-05T10:00:01Z".into()),
            ..made.clone()
        })
        .await
        .expect("replace");
    assert_ne!(renewed.version.as_deref(), Some(v1.as_str()));
    // Someone else writing on the version we read first loses.
    let stale = LeaseRecord {
        holder: Some("node-b".into()),
        ..made
    };
    assert!(matches!(s.replace(&stale).await, Err(StoreError::Conflict)));
    assert_eq!(
        s.get().await.expect("read").and_then(|r| r.holder),
        Some("node-a".into())
    );
    // A replace without a version is refused here, not sent.
    let blind = LeaseRecord {
        version: None,
        ..renewed
    };
    assert!(matches!(
        s.replace(&blind).await,
        Err(StoreError::Unavailable(_))
    ));
}

#[tokio::test]
async fn an_unreachable_or_failing_apiserver_is_passed_over_for_the_next() {
    let server = fake().await;
    // Nothing listens on port 1.
    let mut s = store(&["http://127.0.0.1:1", &server.url()]);
    assert!(matches!(s.get().await, Err(StoreError::Unavailable(_))));
    assert_eq!(s.get().await.expect("the second apiserver"), None);
    // One that answers 503 (cut off from etcd) is passed over too.
    let failing = fake().await;
    failing.set_lease_mode(LeaseMode::Unavailable);
    let mut s = store(&[&failing.url(), &server.url()]);
    // At once: no hidden retries (kube's default would retry a 503 for
    // minutes).
    let e = tokio::time::timeout(Duration::from_secs(5), s.get())
        .await
        .expect("answered without retrying")
        .expect_err("503");
    assert!(e.to_string().contains("503"), "{e}");
    assert_eq!(s.get().await.expect("the second apiserver"), None);
    // One that hangs is passed over once the request timeout is up.
    let hanging = fake().await;
    hanging.set_lease_mode(LeaseMode::Hang);
    let mut s = store(&[&hanging.url(), &server.url()]);
    let e = s.get().await.expect_err("no answer");
    assert!(e.to_string().contains("no answer within 500 ms"), "{e}");
    assert_eq!(s.get().await.expect("the second apiserver"), None);
    // And there is no store without an apiserver.
    assert!(matches!(
        KubeLeases::new(Vec::new(), "kube-system", "x", Duration::from_secs(1)),
        Err(KubeLeasesError::NoApiservers)
    ));
}

#[tokio::test]
async fn a_write_keeps_what_others_put_on_the_lease_and_a_deleted_lease_is_a_conflict() {
    let server = fake().await;
    let mut s = store(&[&server.url()]);
    let made = s
        .create(&LeaseRecord {
            holder: Some("node-a".into()),
            lease_duration_ms: Some(1500),
            ..LeaseRecord::default()
        })
        .await
        .expect("create");
    assert_eq!(made.lease_duration_ms, Some(1500), "read back");
    server.edit_lease("kube-system", "bcs-apiserver-proxy-vip", |l| {
        l["metadata"]["labels"] = serde_json::json!({"team": "platform"});
        true
    });
    let read = s.get().await.expect("read").expect("there");
    s.replace(&read).await.expect("renew");
    let stored = server
        .lease("kube-system", "bcs-apiserver-proxy-vip")
        .expect("stored");
    assert_eq!(stored["metadata"]["labels"]["team"], "platform");
    assert_eq!(
        stored["metadata"]["annotations"]["bcs-apiserver-proxy/lease-duration-ms"],
        "1500"
    );
    let read = s.get().await.expect("read").expect("there");
    server.edit_lease("kube-system", "bcs-apiserver-proxy-vip", |_| false);
    assert!(matches!(s.replace(&read).await, Err(StoreError::Conflict)));
}

#[tokio::test]
async fn two_holders_with_a_lease_deleted_under_them_never_overlap() {
    // The Lease is deleted while node-a holds it: node-b must not create
    // it again before node-a's deadline has passed.
    let server = fake().await;
    let url = server.url();
    let t = Timings::default();
    let a = candidate("node-a", &[&url], t);
    until("node-a leads", || leads(&a)).await;
    let b = candidate("node-b", &[&url], t);
    let mut ha = Holder::new(a.lead.clone());
    let mut hb = Holder::new(b.lead.clone());
    assert!(matches!(ha.next().await, Some(Step::Take { .. })));
    server.edit_lease("kube-system", "bcs-apiserver-proxy-vip", |_| false);
    let deleted = apiserver_proxy_election::now();
    // node-a's next renewal finds the Lease gone (a conflict) and it lets
    // go; nobody creates the Lease again before it has been absent for a
    // whole lease duration, by which time node-a's deadline is long past.
    assert_eq!(ha.next().await, Some(Step::LetGo));
    let (who, step) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::select! {
            s = hb.next() => ("node-b", s),
            s = ha.next() => ("node-a", s),
        }
    })
    .await
    .expect("someone takes the recreated lease");
    assert!(matches!(step, Some(Step::Take { .. })), "{who}: {step:?}");
    let after = apiserver_proxy_election::now() - deleted;
    assert!(
        after >= t.lease_duration,
        "{who} took the deleted lease {after:?} after its deletion"
    );
    let _ = (a.stop.send(true), b.stop.send(true));
}

struct Candidate {
    lead: watch::Receiver<Leadership>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Elector<apiserver_proxy_election::KubeLeases>>,
}

fn candidate(name: &str, urls: &[&str], t: Timings) -> Candidate {
    let (tx, lead) = watch::channel(Leadership::Unknown);
    let (stop, stop_rx) = watch::channel(false);
    let mut e = Elector::new(store(urls), name, t).expect("valid election");
    let task = tokio::spawn(async move {
        e.run(&tx, stop_rx).await;
        e
    });
    Candidate { lead, stop, task }
}

fn leads(c: &Candidate) -> bool {
    c.lead.borrow().leads_at(apiserver_proxy_election::now())
}

#[tokio::test]
async fn two_candidates_one_leader_then_a_release_hands_over() {
    let server = fake().await;
    let url = server.url();
    let t = Timings::default();
    let a = candidate("node-a", &[&url], t);
    until("node-a leads", || leads(&a)).await;
    let b = candidate("node-b", &[&url], t);
    until("node-b follows node-a", || {
        *b.lead.borrow()
            == Leadership::Follower {
                holder: Some("node-a".into()),
            }
    })
    .await;
    assert!(leads(&a));

    // node-a stops in order: the election ends, then it releases.
    let _ = a.stop.send(true);
    let mut ea = a.task.await.expect("task");
    assert!(ea.release().await.expect("release"), "it held the lease");
    until("node-b takes over", || leads(&b)).await;
    let lease = server
        .lease("kube-system", "bcs-apiserver-proxy-vip")
        .expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], "node-b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    let _ = b.stop.send(true);
}

#[tokio::test]
async fn a_holder_whose_apiserver_fails_or_hangs_lets_go() {
    for mode in [LeaseMode::Unavailable, LeaseMode::Hang] {
        let server = fake().await;
        let a = candidate("node-a", &[&server.url()], Timings::default());
        until("node-a leads", || leads(&a)).await;
        let mut holder = Holder::new(a.lead.clone());
        assert!(matches!(holder.next().await, Some(Step::Take { .. })));
        server.set_lease_mode(mode);
        // Its holder lets go by the deadline, the election being stuck or
        // failing meanwhile.
        let let_go = tokio::time::timeout(Duration::from_secs(60), holder.next())
            .await
            .expect("let go");
        assert_eq!(let_go, Some(Step::LetGo), "{mode:?}");
        assert!(!leads(&a), "{mode:?}");
        // Back: it leads again (its own lease, renewed).
        server.set_lease_mode(LeaseMode::Serve);
        let back = tokio::time::timeout(Duration::from_secs(60), holder.next())
            .await
            .expect("back");
        assert!(matches!(back, Some(Step::Take { .. })), "{mode:?}");
        let _ = a.stop.send(true);
    }
}
