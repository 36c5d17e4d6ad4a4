//! Data subjects through the public API, on every backend ([`common::backends`]): the same test
//! code, the same expected answers. Suppressions (bulk, paging, filters, removal, the expiry
//! sweep), preferences, the audit trail, GDPR export and erasure; then, on PostgreSQL, two
//! nodes over one database hearing each other's changes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use herald_storage::{
    Accepted, AuditEntry, Change, DedupeKey, MessageId, MessageRecord, NewMessage, NewSuppression,
    Options, PostgresOptions, Preferences, Recipient, Store, SuppressionRecord,
};
use serde_json::json;

fn who(raw: &str) -> Recipient {
    Recipient::parse(raw).unwrap()
}

fn record(reason: &str, expires: Option<u64>, note: Option<&str>) -> SuppressionRecord {
    SuppressionRecord {
        reason: reason.into(),
        expires_at_ms: expires,
        note: note.map(Into::into),
        created_by: "admin-token".into(),
        created_at_ms: 1_000,
    }
}

fn suppression(recipient: &str, channel: &str, record: SuppressionRecord) -> NewSuppression {
    NewSuppression {
        recipient: who(recipient),
        channel: channel.into(),
        record,
    }
}

fn entry(at_ms: u64, actor: &str, action: &str, subject: &str) -> AuditEntry {
    AuditEntry {
        at_ms,
        actor: actor.into(),
        action: action.into(),
        subject: subject.into(),
        before: None,
        after: None,
    }
}

/// The audit entry the API writes for a new suppression: it names the recipient in `after`.
fn created(item: &NewSuppression) -> AuditEntry {
    AuditEntry {
        after: Some(json!({
            "recipient": item.recipient,
            "channel": item.channel,
            "note": item.record.note,
        })),
        ..entry(
            item.record.created_at_ms,
            "admin-token",
            "suppression.create",
            item.recipient.as_str(),
        )
    }
}

async fn add(store: &Store, items: Vec<NewSuppression>) {
    let audit = items.iter().map(created).collect();
    store.add_suppressions(items, audit).await.unwrap();
}

fn message(recipient: Option<&str>, at_ms: u64, external: &str) -> NewMessage {
    NewMessage {
        id: MessageId::generate(at_ms),
        record: MessageRecord {
            source: Some("src".into()),
            external_id: Some(external.into()),
            event_type: Some("user.updated".into()),
            content_type: Some("application/json".into()),
            recipient: recipient.map(who),
            channel: Some("email".into()),
            category: None,
            received_at_ms: at_ms,
            body_len: 13,
        },
        body: Bytes::from(format!("{{\"n\":\"{external:>5}\"}}")),
        dedupe_key: Some(DedupeKey::new("src", external)),
        destinations: vec!["d1".into()],
        suppress: None,
    }
}

async fn insert(store: &Store, msg: NewMessage) -> MessageId {
    match store.insert_message_async(msg).await.unwrap() {
        Accepted::New(id) => id,
        Accepted::Duplicate(id) => panic!("{id} is a duplicate"),
    }
}

fn prefs(channels: &[(&str, bool)], categories: &[(&str, &[(&str, bool)])]) -> Preferences {
    let map = |entries: &[(&str, bool)]| -> BTreeMap<String, bool> {
        entries
            .iter()
            .map(|(c, on)| ((*c).to_owned(), *on))
            .collect()
    };
    Preferences {
        channels: map(channels),
        categories: categories
            .iter()
            .map(|(category, channels)| ((*category).to_owned(), map(channels)))
            .collect(),
    }
}

/// `update_preferences` that sets them to `to`, with the audit entry the API writes at `at_ms`.
async fn set_prefs(store: &Store, at_ms: u64, recipient: &Recipient, to: Option<Preferences>) {
    let subject = recipient.as_str().to_owned();
    store
        .update_preferences(
            recipient.clone(),
            move |_| to.clone(),
            move |before, after| AuditEntry {
                before: before.map(|p| serde_json::to_value(p).unwrap()),
                after: after.map(|p| serde_json::to_value(p).unwrap()),
                ..entry(at_ms, "prefs-token", "preferences.update", &subject)
            },
        )
        .await
        .unwrap();
}

/// Each listed suppression as (recipient, channel, reason).
async fn listed(
    store: &Store,
    recipient: Option<&str>,
    channel: Option<&str>,
) -> Vec<(String, String, String)> {
    let (items, more) = store
        .list_suppressions(recipient.map(who), channel.map(Into::into), None, 1_000)
        .await
        .unwrap();
    assert!(!more);
    items
        .into_iter()
        .map(|s| (s.recipient.to_string(), s.channel, s.record.reason))
        .collect()
}

fn row(r: &str, c: &str, reason: &str) -> (String, String, String) {
    (r.into(), c.into(), reason.into())
}

#[allow(clippy::too_many_lines)] // one scenario: add, page, filter, remove, audit
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppressions_page_filter_and_remove_with_their_audit() {
    for backend in common::backends().await {
        let name = backend.name;
        let store = backend.open(Options::default()).await;
        add(
            &store,
            vec![
                suppression("a@x", "email", record("user_request", None, None)),
                suppression("a@x", "sms", record("user_request", None, None)),
                suppression("c@x", "*", record("complaint", None, None)),
                suppression(" B@X ", "email", record("bounce", None, None)),
                // Later in the same bulk: replaces the first.
                suppression("A@x", "email", record("admin_action", None, None)),
            ],
        )
        .await;

        let all = vec![
            row("a@x", "email", "admin_action"),
            row("a@x", "sms", "user_request"),
            row("b@x", "email", "bounce"),
            row("c@x", "*", "complaint"),
        ];
        assert_eq!(listed(&store, None, None).await, all, "{name}");

        // Pages of two, each resuming after the last (recipient, channel) shown.
        let mut after = None;
        let mut pages = Vec::new();
        loop {
            let (items, more) = store
                .list_suppressions(None, None, after.clone(), 2)
                .await
                .unwrap();
            pages.push(items.len());
            after = items
                .last()
                .map(|s| (s.recipient.to_string(), s.channel.clone()));
            if !more {
                break;
            }
        }
        assert_eq!(pages, [2, 2], "{name}");
        let (none, more) = store.list_suppressions(None, None, None, 0).await.unwrap();
        assert!(
            none.is_empty() && more,
            "{name}: a limit of 0 still says more follow"
        );

        assert_eq!(
            listed(&store, Some("A@X"), None).await,
            all[..2],
            "{name}: the recipient filter is canonical"
        );
        assert_eq!(
            listed(&store, None, Some("email")).await,
            [all[0].clone(), all[2].clone()],
            "{name}"
        );
        assert_eq!(
            listed(&store, Some("b@x"), Some("email")).await,
            all[2..3],
            "{name}"
        );
        let (rest, more) = store
            .list_suppressions(
                Some(who("a@x")),
                None,
                Some(("a@x".into(), "email".into())),
                10,
            )
            .await
            .unwrap();
        assert_eq!(rest.len(), 1, "{name}");
        assert_eq!((rest[0].channel.as_str(), more), ("sms", false), "{name}");

        let channels: BTreeSet<String> = store
            .suppressions_of(who("a@x"))
            .await
            .unwrap()
            .into_iter()
            .map(|(channel, _)| channel)
            .collect();
        assert_eq!(channels, BTreeSet::from(["email".into(), "sms".into()]));

        let removing = |r: &SuppressionRecord| AuditEntry {
            before: Some(serde_json::to_value(r).unwrap()),
            ..entry(3_000, "admin-token", "suppression.delete", "a@x")
        };
        let removed = store
            .remove_suppression(who("a@x"), "sms".into(), removing)
            .await
            .unwrap();
        assert_eq!(removed.map(|r| r.reason).as_deref(), Some("user_request"));
        let again = store
            .remove_suppression(who("a@x"), "sms".into(), removing)
            .await
            .unwrap();
        assert!(again.is_none(), "{name}");
        assert_eq!(listed(&store, Some("a@x"), None).await, all[..1], "{name}");

        // Every change has its entry, newest first; the removal that removed nothing has none.
        let (trail, more) = store
            .list_audit(Some("a@x".into()), None, None, 100)
            .await
            .unwrap();
        let actions: Vec<&str> = trail.iter().map(|a| a.entry.action.as_str()).collect();
        assert_eq!(
            actions,
            [
                "suppression.delete",
                "suppression.create",
                "suppression.create",
                "suppression.create"
            ],
            "{name}"
        );
        assert!(!more);
        assert_eq!(
            trail[0].entry.before.as_ref().unwrap()["reason"],
            "user_request"
        );

        // All of it is stored: it is all there after a restart.
        store.close().await;
        drop(store);
        let store = backend.open(Options::default()).await;
        assert_eq!(
            listed(&store, None, None).await,
            [all[0].clone(), all[2].clone(), all[3].clone()],
            "{name} after reopening"
        );
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_reclaims_expired_suppressions_earliest_first() {
    for backend in common::backends().await {
        let name = backend.name;
        let store = backend.open(Options::default()).await;
        add(
            &store,
            vec![
                suppression("e1@x", "email", record("bounce", Some(100), None)),
                suppression("b@x", "email", record("bounce", Some(200), None)),
                suppression("a@x", "email", record("bounce", Some(200), None)),
                suppression("e4@x", "sms", record("bounce", Some(300), None)),
                suppression("forever@x", "*", record("complaint", None, None)),
            ],
        )
        .await;
        // Replacing a suppression replaces its expiry too: this one no longer expires.
        add(
            &store,
            vec![suppression(
                "e4@x",
                "push",
                record("bounce", Some(150), None),
            )],
        )
        .await;
        add(
            &store,
            vec![suppression("e4@x", "push", record("bounce", None, None))],
        )
        .await;

        assert_eq!(store.sweep_suppressions(99, 10).await.unwrap(), 0, "{name}");
        assert_eq!(store.sweep_suppressions(200, 0).await.unwrap(), 0, "{name}");
        assert_eq!(store.sweep_suppressions(200, 2).await.unwrap(), 2, "{name}");
        let left: Vec<String> = listed(&store, None, None)
            .await
            .into_iter()
            .map(|(r, c, _)| format!("{r}/{c}"))
            .collect();
        assert_eq!(
            left,
            ["b@x/email", "e4@x/push", "e4@x/sms", "forever@x/*"],
            "{name}: the earliest expiry, then a@x before b@x"
        );
        // One expiring exactly now no longer applies, so it is swept now.
        assert_eq!(
            store.sweep_suppressions(200, 10).await.unwrap(),
            1,
            "{name}"
        );
        assert_eq!(
            store.sweep_suppressions(u64::MAX, 10).await.unwrap(),
            1,
            "{name}"
        );
        assert_eq!(
            store.sweep_suppressions(u64::MAX, 10).await.unwrap(),
            0,
            "{name}"
        );
        let left: Vec<String> = listed(&store, None, None)
            .await
            .into_iter()
            .map(|(r, c, _)| format!("{r}/{c}"))
            .collect();
        assert_eq!(left, ["e4@x/push", "forever@x/*"], "{name}");
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferences_are_read_changed_and_reset_with_their_audit() {
    for backend in common::backends().await {
        let name = backend.name;
        let store = backend.open(Options::default()).await;
        let dana = who("Dana@Example.com");
        assert_eq!(store.preferences(dana.clone()).await.unwrap(), None);

        let first = prefs(&[("email", false)], &[]);
        set_prefs(&store, 2_000, &dana, Some(first.clone())).await;
        assert_eq!(
            store.preferences(who("dana@example.com")).await.unwrap(),
            Some(first.clone()),
            "{name}"
        );

        // A change is applied to what is stored, and returned.
        let changed = store
            .update_preferences(
                dana.clone(),
                |current| {
                    let mut p = current.unwrap_or_default();
                    p.categories
                        .entry("marketing".into())
                        .or_default()
                        .insert("sms".into(), false);
                    Some(p)
                },
                |_, _| {
                    entry(
                        2_500,
                        "prefs-token",
                        "preferences.opt_out",
                        "dana@example.com",
                    )
                },
            )
            .await
            .unwrap();
        let both = prefs(&[("email", false)], &[("marketing", &[("sms", false)])]);
        assert_eq!(changed, Some(both.clone()), "{name}");
        assert_eq!(store.preferences(dana.clone()).await.unwrap(), Some(both));

        // Concurrent changes of one recipient never lose each other (on PostgreSQL they run
        // on several connections at once).
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (store, dana) = (store.clone(), dana.clone());
                tokio::spawn(async move {
                    store
                        .update_preferences(
                            dana,
                            move |current| {
                                let mut p = current.unwrap_or_default();
                                p.channels.insert(format!("ch{i}"), false);
                                Some(p)
                            },
                            |_, _| {
                                entry(
                                    2_600,
                                    "prefs-token",
                                    "preferences.opt_out",
                                    "dana@example.com",
                                )
                            },
                        )
                        .await
                        .unwrap()
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let now = store.preferences(dana.clone()).await.unwrap().unwrap();
        assert_eq!(now.channels.len(), 9, "{name}: {now:?}");

        set_prefs(&store, 2_700, &dana, None).await;
        assert_eq!(
            store.preferences(dana.clone()).await.unwrap(),
            None,
            "{name}"
        );

        let (trail, _) = store
            .list_audit(Some("dana@example.com".into()), None, None, 100)
            .await
            .unwrap();
        assert_eq!(trail.len(), 11, "{name}");
        let reset = &trail[0].entry;
        assert_eq!(reset.after, None);
        assert_eq!(reset.before.as_ref().unwrap()["channels"]["ch3"], false);
        let set = &trail[10].entry;
        assert_eq!(
            (set.before.clone(), set.after.clone()),
            (None, Some(serde_json::to_value(&first).unwrap())),
            "{name}: the first entry shows defaults before"
        );
        store.close().await;
    }
}

/// Erin's data on `store`: two messages, preferences with opt-outs and opt-ins, two
/// suppressions, and their audit entries; plus another recipient's.
async fn erin_and_frank(store: &Store) -> (Recipient, Vec<MessageId>, MessageId) {
    let erin = who("  Erin@Example.com ");
    let first = insert(store, message(Some("erin@example.com"), 1_000, "e1")).await;
    let second = insert(store, message(Some("ERIN@example.com"), 1_001, "e2")).await;
    let frank = insert(store, message(Some("frank@example.com"), 1_002, "f1")).await;
    insert(store, message(None, 1_003, "n1")).await;
    set_prefs(
        store,
        500,
        &erin,
        Some(prefs(
            &[("email", false), ("sms", true)],
            &[
                ("marketing", &[("email", true), ("push", false)]),
                ("news", &[("sms", true)]),
            ],
        )),
    )
    .await;
    add(
        store,
        vec![
            suppression(
                "erin@example.com",
                "email",
                record("user_request", None, Some("asked by erin@example.com")),
            ),
            suppression("erin@example.com", "*", record("bounce", Some(9_000), None)),
            suppression("frank@example.com", "sms", record("bounce", None, None)),
        ],
    )
    .await;
    (erin, vec![first, second], frank)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_holds_everything_about_a_recipient() {
    for backend in common::backends().await {
        let name = backend.name;
        let store = backend.open(Options::default()).await;
        let (erin, ids, _) = erin_and_frank(&store).await;
        let export = store.export_subject(erin.clone()).await.unwrap();

        let exported: Vec<MessageId> = export.messages.iter().map(|m| m.id).collect();
        assert_eq!(exported, ids, "{name}: oldest first");
        let first = &export.messages[0];
        assert_eq!(first.body.as_deref(), Some(&b"{\"n\":\"   e1\"}"[..]));
        assert_eq!(first.record.recipient.as_ref(), Some(&erin));
        let deliveries: Vec<&str> = first.deliveries.iter().map(|(d, _)| d.as_str()).collect();
        assert_eq!(deliveries, ["d1"], "{name}");

        assert!(
            export.preferences.as_ref().unwrap().channels["sms"],
            "{name}"
        );
        let suppressions: Vec<(&str, &str)> = export
            .suppressions
            .iter()
            .map(|s| (s.recipient.as_str(), s.channel.as_str()))
            .collect();
        assert_eq!(
            suppressions,
            [("erin@example.com", "*"), ("erin@example.com", "email")],
            "{name}"
        );
        let actions: Vec<&str> = export
            .audit
            .iter()
            .map(|a| a.entry.action.as_str())
            .collect();
        assert_eq!(
            actions,
            [
                "suppression.create",
                "suppression.create",
                "preferences.update"
            ],
            "{name}: newest first"
        );
        assert!(
            export
                .audit
                .iter()
                .all(|a| a.entry.subject == "erin@example.com")
        );
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_keeps_every_opt_out_under_the_pseudonym_and_nothing_else() {
    for backend in common::backends().await {
        let name = backend.name;
        let store = backend.open(Options::default()).await;
        let (erin, ids, frank) = erin_and_frank(&store).await;
        let alias = store.pseudonym(&erin);
        assert!(alias.as_str().starts_with(herald_storage::PSEUDONYM_PREFIX));

        let erased = store
            .erase_subject(erin.clone(), |alias| {
                entry(5_000, "gdpr-token", "subject.erase", alias.as_str())
            })
            .await
            .unwrap();
        assert_eq!(erased.pseudonym.as_ref(), Some(&alias), "{name}");
        assert_eq!(
            (
                erased.messages,
                erased.preferences,
                erased.suppressions,
                erased.opt_outs_kept,
                erased.audit_entries
            ),
            (2, true, 2, true, 3),
            "{name}: {erased:?}"
        );

        // The messages are gone, with their deliveries; the others stay. Their idempotency
        // keys stay: a partner's retry is still a duplicate, not a new message.
        for id in &ids {
            assert!(store.message(*id).await.unwrap().is_none(), "{name}");
        }
        assert!(store.message(frank).await.unwrap().is_some(), "{name}");
        let retry = store
            .insert_message_async(message(Some("erin@example.com"), 1_000, "e1"))
            .await
            .unwrap();
        assert_eq!(retry, Accepted::Duplicate(ids[0]), "{name}");

        // Every opt-out still applies, looked up by the address.
        let kept: Vec<(String, SuppressionRecord)> =
            store.suppressions_of(erin.clone()).await.unwrap();
        let channels: Vec<&str> = kept.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(channels, ["*", "email"], "{name}");
        assert!(
            kept.iter().all(|(_, r)| r.note.is_none()),
            "{name}: notes go"
        );
        assert_eq!(kept[0].1.expires_at_ms, Some(9_000));
        assert_eq!(
            store.preferences(erin.clone()).await.unwrap(),
            Some(prefs(
                &[("email", false)],
                &[("marketing", &[("push", false)])]
            )),
            "{name}: only the opt-outs"
        );
        // …under the pseudonym, not the address.
        assert!(listed(&store, Some(erin.as_str()), None).await.is_empty());
        assert_eq!(
            listed(&store, Some(alias.as_str()), None).await.len(),
            2,
            "{name}"
        );
        assert_eq!(
            listed(&store, Some("frank@example.com"), None).await.len(),
            1
        );

        // The audit trail is re-filed under the pseudonym, every mention replaced.
        let (own, _) = store
            .list_audit(Some(erin.to_string()), None, None, 100)
            .await
            .unwrap();
        assert!(own.is_empty(), "{name}");
        let (trail, _) = store
            .list_audit(Some(alias.to_string()), None, None, 100)
            .await
            .unwrap();
        assert_eq!(trail.len(), 4, "{name}");
        assert_eq!(trail[0].entry.action, "subject.erase");
        assert_eq!(
            trail[1].entry.after.as_ref().unwrap()["recipient"],
            alias.as_str()
        );

        // What an export holds now names nobody.
        let export = store.export_subject(erin.clone()).await.unwrap();
        assert!(export.messages.is_empty(), "{name}");
        assert_eq!(export.suppressions.len(), 2, "{name}");
        assert_eq!(export.audit.len(), 4, "{name}");
        let text = format!("{export:?}");
        assert!(!text.contains("erin"), "{name}: {text}");

        // A choice made since is laid over the kept opt-outs.
        set_prefs(&store, 6_000, &erin, Some(prefs(&[("email", true)], &[]))).await;
        assert_eq!(
            store.preferences(erin.clone()).await.unwrap(),
            Some(prefs(
                &[("email", true)],
                &[("marketing", &[("push", false)])]
            )),
            "{name}"
        );
        store.close().await;
        drop(store);
        let store = backend.open(Options::default()).await;
        assert_eq!(
            store.suppressions_of(erin.clone()).await.unwrap().len(),
            2,
            "{name} after reopening: the same key makes the same pseudonym"
        );
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_pages_newest_first_by_subject_and_actor() {
    let mut answers = Vec::new();
    for backend in common::backends().await {
        let name = backend.name;
        let store = backend.open(Options::default()).await;
        let actors = ["alice", "bob", "carol"];
        let trail: Vec<AuditEntry> = (0..12u64)
            .map(|i| {
                let subject = if i % 2 == 0 { "s1" } else { "s2" };
                let actor = actors[usize::try_from(i % 3).unwrap()];
                entry(10_000 + i, actor, "destination.update", subject)
            })
            .collect();
        store.add_suppressions(Vec::new(), trail).await.unwrap();

        // Every page of `limit`, following the cursor: the entries' times and the page sizes.
        let pages = |subject: Option<&str>, actor: Option<&str>, limit: usize| {
            let store = store.clone();
            let (subject, actor) = (subject.map(ToOwned::to_owned), actor.map(ToOwned::to_owned));
            async move {
                let mut after = None;
                let (mut times, mut sizes) = (Vec::new(), Vec::new());
                loop {
                    let (items, more) = store
                        .list_audit(subject.clone(), actor.clone(), after, limit)
                        .await
                        .unwrap();
                    sizes.push(items.len());
                    times.extend(items.iter().map(|a| a.entry.at_ms - 10_000));
                    after = items.last().map(|a| a.id);
                    if !more {
                        return (times, sizes);
                    }
                }
            }
        };
        let every = pages(None, None, 5).await;
        assert_eq!(
            every,
            ((0..12).rev().collect::<Vec<u64>>(), vec![5, 5, 2]),
            "{name}"
        );
        let s1 = pages(Some("s1"), None, 4).await;
        assert_eq!(s1, (vec![10, 8, 6, 4, 2, 0], vec![4, 2]), "{name}");
        let alice = pages(None, Some("alice"), 10).await;
        assert_eq!(alice, (vec![9, 6, 3, 0], vec![4]), "{name}");
        let both = pages(Some("s1"), Some("alice"), 1).await;
        assert_eq!(both, (vec![6, 0], vec![1, 1]), "{name}");
        let nobody = pages(Some("s3"), None, 10).await;
        assert_eq!(nobody, (vec![], vec![0]), "{name}");
        answers.push((every, s1, alice, both));
        store.close().await;
    }
    answers.dedup();
    assert_eq!(answers.len(), 1, "every backend answers the same");
}

/// The subjects of [`listening`]'s probes.
const PROBE: &str = "probe-";

/// The next change `changes` hears that is about a subject (other than a probe), within a few
/// seconds.
async fn heard(changes: &mut tokio::sync::broadcast::Receiver<Change>) -> String {
    loop {
        let change = tokio::time::timeout(Duration::from_secs(10), changes.recv())
            .await
            .expect("a change within 10 s")
            .expect("the channel is open");
        if let Change::Subject(recipient) = change
            && !recipient.starts_with(PROBE)
        {
            return recipient;
        }
    }
}

/// Writes on `from` until `to` hears of it: a node's listener starts in the background, and
/// what is sent before its `LISTEN` is not heard.
async fn listening(from: &Store, to: &mut tokio::sync::broadcast::Receiver<Change>, name: &str) {
    let subject = format!("{PROBE}{name}");
    for _ in 0..100 {
        add(
            from,
            vec![suppression(&subject, "email", record("bounce", None, None))],
        )
        .await;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
        while let Ok(Ok(change)) = tokio::time::timeout_at(deadline, to.recv()).await {
            if change == Change::Subject(subject.clone()) {
                return;
            }
        }
    }
    panic!("{name}'s changes were never heard");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_node_hears_of_subject_changes_and_sees_them() {
    let Some(backend) = common::backends()
        .await
        .into_iter()
        .find(|b| b.name == "postgres")
    else {
        return; // no PostgreSQL here: `backends` said why
    };
    let url = backend.postgres_url().unwrap().to_owned();
    let a = Store::open_postgres(PostgresOptions::new(url.clone(), "node-a"))
        .await
        .unwrap();
    let b = Store::open_postgres(PostgresOptions::new(url, "node-b"))
        .await
        .unwrap();
    let (mut on_a, mut on_b) = (a.changes(), b.changes());
    listening(&a, &mut on_b, "a").await;
    listening(&b, &mut on_a, "b").await;
    let xavier = who("Xavier@Example.com");

    add(
        &a,
        vec![suppression(
            "xavier@example.com",
            "email",
            record("bounce", None, None),
        )],
    )
    .await;
    assert_eq!(heard(&mut on_b).await, "xavier@example.com");
    let seen = b.suppressions_of(xavier.clone()).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "email");

    // A bulk names each recipient once.
    add(
        &a,
        vec![
            suppression("p1@x", "email", record("bounce", None, None)),
            suppression("p2@x", "email", record("bounce", None, None)),
            suppression("p1@x", "sms", record("bounce", Some(50), None)),
        ],
    )
    .await;
    let bulk = BTreeSet::from([heard(&mut on_b).await, heard(&mut on_b).await]);
    assert_eq!(bulk, BTreeSet::from(["p1@x".to_owned(), "p2@x".to_owned()]));

    // The sweep and preference changes are heard too, either way.
    assert_eq!(a.sweep_suppressions(100, 10).await.unwrap(), 1);
    assert_eq!(heard(&mut on_b).await, "p1@x");
    set_prefs(&b, 2_000, &xavier, Some(prefs(&[("sms", false)], &[]))).await;
    assert_eq!(heard(&mut on_a).await, "xavier@example.com");
    assert_eq!(
        a.preferences(xavier.clone()).await.unwrap(),
        Some(prefs(&[("sms", false)], &[]))
    );

    // An erasure names the address and the pseudonym, one key for every node.
    assert_eq!(a.pseudonym(&xavier), b.pseudonym(&xavier));
    a.erase_subject(xavier.clone(), |alias| {
        entry(5_000, "gdpr-token", "subject.erase", alias.as_str())
    })
    .await
    .unwrap();
    let erased = BTreeSet::from([heard(&mut on_b).await, heard(&mut on_b).await]);
    assert_eq!(
        erased,
        BTreeSet::from([
            "xavier@example.com".to_owned(),
            b.pseudonym(&xavier).to_string()
        ])
    );
    assert_eq!(b.suppressions_of(xavier.clone()).await.unwrap().len(), 1);
    assert_eq!(
        b.preferences(xavier.clone()).await.unwrap(),
        Some(prefs(&[("sms", false)], &[]))
    );

    // A node never hears itself: A heard B's changes and nothing of its own.
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(change) = on_a.try_recv() {
        assert!(
            matches!(&change, Change::Subject(s) if s.starts_with(PROBE)),
            "node A heard {change:?}"
        );
    }
    a.close().await;
    b.close().await;
}
