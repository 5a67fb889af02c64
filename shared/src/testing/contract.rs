//! The store contract: what every [`SubscriptionStore`] must do, run against the in-memory store
//! (`shared/tests/store_contract.rs`) and DynamoDB Local (`tests/integration/tests/dynamodb_store.rs`),
//! so the fake cannot drift from the real adapter. Each check takes a fresh, empty store.

use chrono::{Duration, TimeZone, Utc};

use crate::changes::{Decision, Effect, Event, Seen, plan_change, record_event};
use crate::domain::{
    AadIdentifier, OperationId, PlanId, Subscription, SubscriptionId, SubscriptionStatus, Timestamp,
};
use crate::lifecycle::LifecycleEvent;
use crate::store::{
    Change, ChangeSource, Committed, Lease, ListFilter, ReconcileCheckpoint, RejectedDelivery, StateWrite,
    StoreError, SubscriptionRecord, SubscriptionStore,
};

fn at(minute: i64) -> Timestamp {
    Utc.with_ymd_and_hms(2026, 5, 20, 14, 0, 0).single().expect("time") + Duration::minutes(minute)
}

fn fresh_id() -> SubscriptionId {
    SubscriptionId::parse(&uuid::Uuid::new_v4().to_string()).expect("id")
}

fn operation() -> OperationId {
    OperationId::parse(&uuid::Uuid::new_v4().to_string()).expect("id")
}

fn subscription(id: &SubscriptionId, status: SubscriptionStatus, tenant: &str) -> Subscription {
    let mut s = Subscription::new(id.clone());
    s.offer_id = Some("contract-offer".into());
    s.status = Some(status);
    s.plan_id = PlanId::parse("basic");
    s.quantity = Some(5);
    s.beneficiary = Some(AadIdentifier { tenant_id: Some(tenant.into()), ..AadIdentifier::default() });
    s
}

fn seen(s: Subscription, minute: i64) -> Event {
    Event::observed(s, at(minute), operation(), ChangeSource::Landing)
}

fn change(current: Option<&SubscriptionRecord>, event: Event) -> Change {
    match plan_change(current, Event { record_if_unchanged: true, ..event }, at(100)) {
        Decision::Apply(change) => change,
        other => panic!("expected a change, got {other:?}"),
    }
}

async fn seeded(
    store: &impl SubscriptionStore,
    status: SubscriptionStatus,
    tenant: &str,
) -> SubscriptionRecord {
    let id = fresh_id();
    let first = change(None, seen(subscription(&id, status, tenant), 0));
    assert_eq!(store.apply(&first).await.expect("create"), Committed::Written { version: 1 });
    store.get(&id).await.expect("read").expect("created")
}

/// Runs every check, each on a store from `fresh`.
pub async fn run_all<S, F, Fut>(fresh: F)
where
    S: SubscriptionStore,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    a_record_reads_back_exactly_as_written(&fresh().await).await;
    a_repeated_operation_is_a_duplicate_and_writes_nothing(&fresh().await).await;
    a_write_on_a_superseded_version_is_a_conflict_and_writes_nothing(&fresh().await).await;
    keeping_the_state_is_conditional_on_the_version_read(&fresh().await).await;
    creating_a_record_that_exists_is_a_conflict(&fresh().await).await;
    concurrent_writers_lose_no_update(&fresh().await).await;
    listing_pages_through_everything_once_and_filters(&fresh().await).await;
    a_page_token_we_did_not_make_is_refused(&fresh().await).await;
    batch_reads_and_tenant_lookups_find_exactly_what_exists(&fresh().await).await;
    rejected_deliveries_are_kept_by_day(&fresh().await).await;
    the_checkpoint_is_saved_only_over_the_version_read(&fresh().await).await;
    history_pages_through_every_entry_once_in_order(&fresh().await).await;
}

pub async fn a_record_reads_back_exactly_as_written(store: &impl SubscriptionStore) {
    let id = fresh_id();
    let mut s = subscription(&id, SubscriptionStatus::Subscribed, "tenant-a");
    s.term = Some(crate::domain::Term {
        start_date: Some(at(0)),
        end_date: Some(at(0) + Duration::days(30)),
        term_unit: Some(crate::domain::TermUnit::Unknown("PAY".into())),
        charge_duration: None,
    });
    s.last_modified = Some(at(3) + Duration::nanoseconds(123_456_700));
    let first = change(None, seen(s.clone(), 1));
    assert_eq!(store.apply(&first).await.expect("create"), Committed::Written { version: 1 });
    let record = store.get(&id).await.expect("read").expect("created");
    assert_eq!(record.subscription, s);
    assert_eq!((record.version, record.view_as_of), (1, Some(at(1))));
    assert_eq!(store.operation(&id, &first.operation.id).await.expect("op"), Some(first.operation.clone()));
    assert_eq!(store.history(&id).await.expect("history"), vec![first.history]);
    assert_eq!(store.get(&fresh_id()).await.expect("read"), None, "a missing record reads as none");
}

pub async fn a_repeated_operation_is_a_duplicate_and_writes_nothing(store: &impl SubscriptionStore) {
    let record = seeded(store, SubscriptionStatus::Subscribed, "tenant-a").await;
    let mut suspended = record.subscription.clone();
    suspended.status = Some(SubscriptionStatus::Suspended);
    let suspend = change(Some(&record), seen(suspended, 5));
    assert_eq!(store.apply(&suspend).await.expect("first"), Committed::Written { version: 2 });
    // The same operation again, even decided on the newer record, is not applied twice.
    let now = store.get(&record.subscription.id).await.expect("read").expect("record");
    let again = Change { state: StateWrite::Keep { expected_version: Some(now.version) }, ..suspend.clone() };
    assert_eq!(store.apply(&again).await.expect("again"), Committed::Duplicate);
    assert_eq!(store.apply(&suspend).await.expect("replayed"), Committed::Duplicate);
    assert_eq!(store.get(&record.subscription.id).await.expect("read").expect("record").version, 2);
    assert_eq!(store.history(&record.subscription.id).await.expect("history").len(), 2);
}

pub async fn a_write_on_a_superseded_version_is_a_conflict_and_writes_nothing(
    store: &impl SubscriptionStore,
) {
    let record = seeded(store, SubscriptionStatus::Subscribed, "tenant-a").await;
    let id = record.subscription.id.clone();
    let mut more = record.subscription.clone();
    more.quantity = Some(6);
    let first = change(Some(&record), seen(more.clone(), 5));
    let mut other = record.subscription.clone();
    other.quantity = Some(7);
    let second = change(Some(&record), seen(other, 6));
    store.apply(&first).await.expect("first writer");
    let lost = store.apply(&second).await;
    assert!(matches!(lost, Err(StoreError::Conflict { .. })), "{lost:?}");
    assert_eq!(store.operation(&id, &second.operation.id).await.expect("op"), None);
    assert_eq!(store.get(&id).await.expect("read").expect("record").subscription, more);
    assert_eq!(store.history(&id).await.expect("history").len(), 2);
}

pub async fn keeping_the_state_is_conditional_on_the_version_read(store: &impl SubscriptionStore) {
    let record = seeded(store, SubscriptionStatus::Subscribed, "tenant-a").await;
    let id = record.subscription.id.clone();
    // Decided "nothing to change" on version 1 ...
    let keep = change(Some(&record), seen(record.subscription.clone(), 5));
    assert_eq!(keep.state, StateWrite::Keep { expected_version: Some(1) });
    // ... but another writer got in first: the decision must be taken again, and the operation id
    // stays free for that.
    let mut suspended = record.subscription.clone();
    suspended.status = Some(SubscriptionStatus::Suspended);
    store.apply(&change(Some(&record), seen(suspended, 6))).await.expect("other writer");
    let lost = store.apply(&keep).await;
    assert!(matches!(lost, Err(StoreError::Conflict { .. })), "{lost:?}");
    assert_eq!(store.operation(&id, &keep.operation.id).await.expect("op"), None);
    // On the version it was decided on, it is recorded.
    let now = store.get(&id).await.expect("read").expect("record");
    let kept = change(Some(&now), seen(now.subscription.clone(), 7));
    assert_eq!(store.apply(&kept).await.expect("kept"), Committed::Written { version: 2 });
    // Keeping "no record" when one exists is a conflict too.
    let absent = Change {
        state: StateWrite::Keep { expected_version: None },
        ..change(Some(&now), seen(now.subscription.clone(), 8))
    };
    assert!(matches!(store.apply(&absent).await, Err(StoreError::Conflict { .. })));
}

pub async fn creating_a_record_that_exists_is_a_conflict(store: &impl SubscriptionStore) {
    let record = seeded(store, SubscriptionStatus::Subscribed, "tenant-a").await;
    let again = change(None, seen(record.subscription.clone(), 3));
    assert!(matches!(store.apply(&again).await, Err(StoreError::Conflict { .. })));
    assert_eq!(store.get(&record.subscription.id).await.expect("read").expect("record").version, 1);
}

pub async fn concurrent_writers_lose_no_update(store: &impl SubscriptionStore) {
    let record = seeded(store, SubscriptionStatus::Subscribed, "tenant-a").await;
    let id = record.subscription.id.clone();
    // Ten seat changes of one each, decided and written at once: each is applied onto the record
    // as it is when it is written (a loser re-reads and decides again).
    let writers = (0..10u32).map(|_| {
        let id = id.clone();
        async move {
            let current = store.get(&id).await.expect("read").expect("record");
            let event = Event {
                subscription_id: id.clone(),
                operation_id: operation(),
                lifecycle: LifecycleEvent::QuantityChanged,
                source: ChangeSource::Webhook,
                action: None,
                requested_by: None,
                operation_status: None,
                occurred_at: None,
                seen: Seen::Delta {
                    plan_id: None,
                    quantity: Some(current.subscription.quantity.unwrap_or(0) + 1),
                },
                record_if_unchanged: true,
            };
            record_event(store, &event, at(50)).await.expect("recorded")
        }
    });
    let results = futures::future::join_all(writers).await;
    assert!(results.iter().all(|r| matches!(r, Effect::Written { .. })), "{results:?}");
    let history = store.history(&id).await.expect("history");
    assert_eq!(history.len(), 11, "every writer recorded once");
    let versions: std::collections::BTreeSet<u64> = history.iter().map(|h| h.version).collect();
    let last = store.get(&id).await.expect("read").expect("record");
    // Versions only move forward; no write went onto a superseded one.
    assert_eq!(last.version as usize, versions.len());
}

pub async fn listing_pages_through_everything_once_and_filters(store: &impl SubscriptionStore) {
    // The reconciliation's checkpoint is in the same table: a scan's page may end on it.
    store.save_checkpoint(&ReconcileCheckpoint::default()).await.expect("a checkpoint");
    let mut subscribed = std::collections::BTreeSet::new();
    for i in 0..7 {
        let status = if i % 3 == 0 { SubscriptionStatus::Suspended } else { SubscriptionStatus::Subscribed };
        let record = seeded(store, status.clone(), "tenant-list").await;
        if status == SubscriptionStatus::Subscribed {
            subscribed.insert(record.subscription.id.clone());
        }
    }
    let filter =
        ListFilter { status: Some(SubscriptionStatus::Subscribed), offer_id: Some("contract-offer".into()) };
    let (mut seen_ids, mut page, mut pages) = (Vec::new(), None, 0);
    loop {
        // One item a page: every item of the table ends a page once.
        let listed = store.list(&filter, page.as_deref(), 1).await.expect("page");
        seen_ids.extend(listed.subscriptions.iter().map(|r| r.subscription.id.clone()));
        pages += 1;
        assert!(pages < 100, "the listing ends");
        match listed.next {
            Some(next) => page = Some(next),
            None => break,
        }
    }
    assert_eq!(seen_ids.len(), subscribed.len(), "each once: {seen_ids:?}");
    assert_eq!(seen_ids.into_iter().collect::<std::collections::BTreeSet<_>>(), subscribed);
    let other = ListFilter { status: None, offer_id: Some("another-offer".into()) };
    let mut page = None;
    loop {
        let listed = store.list(&other, page.as_deref(), 1000).await.expect("page");
        assert!(listed.subscriptions.is_empty());
        match listed.next {
            Some(next) => page = Some(next),
            None => break,
        }
    }
}

pub async fn a_page_token_we_did_not_make_is_refused(store: &impl SubscriptionStore) {
    for token in ["", "not base64!", "W10", "WyJPVEhFUiMxIiwiU1RBVEUiXQ"] {
        let listed = store.list(&ListFilter::default(), Some(token), 10).await;
        assert!(matches!(listed, Err(StoreError::InvalidPageToken)), "{token:?}: {listed:?}");
    }
}

pub async fn batch_reads_and_tenant_lookups_find_exactly_what_exists(store: &impl SubscriptionStore) {
    let tenant = uuid::Uuid::new_v4().to_string();
    let a = seeded(store, SubscriptionStatus::Subscribed, &tenant).await;
    let b = seeded(store, SubscriptionStatus::Suspended, &tenant).await;
    let c = seeded(store, SubscriptionStatus::Subscribed, "someone-else").await;
    // A page may list a subscription twice: each record comes back once.
    let ids =
        vec![a.subscription.id.clone(), fresh_id(), c.subscription.id.clone(), a.subscription.id.clone()];
    let mut found: Vec<_> =
        store.get_many(&ids).await.expect("batch").into_iter().map(|r| r.subscription.id).collect();
    found.sort();
    let mut expected = vec![a.subscription.id.clone(), c.subscription.id.clone()];
    expected.sort();
    assert_eq!(found, expected);
    let mut of_tenant: Vec<_> = store
        .by_beneficiary_tenant(&tenant)
        .await
        .expect("tenant")
        .into_iter()
        .map(|r| r.subscription.id)
        .collect();
    of_tenant.sort();
    let mut expected = vec![a.subscription.id, b.subscription.id];
    expected.sort();
    assert_eq!(of_tenant, expected);
}

pub async fn rejected_deliveries_are_kept_by_day(store: &impl SubscriptionStore) {
    let first = RejectedDelivery::new(b"{not json", "not a webhook payload", at(0));
    let second = RejectedDelivery::new(&[b'x'; 2000], "too large", at(1));
    let next_day = RejectedDelivery::new(b"{}", "no ids", at(0) + Duration::days(1));
    for delivery in [&first, &second, &next_day] {
        store.record_rejected(delivery).await.expect("kept");
    }
    let day = at(0).date_naive();
    assert_eq!(store.rejected_on(day).await.expect("read"), vec![first, second.clone()]);
    assert_eq!(second.excerpt.len(), 1024);
}

pub async fn the_checkpoint_is_saved_only_over_the_version_read(store: &impl SubscriptionStore) {
    assert_eq!(store.checkpoint().await.expect("read"), None, "no checkpoint before the first save");
    let first = ReconcileCheckpoint {
        pass: Some(crate::reconcile::Summary {
            pass_id: "run-1".into(),
            started_at: at(0),
            seen: 100,
            pages: 1,
            ..Default::default()
        }),
        // As Microsoft's tokens are: URL-encoded JSON.
        next_page: Some("%7B%22token%22%3A%22%2BRID%3A~a%2Fb%23TRC%3A100%22%7D".into()),
        lease: Some(Lease { holder: "run-1".into(), until: at(15) }),
        ..Default::default()
    };
    assert_eq!(store.save_checkpoint(&first).await.expect("first save"), 1);
    let read = store.checkpoint().await.expect("read").expect("saved");
    assert_eq!(read, ReconcileCheckpoint { version: 1, ..first.clone() });
    assert!(
        matches!(store.save_checkpoint(&first).await, Err(StoreError::CheckpointTaken)),
        "a run that read no checkpoint cannot save over one"
    );
    let handed_over = ReconcileCheckpoint { lease: None, next_page: None, ..read.clone() };
    assert_eq!(store.save_checkpoint(&handed_over).await.expect("save over version 1"), 2);
    assert!(
        matches!(store.save_checkpoint(&read).await, Err(StoreError::CheckpointTaken)),
        "a run that read version 1 cannot save over version 2"
    );
    assert_eq!(
        store.checkpoint().await.expect("read"),
        Some(ReconcileCheckpoint { version: 2, ..handed_over })
    );
    let listed = store.list(&ListFilter::default(), None, 100).await.expect("list");
    assert!(listed.subscriptions.is_empty(), "the checkpoint is no subscription: {listed:?}");
}

pub async fn history_pages_through_every_entry_once_in_order(store: &impl SubscriptionStore) {
    let record = seeded(store, SubscriptionStatus::Subscribed, "tenant-h").await;
    let id = record.subscription.id.clone();
    let mut current = record;
    for (minute, seats) in (1..=4).zip(6..) {
        let mut next = current.subscription.clone();
        next.quantity = Some(seats);
        let change = change(Some(&current), seen(next, minute));
        store.apply(&change).await.expect("applied");
        current = store.get(&id).await.expect("read").expect("there");
    }
    let other = seeded(store, SubscriptionStatus::Subscribed, "tenant-h").await;
    let all = store.history(&id).await.expect("history");
    assert_eq!(all.len(), 5);

    let (mut paged, mut page, mut sizes) = (Vec::new(), None::<String>, Vec::new());
    for _ in 0..10 {
        let answer = store.history_page(&id, page.as_deref(), 2).await.expect("a page");
        sizes.push(answer.entries.len());
        paged.extend(answer.entries);
        page = answer.next;
        if page.is_none() {
            break;
        }
    }
    assert_eq!(page, None, "the paging ended: {sizes:?}");
    assert_eq!(paged, all, "every entry once, oldest first, in pages of {sizes:?}");
    assert!(sizes.iter().all(|&n| n <= 2), "{sizes:?}");

    let first = store.history_page(&id, None, 2).await.expect("a page").next.expect("more");
    assert!(
        matches!(
            store.history_page(&other.subscription.id, Some(&first), 2).await,
            Err(StoreError::InvalidPageToken)
        ),
        "another subscription's position is refused"
    );
    assert!(matches!(store.history_page(&id, Some("garbage"), 2).await, Err(StoreError::InvalidPageToken)));
}
