//! Microsoft's JSON, in every shape Microsoft documents (doc revisions differ: each is tested).

use chrono::{TimeZone, Timelike, Utc};
use fulfillment::domain::{
    AvailablePlans, CustomerOperation, Operation, OperationAction, OperationStatus, Plan, RequestSource,
    ResolvedSubscription, SandboxType, SessionMode, Subscription, SubscriptionStatus, TermUnit,
    WebhookPayload,
};
use serde_json::json;

fn subscription(value: serde_json::Value) -> Subscription {
    serde_json::from_value(value).expect("a subscription")
}

fn with(field: &str, value: serde_json::Value) -> serde_json::Value {
    let mut s = json!({ "id": "3f9c1b7e-0000-4000-8000-00000000a001" });
    s[field] = value;
    s
}

/// docs/marketplace-api.md#subscription-object's illustrative subscription (current spec, 2025).
const FULL_SUBSCRIPTION: &str = r#"{
  "id": "3f9c1b7e-0000-4000-8000-00000000a001",
  "publisherId": "ourpublisher",
  "offerId": "our-saas-offer",
  "name": "Fabrikam production",
  "saasSubscriptionStatus": "Subscribed",
  "beneficiary": { "emailId": "ops@fabrikam.example", "objectId": "0b1c0000-0000-4000-8000-000000000001", "tenantId": "7a2d0000-0000-4000-8000-000000000001", "puid": "1003200012345678" },
  "purchaser":   { "emailId": "buyer@reseller.example", "objectId": "0b1c0000-0000-4000-8000-000000000002", "tenantId": "7a2d0000-0000-4000-8000-000000000002", "puid": null },
  "planId": "team-monthly",
  "quantity": 25,
  "term": { "startDate": "2025-05-04T00:00:00Z", "endDate": "2025-06-03T00:00:00Z", "termUnit": "P1M", "chargeDuration": null },
  "autoRenew": true,
  "isTest": false,
  "isFreeTrial": false,
  "allowedCustomerOperations": ["Read", "Update", "Delete"],
  "sandboxType": "None",
  "sessionMode": "None",
  "created": "2025-05-04T09:12:44.1234567Z",
  "lastModified": "2025-05-04T09:15:02.7654321Z"
}"#;

#[test]
fn the_full_subscription_sample_parses_every_field() {
    let s: Subscription = serde_json::from_str(FULL_SUBSCRIPTION).expect("parses");
    assert_eq!(s.id.as_str(), "3f9c1b7e-0000-4000-8000-00000000a001");
    assert_eq!(s.publisher_id.as_deref(), Some("ourpublisher"));
    assert_eq!(s.offer_id.as_deref(), Some("our-saas-offer"));
    assert_eq!(s.name.as_deref(), Some("Fabrikam production"));
    assert_eq!(s.status, Some(SubscriptionStatus::Subscribed));
    assert_eq!(s.plan_id.as_ref().map(|p| p.as_str()), Some("team-monthly"));
    assert_eq!(s.quantity, Some(25));
    let term = s.term.as_ref().expect("term");
    assert_eq!(term.start_date, Utc.with_ymd_and_hms(2025, 5, 4, 0, 0, 0).single());
    assert_eq!(term.end_date, Utc.with_ymd_and_hms(2025, 6, 3, 0, 0, 0).single());
    assert_eq!(term.term_unit, Some(TermUnit::P1M));
    assert_eq!(term.charge_duration, None);
    assert_eq!(s.auto_renew, Some(true));
    assert!(!s.is_test && !s.is_free_trial);
    assert_eq!(
        s.allowed_customer_operations,
        vec![CustomerOperation::Read, CustomerOperation::Update, CustomerOperation::Delete]
    );
    assert!(s.allows(&CustomerOperation::Update));
    assert_eq!(s.sandbox_type, Some(SandboxType::NoSandbox));
    assert_eq!(s.session_mode, Some(SessionMode::Normal));
    let created = s.created.expect("created");
    assert_eq!((created.second(), created.nanosecond()), (44, 123_456_700), "7 fraction digits");
    assert_eq!(s.last_modified.expect("lastModified").nanosecond(), 765_432_100);
    let beneficiary = s.beneficiary.as_ref().expect("beneficiary");
    assert_eq!(beneficiary.email_id.as_deref(), Some("ops@fabrikam.example"));
    assert_eq!(beneficiary.puid.as_deref(), Some("1003200012345678"));
    assert_eq!(s.purchaser.as_ref().expect("purchaser").puid, None);
    assert_eq!(s.beneficiary_tenant_id(), Some("7a2d0000-0000-4000-8000-000000000001"));
    assert!(s.bought_for_someone_else(), "purchaser and beneficiary tenants differ");
}

#[test]
fn a_subscription_survives_a_round_trip_through_json() {
    let s: Subscription = serde_json::from_str(FULL_SUBSCRIPTION).expect("parses");
    let again: Subscription =
        serde_json::from_value(serde_json::to_value(&s).expect("serializes")).expect("parses");
    assert_eq!(again, s);
    assert_eq!(serde_json::to_value(&s).expect("serializes")["saasSubscriptionStatus"], "Subscribed");
}

#[test]
fn a_subscription_with_only_an_id_parses_with_everything_unknown() {
    let s = subscription(json!({ "id": "3f9c1b7e-0000-4000-8000-00000000a001" }));
    assert_eq!((&s.status, &s.plan_id, s.quantity, &s.term), (&None, &None, None, &None));
    assert!(s.allowed_customer_operations.is_empty());
    assert!(!s.is_free_trial);
    assert_eq!(s.beneficiary_tenant_id(), None);
}

#[test]
fn a_subscription_without_an_id_is_rejected() {
    assert!(serde_json::from_value::<Subscription>(json!({ "planId": "basic" })).is_err());
    assert!(serde_json::from_value::<Subscription>(json!({ "id": "  " })).is_err());
    assert!(serde_json::from_value::<Subscription>(json!({ "id": 42 })).is_err());
}

#[test]
fn padded_status_strings_are_trimmed() {
    for raw in [" Subscribed ", "Subscribed", "  Subscribed", "subscribed"] {
        let s = subscription(with("saasSubscriptionStatus", json!(raw)));
        assert_eq!(s.status, Some(SubscriptionStatus::Subscribed), "{raw:?}");
    }
    let s = subscription(with("saasSubscriptionStatus", json!(" PendingFulfillmentStart ")));
    assert_eq!(s.status, Some(SubscriptionStatus::PendingFulfillmentStart));
}

#[test]
fn quantity_is_a_number_a_numeric_string_empty_or_null() {
    let cases = [
        (json!(25), Some(25)),
        (json!("20"), Some(20)),
        (json!(" 20 "), Some(20)),
        (json!(20.0), Some(20)),
        (json!(""), None),
        (json!(null), None),
        (json!(0), Some(0)),
    ];
    for (raw, expected) in cases {
        assert_eq!(subscription(with("quantity", raw.clone())).quantity, expected, "{raw}");
    }
    let absent = subscription(json!({ "id": "x" }));
    assert_eq!(absent.quantity, None);
}

#[test]
fn a_quantity_that_is_not_a_seat_count_is_a_clear_error() {
    for raw in [json!(-1), json!("twenty"), json!(1.5), json!(true), json!(4_294_967_296_u64), json!([1])] {
        let error =
            serde_json::from_value::<Subscription>(with("quantity", raw.clone())).expect_err("rejected");
        assert!(!error.to_string().is_empty(), "{raw}");
    }
    let error = serde_json::from_value::<Subscription>(with("quantity", json!(-3))).expect_err("rejected");
    assert!(error.to_string().contains("negative"), "{error}");
}

#[test]
fn dates_come_in_every_documented_form() {
    let at = |raw: serde_json::Value| subscription(with("created", raw)).created;
    let midnight = Utc.with_ymd_and_hms(2019, 5, 31, 0, 0, 0).single();
    assert_eq!(at(json!("2019-05-31")), midnight, "date only (2019 samples)");
    assert_eq!(at(json!("2019-05-31T00:00:00Z")), midnight);
    assert_eq!(at(json!("2019-05-31T00:00:00")), midnight, "no offset: UTC");
    assert_eq!(at(json!("2019-05-31T02:00:00+02:00")), midnight, "offset converted to UTC");
    assert_eq!(at(json!("2019-05-31T00:00:00.0000000Z")), midnight, "7 zero fraction digits");
    assert_eq!(at(json!("2019-05-31T00:00:00.1Z")).map(|t| t.nanosecond()), Some(100_000_000));
    assert_eq!(at(json!("2019-05-31T00:00:00.1234567")).map(|t| t.nanosecond()), Some(123_456_700));
    assert_eq!(at(json!("0001-01-01T00:00:00")), None, "the sentinel means unset");
    assert_eq!(at(json!("0001-01-01T00:00:00Z")), None);
    assert_eq!(at(json!("")), None);
    assert_eq!(at(json!(null)), None);
    assert!(serde_json::from_value::<Subscription>(with("created", json!("yesterday"))).is_err());
}

#[test]
fn unknown_fields_are_ignored_everywhere() {
    let mut s: serde_json::Value = serde_json::from_str(FULL_SUBSCRIPTION).expect("json");
    s["storeFront"] = json!("AzurePortal");
    s["sessionId"] = json!("x");
    s["fulfillmentId"] = json!({ "nested": [1, 2] });
    s["term"]["renewalPrice"] = json!(12.5);
    s["beneficiary"]["displayName"] = json!("Fabrikam");
    let parsed = subscription(s);
    assert_eq!(parsed, serde_json::from_str(FULL_SUBSCRIPTION).expect("parses"));
}

#[test]
fn unknown_enum_values_are_kept() {
    let s = subscription(json!({
        "id": "x",
        "saasSubscriptionStatus": " Frozen ",
        "term": { "termUnit": "P10Y" },
        "allowedCustomerOperations": ["Read", "Transfer"],
        "sandboxType": "Partner",
        "sessionMode": "Replay"
    }));
    assert_eq!(s.status, Some(SubscriptionStatus::Unknown("Frozen".into())));
    assert_eq!(s.term.and_then(|t| t.term_unit), Some(TermUnit::Unknown("P10Y".into())));
    assert_eq!(s.allowed_customer_operations[1], CustomerOperation::Unknown("Transfer".into()));
    assert_eq!(s.sandbox_type, Some(SandboxType::Unknown("Partner".into())));
    assert_eq!(s.session_mode, Some(SessionMode::Unknown("Replay".into())));
    assert_eq!(
        serde_json::to_value(SubscriptionStatus::Unknown("Frozen".into())).expect("json"),
        json!("Frozen")
    );
}

#[test]
fn every_documented_term_unit_is_known() {
    for (raw, unit) in [
        ("P1M", TermUnit::P1M),
        ("P1Y", TermUnit::P1Y),
        ("P2Y", TermUnit::P2Y),
        ("P3Y", TermUnit::P3Y),
        ("P4Y", TermUnit::P4Y),
        ("P5Y", TermUnit::P5Y),
    ] {
        assert_eq!(TermUnit::from(raw), unit);
    }
    assert_eq!(TermUnit::KNOWN.len(), 6);
}

#[test]
fn flags_and_lists_may_be_null_or_strings() {
    let s = subscription(
        json!({ "id": "x", "isFreeTrial": null, "isTest": "true", "allowedCustomerOperations": null }),
    );
    assert!(!s.is_free_trial);
    assert!(s.is_test);
    assert!(s.allowed_customer_operations.is_empty());
    assert!(serde_json::from_value::<Subscription>(json!({ "id": "x", "isTest": "maybe" })).is_err());
}

#[test]
fn a_personal_account_buyer_and_a_numeric_puid_parse() {
    let s = subscription(json!({
        "id": "x",
        "beneficiary": { "emailId": "someone@outlook.example", "tenantId": "9188040d-6c67-4c5b-b112-36a304b66dad", "puid": 1003200012345678_u64 },
        "purchaser": null
    }));
    assert_eq!(s.beneficiary_tenant_id(), Some("9188040d-6c67-4c5b-b112-36a304b66dad"));
    assert_eq!(s.beneficiary.as_ref().and_then(|b| b.puid.as_deref()), Some("1003200012345678"));
    assert_eq!(s.purchaser, None);
    assert!(!s.bought_for_someone_else());
}

#[test]
fn a_reseller_beneficiary_may_only_read() {
    let s = subscription(json!({ "id": "x", "allowedCustomerOperations": ["Read"], "sandboxType": "Csp" }));
    assert!(s.allows(&CustomerOperation::Read));
    assert!(!s.allows(&CustomerOperation::Update));
    assert!(!s.allows(&CustomerOperation::Delete));
    assert_eq!(s.sandbox_type, Some(SandboxType::Csp));
}

#[test]
fn a_2019_subscription_with_date_only_terms_parses() {
    let s = subscription(json!({
        "id": "<guid>", "name": "Contoso Cloud Solution", "publisherId": "contoso", "offerId": "offer1",
        "planId": "silver", "quantity": "10",
        "beneficiary": { "tenantId": "<guid>" }, "purchaser": { "tenantId": "<guid>" },
        "allowedCustomerOperations": ["Read"], "sessionMode": "None", "isFreeTrial": true,
        "saasSubscriptionStatus": "Subscribed",
        "term": { "startDate": "2019-05-31", "endDate": "2019-06-29", "termUnit": "P1M" }
    }));
    assert_eq!(s.quantity, Some(10));
    assert!(s.is_free_trial);
    let term = s.term.expect("term");
    assert_eq!(term.end_date, Utc.with_ymd_and_hms(2019, 6, 29, 0, 0, 0).single());
}

#[test]
fn resolve_answers_with_and_without_the_full_subscription() {
    let current: ResolvedSubscription = serde_json::from_value(json!({
        "id": "3f9c1b7e-0000-4000-8000-00000000a001",
        "subscriptionName": "Fabrikam production",
        "offerId": "our-saas-offer",
        "planId": "team-monthly",
        "quantity": 25,
        "subscription": serde_json::from_str::<serde_json::Value>(FULL_SUBSCRIPTION).expect("json")
    }))
    .expect("parses");
    assert_eq!(current.subscription_name.as_deref(), Some("Fabrikam production"));
    assert_eq!(current.quantity, Some(25));
    assert_eq!(current.subscription.expect("subscription").status, Some(SubscriptionStatus::Subscribed));

    // 2019 docs: no `subscription`; flat-rate plans send an empty quantity.
    let old: ResolvedSubscription = serde_json::from_value(json!({
        "id": "x", "subscriptionName": "Contoso", "offerId": "offer1", "planId": "flat", "quantity": ""
    }))
    .expect("parses");
    assert_eq!((old.quantity, old.subscription), (None, None));
}

#[test]
fn plans_parse_with_prices_metering_and_private_offers() {
    let plans: AvailablePlans = serde_json::from_value(json!({
        "plans": [
            {
                "planId": "team-monthly", "displayName": "Team", "isPrivate": false, "description": "Per seat",
                "minQuantity": 5, "maxQuantity": 500, "hasFreeTrials": true, "isPricePerSeat": true,
                "isStopSell": false, "market": "US",
                "planComponents": {
                    "recurrentBillingTerms": [{
                        "currency": "USD", "price": 9.5, "termUnit": "P1M", "termDescription": "1 month",
                        "meteredQuantityIncluded": [{ "dimensionId": "api-calls", "units": "1000" }]
                    }],
                    "meteringDimensions": [{
                        "id": "api-calls", "currency": "USD", "pricePerUnit": 0.01,
                        "unitOfMeasure": "per call", "displayName": "API calls"
                    }]
                },
                "sourceOffers": [{ "externalId": "5a6b0000-0000-4000-8000-000000000001" }],
                "somethingNew": true
            },
            { "planId": "flat", "minQuantity": null, "maxQuantity": "" }
        ]
    }))
    .expect("parses");
    let team: &Plan = &plans.plans[0];
    assert_eq!(team.display_name.as_deref(), Some("Team"));
    assert_eq!((team.min_quantity, team.max_quantity), (Some(5), Some(500)));
    assert!(team.is_price_per_seat && team.has_free_trials && !team.is_stop_sell);
    let components = team.plan_components.as_ref().expect("components");
    let billing = &components.recurrent_billing_terms[0];
    assert_eq!((billing.price, billing.term_unit.clone()), (Some(9.5), Some(TermUnit::P1M)));
    assert_eq!(billing.metered_quantity_included[0].units.as_deref(), Some("1000"));
    assert_eq!(components.metering_dimensions[0].price_per_unit, Some(0.01));
    assert_eq!(team.source_offers[0].external_id.as_deref(), Some("5a6b0000-0000-4000-8000-000000000001"));
    assert!(team.admits_seats(5) && team.admits_seats(500));
    assert!(!team.admits_seats(4) && !team.admits_seats(501));
    assert!(plans.plans[1].admits_seats(1_000_000), "no bounds, no limit");
}

#[test]
fn an_empty_plans_answer_parses_as_no_plans() {
    let plans: AvailablePlans = serde_json::from_value(json!({})).expect("parses");
    assert!(plans.plans.is_empty());
    let plans: AvailablePlans = serde_json::from_value(json!({ "plans": null })).expect("parses");
    assert!(plans.plans.is_empty());
}

#[test]
fn an_operation_parses_in_the_spec_and_the_emulator_spelling() {
    let spec: Operation = serde_json::from_value(json!({
        "id": "8d0c6a52-0000-4000-8000-0000000000c1", "activityId": "5f1e9d0a-0000-4000-8000-0000000000c2",
        "subscriptionId": "3f9c1b7e-0000-4000-8000-00000000a001", "offerId": "our-saas-offer",
        "publisherId": "ourpublisher", "planId": "team-monthly", "quantity": 40, "action": "ChangeQuantity",
        "timeStamp": "2025-05-20T14:03:11.5120037Z", "status": "InProgress",
        "errorStatusCode": "", "errorMessage": "", "operationRequestSource": "Azure"
    }))
    .expect("parses");
    assert_eq!(spec.action, Some(OperationAction::ChangeQuantity));
    assert_eq!(spec.status, Some(OperationStatus::InProgress));
    assert_eq!(spec.operation_request_source, Some(RequestSource::Azure));
    assert_eq!(spec.quantity, Some(40));
    assert_eq!(spec.time_stamp.map(|t| t.nanosecond()), Some(512_003_700));
    assert_eq!(spec.error_status_code.as_deref(), Some(""));

    let emulator: Operation = serde_json::from_value(json!({
        "id": "op", "subscriptionId": "sub", "action": "ChangePlan", "planId": "gold",
        "status": "Succeeded", "operationRequestedSource": "Partner", "quantity": ""
    }))
    .expect("parses");
    assert_eq!(emulator.operation_request_source, Some(RequestSource::Partner));
    assert_eq!(emulator.quantity, None);
}

#[test]
fn legacy_and_unknown_operation_statuses_and_actions_are_tolerated() {
    assert_eq!(OperationStatus::from("Success"), OperationStatus::Succeeded);
    assert_eq!(OperationStatus::from("In Progress"), OperationStatus::InProgress);
    assert_eq!(OperationStatus::from("Failure"), OperationStatus::Failed);
    assert_eq!(OperationStatus::from(" Conflict "), OperationStatus::Conflict);
    assert_eq!(OperationStatus::from("Paused"), OperationStatus::Unknown("Paused".into()));
    assert!(OperationStatus::Conflict.is_terminal() && !OperationStatus::InProgress.is_terminal());
    assert!(!OperationStatus::Unknown("Paused".into()).is_terminal());
    assert_eq!(OperationAction::from("Transfer"), OperationAction::Transfer);
    assert_eq!(OperationAction::from("Subscribe"), OperationAction::Subscribe);
    assert_eq!(OperationAction::from("Migrate"), OperationAction::Unknown("Migrate".into()));
    assert_eq!(OperationStatus::Succeeded.to_string(), "Succeeded", "the canonical spelling is written");
}

/// docs/marketplace-api.md#webhook-payload's customer-initiated ChangeQuantity (2023 docs: the full shape).
const FULL_WEBHOOK: &str = r#"{
  "id": "8d0c6a52-0000-4000-8000-0000000000c1",
  "activityId": "5f1e9d0a-0000-4000-8000-0000000000c2",
  "publisherId": "ourpublisher",
  "offerId": "our-saas-offer",
  "planId": "team-monthly",
  "quantity": 40,
  "subscriptionId": "3f9c1b7e-0000-4000-8000-00000000a001",
  "timeStamp": "2025-05-20T14:03:11.5120037Z",
  "action": "ChangeQuantity",
  "status": "InProgress",
  "operationRequestSource": "Azure",
  "subscription": {
    "id": "3f9c1b7e-0000-4000-8000-00000000a001", "planId": "team-monthly", "quantity": 25,
    "saasSubscriptionStatus": "Subscribed", "lastModified": "0001-01-01T00:00:00",
    "term": { "startDate": "2025-05-04T00:00:00Z", "endDate": "2025-06-03T00:00:00Z", "termUnit": "P1M" }
  },
  "purchaseToken": null
}"#;

#[test]
fn the_full_webhook_payload_parses_with_old_and_new_values_apart() {
    let w: WebhookPayload = serde_json::from_str(FULL_WEBHOOK).expect("parses");
    assert_eq!(w.operation.id.as_str(), "8d0c6a52-0000-4000-8000-0000000000c1");
    assert_eq!(w.operation.subscription_id.as_str(), "3f9c1b7e-0000-4000-8000-00000000a001");
    assert_eq!(w.operation.action, Some(OperationAction::ChangeQuantity));
    assert_eq!(w.operation.quantity, Some(40), "the new seat count");
    let snapshot = w.subscription.expect("subscription");
    assert_eq!(snapshot.quantity, Some(25), "the old seat count");
    assert_eq!(snapshot.last_modified, None, "the sentinel");
    assert_eq!(w.purchase_token, None);
}

#[test]
fn the_minimal_webhook_payloads_parse() {
    // 2021–2022 ChangePlan: only ids, source, time and action.
    let change_plan: WebhookPayload = serde_json::from_value(json!({
        "id": "op1", "activityId": "act", "operationRequestSource": "Partner",
        "subscriptionId": "sub", "timeStamp": "2022-02-10T18:48:58.4449937Z", "action": "ChangePlan"
    }))
    .expect("parses");
    assert_eq!(change_plan.operation.action, Some(OperationAction::ChangePlan));
    assert_eq!(change_plan.operation.plan_id, None);
    assert_eq!(change_plan.subscription, None);

    // A Reinstate without `subscription`, padded status, quantity as a string.
    let reinstate: WebhookPayload = serde_json::from_value(json!({
        "id": "op2", "subscriptionId": "sub", "action": "Reinstate", "status": " Succeeded ",
        "quantity": "12", "planId": "basic", "timeStamp": "2022-02-10T18:48:58Z"
    }))
    .expect("parses");
    assert_eq!(reinstate.operation.status, Some(OperationStatus::Succeeded));
    assert_eq!(reinstate.operation.quantity, Some(12));
}

#[test]
fn webhooks_with_unknown_actions_parse() {
    for (raw, action) in [
        ("Transfer", OperationAction::Transfer),
        ("Subscribe", OperationAction::Subscribe),
        ("Renew", OperationAction::Renew),
        ("SomethingNew", OperationAction::Unknown("SomethingNew".into())),
    ] {
        let w: WebhookPayload =
            serde_json::from_value(json!({ "id": "op", "subscriptionId": "sub", "action": raw }))
                .expect("parses");
        assert_eq!(w.operation.action, Some(action));
    }
    let no_action: WebhookPayload =
        serde_json::from_value(json!({ "id": "op", "subscriptionId": "sub" })).expect("parses");
    assert_eq!(no_action.operation.action, None);
}

#[test]
fn a_webhook_without_its_ids_is_rejected() {
    // The odd 2021 sample names the action `operationType` and has no operation id.
    let odd = json!({ "subscriptionId": "sub", "operationType": "Reinstate" });
    assert!(serde_json::from_value::<WebhookPayload>(odd).is_err());
    assert!(serde_json::from_value::<WebhookPayload>(json!({ "id": "op", "action": "Suspend" })).is_err());
    assert!(serde_json::from_value::<WebhookPayload>(json!({ "id": "", "subscriptionId": "sub" })).is_err());
    // With an id the `operationType` spelling is understood.
    let named: WebhookPayload =
        serde_json::from_value(json!({ "id": "op", "subscriptionId": "sub", "operationType": "Reinstate" }))
            .expect("parses");
    assert_eq!(named.operation.action, Some(OperationAction::Reinstate));
}

#[test]
fn malformed_json_is_an_error_not_a_panic() {
    for body in [
        "",
        "{",
        "null",
        "[]",
        "\"text\"",
        "{\"id\": {}}",
        "{\"id\":\"op\",\"subscriptionId\":\"s\",\"quantity\":{}}",
    ] {
        assert!(serde_json::from_str::<WebhookPayload>(body).is_err(), "{body:?}");
    }
}

/// What production has shown (docs/marketplace-api.md#subscription-object): term units beyond the
/// spec's (`PAY`), every documented one (`P4Y`, `P5Y`), and fields that come and go
/// (`sessionId`, `fulfillmentId`, `storeFront`, a filled-in `chargeDuration`), in a `Subscribe`
/// webhook of an auto-activated plan made for a private offer: all parse, and what we keep
/// survives a round trip through our own JSON (the store's form).
#[test]
fn a_subscribe_webhook_with_what_production_has_shown_parses_and_round_trips() {
    for (unit, expected) in
        [("PAY", TermUnit::Unknown("PAY".into())), ("P4Y", TermUnit::P4Y), ("P5Y", TermUnit::P5Y)]
    {
        let payload = json!({
            "id": "5d1b0000-0000-4000-8000-0000000005d1",
            "activityId": "5d1b0000-0000-4000-8000-0000000005d2",
            "subscriptionId": "5d1b0000-0000-4000-8000-0000000005d3",
            "offerId": "contoso-saas-private",
            "publisherId": "contoso",
            "planId": "private-plan-7f3a",
            "quantity": 25,
            "action": "Subscribe",
            "timeStamp": "2026-05-20T10:00:00.1234567Z",
            "status": "Succeeded",
            "sessionId": "9a8b7c6d",
            "fulfillmentId": null,
            "storeFront": "AzurePortal",
            "subscription": {
                "id": "5d1b0000-0000-4000-8000-0000000005d3",
                "offerId": "contoso-saas-private",
                "planId": "private-plan-7f3a",
                "quantity": 25,
                "saasSubscriptionStatus": "Subscribed",
                "beneficiary": { "tenantId": "7e7a0000-0000-4000-8000-00000007e7a0" },
                "purchaser": { "tenantId": "7e7a0000-0000-4000-8000-00000007e7a0" },
                "term": {
                    "startDate": "2026-05-20T00:00:00Z",
                    "endDate": "2027-05-19T00:00:00Z",
                    "termUnit": unit,
                    "chargeDuration": "P1M"
                },
                "fulfillmentId": "f-123",
                "storeFront": "AppSource",
                "sessionId": null
            }
        });
        let parsed: WebhookPayload = serde_json::from_value(payload).expect("parses");
        assert_eq!(parsed.operation.action, Some(OperationAction::Subscribe));
        let subscription = parsed.subscription.expect("the subscription");
        assert_eq!(subscription.plan_id.as_ref().map(|p| p.as_str()), Some("private-plan-7f3a"));
        let term = subscription.term.clone().expect("a term");
        assert_eq!(term.term_unit, Some(expected), "{unit}");
        assert_eq!(term.charge_duration.as_deref(), Some("P1M"), "kept, though undocumented");
        let stored = serde_json::to_value(&subscription).expect("json");
        assert_eq!(stored["term"]["termUnit"], unit, "written back as Microsoft sent it");
        let read_back: Subscription = serde_json::from_value(stored).expect("reads back");
        assert_eq!(read_back, subscription);
    }
}
