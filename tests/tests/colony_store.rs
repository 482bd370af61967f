//! The colony's store, one conformance test run on both implementations:
//! SQLite (a file in a temporary directory) and PostgreSQL (Debian's
//! server, a cluster of the test's own on a free loopback port). The same
//! calls must give the same answers.

use coral_colony::store::{
    self, AgentRow, Cursor, LossRow, MemberRow, RecordQuery, RecordRow, Store, TapRow,
};
use coral_e2e::colony::{Postgres, Scratch};

fn record(agent: &str, collector: &str, seq: u64, time: u64, kind: &str, node: &str) -> RecordRow {
    RecordRow {
        tap_id: "tap-1".into(),
        agent_id: agent.into(),
        node: node.into(),
        collector_id: collector.into(),
        kind: kind.into(),
        seq,
        time_unix_nano: time,
        is_final: false,
        record: vec![seq as u8, 0, 255],
    }
}

async fn conformance(store: Box<dyn Store>) {
    // Agents: upsert, touch, replace.
    let mut a = AgentRow {
        agent_id: "a1".into(),
        node: "n1".into(),
        labels: [("env".to_string(), "prod".to_string())].into(),
        address: "unix:///a".into(),
        source: 1,
        registered_unix_nano: 10,
        last_seen_unix_nano: 10,
        capabilities: vec![1, 2, 3],
        ..Default::default()
    };
    store.upsert_agent(&a).await.unwrap();
    a.last_seen_unix_nano = 20;
    store.upsert_agent(&a).await.unwrap();
    assert!(store.touch_agent("a1", 30).await.unwrap());
    assert!(!store.touch_agent("nobody", 30).await.unwrap());
    let got = store.agent("a1").await.unwrap().unwrap();
    assert_eq!(got.last_seen_unix_nano, 30);
    assert_eq!(got.labels["env"], "prod");
    assert_eq!(got.capabilities, vec![1, 2, 3]);
    let b = AgentRow {
        agent_id: "a2".into(),
        ..a.clone()
    };
    store.upsert_agent(&b).await.unwrap();
    assert_eq!(
        store.replace_agents("a2", "n1", "unix:///a").await.unwrap(),
        vec!["a1".to_string()]
    );
    assert!(
        store
            .replace_agents("a2", "n1", "unix:///a")
            .await
            .unwrap()
            .is_empty()
    );
    let agents = store.agents().await.unwrap();
    assert_eq!(agents.len(), 2);
    assert_eq!(
        agents
            .iter()
            .find(|x| x.agent_id == "a1")
            .unwrap()
            .replaced_by,
        "a2"
    );

    // A tap and its members.
    let tap = TapRow {
        tap_id: "tap-1".into(),
        kind: "syscall-stats".into(),
        spec: vec![9, 9],
        selector: vec![],
        created_unix_nano: 100,
        deadline_unix_nano: 200,
    };
    let m = |agent: &str, status: i32| MemberRow {
        tap_id: "tap-1".into(),
        agent_id: agent.into(),
        node: format!("node-{agent}"),
        address: "unix:///a".into(),
        status,
        collector_id: format!("c-{agent}"),
        collector_state: 2,
        error: String::new(),
    };
    store
        .insert_tap(&tap, &[m("a1", 1), m("a2", 3)])
        .await
        .unwrap();
    let mut changed = m("a1", 2);
    changed.error = "done".into();
    store.update_member(&changed).await.unwrap();
    store.set_deadline("tap-1", 300).await.unwrap();
    let (t, members) = store.tap("tap-1").await.unwrap().unwrap();
    assert_eq!(t.deadline_unix_nano, 300);
    assert_eq!(t.spec, vec![9, 9]);
    assert_eq!(members.len(), 2);
    assert_eq!(members[0].status, 2);
    assert_eq!(members[0].error, "done");
    assert!(store.tap("nope").await.unwrap().is_none());
    assert_eq!(store.taps().await.unwrap().len(), 1);
    assert_eq!(store.members_with_status(3).await.unwrap().len(), 1);

    // Records: stored once per (agent, collector, seq), in big batches too.
    let mut batch: Vec<RecordRow> = (1..=450)
        .map(|s| record("a1", "c-a1", s, 1000 + s, "syscall-stats", "n1"))
        .collect();
    batch.last_mut().unwrap().is_final = true;
    assert_eq!(store.insert(&batch, &[]).await.unwrap(), 450);
    assert_eq!(
        store.insert(&batch[400..], &[]).await.unwrap(),
        0,
        "duplicates skipped"
    );
    let other = vec![
        record("a2", "c-a2", 1, 1005, "http-latency", "n2"),
        record("a2", "c-a2", 2, 5000, "http-latency", "n2"),
    ];
    let loss = LossRow {
        tap_id: "tap-1".into(),
        agent_id: "a2".into(),
        node: "n2".into(),
        collector_id: "c-a2".into(),
        from_seq: 3,
        count: 7,
        reason: "gap".into(),
        time_unix_nano: 6000,
    };
    assert_eq!(
        store
            .insert(&other, std::slice::from_ref(&loss))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .insert(&[], std::slice::from_ref(&loss))
            .await
            .unwrap(),
        0
    );
    let stored = store.stored("a1", "c-a1").await.unwrap();
    assert_eq!((stored.max_seq, stored.records, stored.lost), (450, 450, 0));
    let stored = store.stored("a2", "c-a2").await.unwrap();
    assert_eq!((stored.max_seq, stored.records, stored.lost), (2, 2, 7));
    assert_eq!(store.stored("zz", "zz").await.unwrap().max_seq, 0);
    assert_eq!(store.losses("tap-1").await.unwrap(), vec![loss]);

    // Queries: filters, order (time, agent, collector, seq) and cursors.
    let all = |q: RecordQuery| {
        let store = &store;
        async move {
            let mut q = q;
            q.limit = 100;
            let mut out = Vec::new();
            loop {
                let page = store.records(&q).await.unwrap();
                let full = page.len() == q.limit;
                if let Some(last) = page.last() {
                    q.after = Some(Cursor {
                        time_unix_nano: last.time_unix_nano,
                        agent_id: last.agent_id.clone(),
                        collector_id: last.collector_id.clone(),
                        seq: last.seq,
                    });
                }
                out.extend(page);
                if !full {
                    return out;
                }
            }
        }
    };
    let everything = all(RecordQuery::default()).await;
    assert_eq!(everything.len(), 452);
    let times: Vec<u64> = everything.iter().map(|r| r.time_unix_nano).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    // Same time (1005): a1 before a2.
    let at_1005: Vec<&str> = everything
        .iter()
        .filter(|r| r.time_unix_nano == 1005)
        .map(|r| r.agent_id.as_str())
        .collect();
    assert_eq!(at_1005, ["a1", "a2"]);
    assert_eq!(everything[0].record, vec![1, 0, 255]);
    let http = all(RecordQuery {
        kind: Some("http-latency".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(http.len(), 2);
    let n2_late = all(RecordQuery {
        nodes: vec!["n2".into(), "n9".into()],
        since_unix_nano: 2000,
        ..Default::default()
    })
    .await;
    assert_eq!(n2_late.len(), 1);
    assert_eq!(n2_late[0].seq, 2);
    let window = all(RecordQuery {
        agent_ids: vec!["a1".into()],
        since_unix_nano: 1100,
        until_unix_nano: 1200,
        tap_id: Some("tap-1".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(window.len(), 100);
    let finals = all(RecordQuery {
        final_only: true,
        ..Default::default()
    })
    .await;
    assert_eq!(finals.len(), 1);
    assert_eq!(finals[0].seq, 450);

    // Retention per kind, and for the rest.
    assert_eq!(store.expire("http-latency", 2000).await.unwrap(), 1);
    assert_eq!(
        store
            .expire_others(&["http-latency".to_string()], 1101)
            .await
            .unwrap(),
        100
    );
    assert_eq!(all(RecordQuery::default()).await.len(), 351);
}

#[tokio::test]
async fn sqlite_store_conformance() {
    let s = Scratch::new("store-sqlite");
    let url = format!("sqlite://{}", s.path("sub/dir/colony.db").display());
    conformance(store::open(&url).await.unwrap()).await;
    // Reopened: the schema is there, and the data.
    let again = store::open(&url).await.unwrap();
    assert_eq!(again.backend(), "sqlite");
    assert_eq!(again.agents().await.unwrap().len(), 2);
}

#[tokio::test]
async fn postgres_store_conformance() {
    let pg = Postgres::start();
    conformance(store::open(&pg.url).await.unwrap()).await;
    let again = store::open(&pg.url).await.unwrap();
    assert_eq!(again.backend(), "postgres");
    assert_eq!(again.agents().await.unwrap().len(), 2);
}

#[tokio::test]
async fn bad_store_urls_are_refused() {
    for url in ["mysql://x", "sqlite://"] {
        let err = store::open(url).await.err().expect(url).to_string();
        assert!(err.contains("expected sqlite"), "{url}: {err}");
    }
}
