//! The Fulfillment and Operations API rules of the emulator, checked with a plain HTTP client.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Api, WAIT, fast_config, operation_id, start, subscribed};
use marketplace_emulator::{EmulatorConfig, Purchase, Quirk};
use serde_json::{Value, json};

#[tokio::test]
async fn when_api_version_is_missing_or_unsupported_should_answer_400_with_pascal_case_error() {
    let emu = start(fast_config()).await;
    let api = Api::new(&emu).await;
    let missing =
        api.send_raw(api.http.get(format!("{}/saas/subscriptions", api.base)).bearer_auth(&api.token)).await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.json()["Error"]["Code"], "ApiVersionUnspecified");
    let wrong = api
        .send_raw(
            api.http
                .get(format!("{}/saas/subscriptions?api-version=2018-09-15", api.base))
                .bearer_auth(&api.token),
        )
        .await;
    assert_eq!(wrong.status, 400);
    assert_eq!(wrong.json()["Error"]["Code"], "UnsupportedApiVersion");
}

#[tokio::test]
async fn when_the_bearer_token_is_missing_forged_expired_or_revoked_should_answer_403_with_empty_body() {
    let emu = start(fast_config()).await;
    let api = Api::new(&emu).await;
    let url = api.url("/saas/subscriptions");
    let none = api.send_raw(api.http.get(&url)).await;
    assert_eq!((none.status, none.text.as_str()), (403, ""));
    let forged =
        emu.sign_jwt(&json!({"aud": "20e940b3-4c77-4b0b-9a53-9e16a1b010a7", "exp": 4_000_000_000u64}));
    let r = api.send_raw(api.http.get(&url).bearer_auth(forged)).await;
    assert_eq!((r.status, r.text.as_str()), (403, ""));
    assert_eq!(api.get("/saas/subscriptions").await.status, 200);

    emu.revoke_access_tokens().await;
    let revoked = api.get("/saas/subscriptions").await;
    assert_eq!((revoked.status, revoked.text.as_str()), (403, ""));

    let short = start(EmulatorConfig { access_token_ttl: Duration::ZERO, ..fast_config() }).await;
    let expired = Api::new(&short).await;
    assert_eq!(expired.get("/saas/subscriptions").await.status, 403);
}

#[tokio::test]
async fn every_response_should_echo_or_generate_request_and_correlation_ids_and_be_recorded() {
    let emu = start(fast_config()).await;
    let api = Api::new(&emu).await;
    let sent = api
        .send_raw(
            api.http
                .get(api.url("/saas/subscriptions"))
                .bearer_auth(&api.token)
                .header("x-ms-requestid", "11111111-1111-4111-8111-111111111111")
                .header("x-ms-correlationid", "22222222-2222-4222-8222-222222222222"),
        )
        .await;
    assert_eq!(sent.header("x-ms-requestid").as_deref(), Some("11111111-1111-4111-8111-111111111111"));
    assert_eq!(sent.header("x-ms-correlationid").as_deref(), Some("22222222-2222-4222-8222-222222222222"));
    let generated = api.get("/saas/subscriptions/unknown").await;
    assert_eq!(generated.status, 404);
    let request_id = generated.header("x-ms-requestid").expect("generated request id");
    assert!(uuid::Uuid::parse_str(&request_id).is_ok());
    assert!(generated.header("x-ms-correlationid").is_some());

    let requests = emu.requests().await;
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].request_id.as_deref(), Some("11111111-1111-4111-8111-111111111111"));
    assert_eq!(requests[0].path, "/saas/subscriptions");
    assert_eq!(requests[0].status, Some(200));
    assert_eq!(requests[1].request_id, None);
    assert_eq!(requests[1].response_request_id, request_id);
    assert_eq!(requests[1].status, Some(404));
}

#[tokio::test]
async fn when_the_path_is_unknown_should_answer_404() {
    let emu = start(fast_config()).await;
    let api = Api::new(&emu).await;
    assert_eq!(api.get("/saas/nothing-here").await.status, 404);
    assert_eq!(api.post("/saas/subscriptions/x/y/z", None).await.status, 404);
}

#[tokio::test]
async fn resolve_should_return_the_full_subscription_for_the_exact_token_only() {
    let emu = start(fast_config()).await;
    let api = Api::new(&emu).await;
    let purchased = emu.purchase(Purchase::plan("team-monthly").quantity(7)).await;
    let token = &purchased.token;
    assert!(token.len() >= 100 && token.contains('+') && token.contains('/'), "token shape: {token}");

    let r = api.resolve(token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["id"], purchased.subscription_id);
    assert_eq!(v["planId"], "team-monthly");
    assert_eq!(v["quantity"], 7);
    assert_eq!(v["offerId"], "contoso-saas");
    assert!(v["subscriptionName"].is_string());
    let sub = &v["subscription"];
    assert_eq!(sub["saasSubscriptionStatus"], "PendingFulfillmentStart");
    for field in [
        "publisherId",
        "beneficiary",
        "purchaser",
        "term",
        "autoRenew",
        "isTest",
        "isFreeTrial",
        "allowedCustomerOperations",
        "sandboxType",
        "sessionMode",
        "created",
        "lastModified",
    ] {
        assert!(sub.get(field).is_some(), "subscription lacks {field}: {sub}");
    }

    let mangled = token.replace('+', " ");
    assert_eq!(api.resolve(&mangled).await.status, 400);
    let garbage = api.resolve("not-a-token").await;
    assert_eq!(garbage.status, 400);
    assert_eq!(garbage.json()["code"], "InvalidValue");
    let missing = api.post("/saas/subscriptions/resolve", None).await;
    assert_eq!(missing.status, 400);

    // "Manage account": a fresh token resolves too, in any status.
    emu.unsubscribe(&purchased.subscription_id).await.unwrap();
    let again = api.resolve(&emu.landing_token(&purchased.subscription_id).await).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["subscription"]["saasSubscriptionStatus"], "Unsubscribed");
}

#[tokio::test]
async fn when_the_purchase_token_has_expired_resolve_should_answer_400() {
    let emu = start(EmulatorConfig { purchase_token_ttl: Duration::ZERO, ..fast_config() }).await;
    let api = Api::new(&emu).await;
    let purchased = emu.purchase(Purchase::default()).await;
    let r = api.resolve(&purchased.token).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "InvalidValue");
}

#[tokio::test]
async fn activate_should_start_the_term_and_enforce_plan_quantity_and_status() {
    let emu = start(fast_config()).await;
    let api = Api::new(&emu).await;
    let p = emu.purchase(Purchase::plan("team-monthly").quantity(5)).await;
    let id = &p.subscription_id;
    let path = format!("/saas/subscriptions/{id}/activate");
    assert_eq!(api.post(&path, Some(json!({"quantity": 5}))).await.status, 400, "planId missing");
    assert_eq!(api.post(&path, None).await.status, 400, "empty body");
    assert_eq!(api.activate(id, "team-yearly", Some(5)).await.status, 400, "other plan");
    assert_eq!(api.activate(id, "team-monthly", Some(6)).await.status, 400, "other quantity");
    assert_eq!(api.activate(id, "team-monthly", None).await.status, 400, "quantity missing");
    let ok = api.activate(id, "team-monthly", Some(5)).await;
    assert_eq!((ok.status, ok.text.as_str()), (200, ""));

    let sub = api.get(&format!("/saas/subscriptions/{id}")).await.json();
    assert_eq!(sub["saasSubscriptionStatus"], "Subscribed");
    let today = chrono::Utc::now().format("%Y-%m-%dT00:00:00Z").to_string();
    assert_eq!(sub["term"]["startDate"], today);
    assert!(sub["term"]["endDate"].is_string());
    assert_eq!(sub["term"]["termUnit"], "P1M");
    assert!(sub["term"]["chargeDuration"].is_null());

    assert_eq!(api.activate(id, "team-monthly", Some(5)).await.status, 400, "already Subscribed");
    emu.suspend(id).await.unwrap();
    assert_eq!(api.activate(id, "team-monthly", Some(5)).await.status, 400, "Suspended");
    emu.unsubscribe(id).await.unwrap();
    assert_eq!(api.activate(id, "team-monthly", Some(5)).await.status, 404, "Unsubscribed");
    assert_eq!(api.activate(&uuid::Uuid::new_v4().to_string(), "basic", None).await.status, 404, "unknown");
}

#[tokio::test]
async fn list_subscriptions_should_page_250_subscriptions_in_three_pages_without_duplicates() {
    let emu = start(fast_config()).await;
    let api = Api::new(&emu).await;
    let seeds: Vec<Value> = (0..250)
        .map(|i| {
            let status = if i % 10 == 0 { "Unsubscribed" } else { "Subscribed" };
            json!({"id": uuid::Uuid::new_v4().to_string(), "planId": "basic", "saasSubscriptionStatus": status})
        })
        .collect();
    assert_eq!(emu.seed(seeds).await, 250);

    let mut ids = Vec::new();
    let mut pages = Vec::new();
    let first = api.get("/saas/subscriptions").await;
    assert_eq!(first.status, 200);
    let mut page = first.json();
    loop {
        let subs = page["subscriptions"].as_array().expect("subscriptions array").clone();
        pages.push(subs.len());
        ids.extend(subs.iter().map(|s| s["id"].as_str().unwrap().to_string()));
        let Some(next) = page.get("@nextLink").and_then(Value::as_str) else { break };
        let url = url::Url::parse(next).expect("absolute @nextLink");
        assert!(next.contains("continuationToken=%7B"), "token URL-encoded: {next}");
        assert!(url.query_pairs().any(|(k, _)| k == "api-version"));
        page = api.send_raw(api.http.get(next).bearer_auth(&api.token)).await.json();
    }
    assert_eq!(pages, vec![100, 100, 50]);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 250);

    // Passing the continuation token back (decoded once, re-encoded by the client) works too,
    // and the order is stable.
    let next = first.json()["@nextLink"].as_str().unwrap().to_string();
    let token = url::Url::parse(&next)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "continuationToken")
        .unwrap()
        .1
        .into_owned();
    let second = api
        .send_raw(
            api.http
                .get(format!("{}/saas/subscriptions", api.base))
                .query(&[("continuationToken", token.as_str()), ("api-version", "2018-08-31")])
                .bearer_auth(&api.token),
        )
        .await
        .json();
    assert_eq!(second["subscriptions"][0]["id"].as_str(), Some(ids[100].as_str()));

    // Double-encoding the token is a client bug: 400.
    let double: String = url::form_urlencoded::byte_serialize(
        next.split("continuationToken=").nth(1).unwrap().split('&').next().unwrap().as_bytes(),
    )
    .collect();
    assert_eq!(api.get(&format!("/saas/subscriptions?continuationToken={double}")).await.status, 400);
}

#[tokio::test]
async fn list_subscriptions_with_none_should_be_an_empty_list_or_an_empty_body_under_the_quirk() {
    let emu = start(fast_config()).await;
    let api = Api::new(&emu).await;
    let r = api.get("/saas/subscriptions").await;
    assert_eq!(r.json(), json!({"subscriptions": []}));
    emu.set_quirk(Quirk::EmptyBodyWhenNoSubscriptions, true).await;
    let r = api.get("/saas/subscriptions").await;
    assert_eq!((r.status, r.text.as_str()), (200, ""));
}

#[tokio::test]
async fn get_subscription_should_match_the_inspection_view_and_404_when_unknown() {
    let emu = start(fast_config()).await;
    let api = Api::new(&emu).await;
    let p = subscribed(&emu, &api, Purchase::plan("basic").reseller("99999999-0000-4000-8000-000000000001"))
        .await;
    let r = api.get(&format!("/saas/subscriptions/{}", p.subscription_id)).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(Some(v.clone()), emu.subscription(&p.subscription_id).await);
    assert_eq!(v["allowedCustomerOperations"], json!(["Read"]));
    assert_ne!(v["purchaser"]["tenantId"], v["beneficiary"]["tenantId"]);
    assert!(v.get("quantity").is_none(), "flat-rate plan has no quantity");
    assert_eq!(api.get(&format!("/saas/subscriptions/{}", uuid::Uuid::new_v4())).await.status, 404);
}

#[tokio::test]
async fn list_available_plans_should_include_current_and_private_plans_and_filter_by_plan_id() {
    let emu = start(fast_config()).await;
    let api = Api::new(&emu).await;
    let p = emu.purchase(Purchase::plan("basic")).await;
    let r = api.get(&format!("/saas/subscriptions/{}/listAvailablePlans", p.subscription_id)).await;
    assert_eq!(r.status, 200);
    let plans = r.json()["plans"].as_array().unwrap().clone();
    let ids: Vec<&str> = plans.iter().map(|p| p["planId"].as_str().unwrap()).collect();
    assert_eq!(ids, ["basic", "team-monthly", "team-yearly", "enterprise", "team-auto"]);
    let enterprise = &plans[3];
    assert_eq!(enterprise["isPrivate"], true);
    assert_eq!(enterprise["minQuantity"], 10);
    let basic = &plans[0];
    let terms = &basic["planComponents"]["recurrentBillingTerms"][0];
    assert_eq!(terms["termUnit"], "P1M");
    assert_eq!(terms["meteredQuantityIncluded"][0]["units"], "100", "units is a string");
    assert_eq!(basic["planComponents"]["meteringDimensions"][0]["id"], "api-calls");

    let one = api
        .get(&format!("/saas/subscriptions/{}/listAvailablePlans?planId=team-yearly", p.subscription_id))
        .await;
    let only: Vec<Value> = one.json()["plans"].as_array().unwrap().clone();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["planId"], "team-yearly");
    assert_eq!(
        api.get(&format!("/saas/subscriptions/{}/listAvailablePlans", uuid::Uuid::new_v4())).await.status,
        404
    );
}

#[tokio::test]
async fn patch_subscription_should_enforce_every_400_and_404_rule() {
    let emu = start(EmulatorConfig { operation_delay: Duration::from_secs(30), ..fast_config() }).await;
    let api = Api::new(&emu).await;
    let p = subscribed(&emu, &api, Purchase::plan("team-monthly").quantity(5)).await;
    let path = format!("/saas/subscriptions/{}", p.subscription_id);
    let bad = |r: common::Resp, what: &str| {
        assert_eq!(r.status, 400, "{what}: {}", r.text);
        r.json()["message"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(
        api.patch(&format!("/saas/subscriptions/{}", uuid::Uuid::new_v4()), json!({"quantity": 6}))
            .await
            .status,
        404
    );
    bad(api.patch(&path, json!({"planId": "team-yearly", "quantity": 6})).await, "both");
    bad(api.patch(&path, json!({})).await, "neither");
    bad(api.patch(&path, json!({"planId": "gold"})).await, "unknown plan");
    bad(api.patch(&path, json!({"planId": "team-monthly"})).await, "same plan");
    bad(api.patch(&path, json!({"quantity": 5})).await, "same quantity");
    bad(api.patch(&path, json!({"quantity": 501})).await, "above plan max");
    bad(api.patch(&path, json!({"quantity": 0})).await, "zero");
    bad(api.patch(&path, json!({"quantity": "six"})).await, "not a number");
    let limit = bad(api.patch(&path, json!({"quantity": 1_000_001})).await, "absurd");
    assert!(limit.contains("exceeded the maximal limit of 1000000"), "{limit}");

    let pending = emu.purchase(Purchase::plan("team-monthly").quantity(5)).await;
    bad(
        api.patch(&format!("/saas/subscriptions/{}", pending.subscription_id), json!({"quantity": 6})).await,
        "pending",
    );
    let resold = subscribed(
        &emu,
        &api,
        Purchase::plan("team-monthly").quantity(5).reseller("99999999-0000-4000-8000-000000000002"),
    )
    .await;
    bad(
        api.patch(&format!("/saas/subscriptions/{}", resold.subscription_id), json!({"quantity": 6})).await,
        "Read only",
    );

    let accepted = api.patch(&path, json!({"quantity": 6})).await;
    assert_eq!(accepted.status, 202);
    let locked = bad(api.patch(&path, json!({"quantity": 7})).await, "locked");
    assert!(locked.contains("locked due to pending operations"), "{locked}");
}

#[tokio::test]
async fn publisher_change_plan_should_complete_after_the_delay_with_operation_location() {
    let emu = start(EmulatorConfig { operation_delay: Duration::from_millis(200), ..fast_config() }).await;
    let api = Api::new(&emu).await;
    let p = subscribed(&emu, &api, Purchase::plan("team-monthly").quantity(3)).await;
    let id = &p.subscription_id;
    let r = api.patch(&format!("/saas/subscriptions/{id}"), json!({"planId": "team-yearly"})).await;
    assert_eq!(r.status, 202);
    let op = operation_id(&r);
    let location = r.header("operation-location").unwrap();
    assert_eq!(
        location,
        format!("{}/saas/subscriptions/{id}/operations/{op}?api-version=2018-08-31", emu.api_base())
    );
    assert_eq!(r.header("operation-id").as_deref(), Some(op.as_str()));

    let in_progress = api.get(&format!("/saas/subscriptions/{id}/operations/{op}")).await.json();
    assert_eq!(in_progress["status"], "InProgress");
    assert_eq!(in_progress["operationRequestSource"], "Partner");
    assert_eq!(in_progress["action"], "ChangePlan");
    assert_eq!(in_progress["planId"], "team-yearly");
    assert_eq!(
        emu.subscription(id).await.unwrap()["planId"],
        "team-monthly",
        "not applied before completion"
    );

    let done = api.poll_operation(id, &op).await;
    assert_eq!(done["status"], "Succeeded");
    for field in [
        "activityId",
        "subscriptionId",
        "offerId",
        "publisherId",
        "timeStamp",
        "errorStatusCode",
        "errorMessage",
    ] {
        assert!(done.get(field).is_some(), "operation lacks {field}");
    }
    let sub = emu.subscription(id).await.unwrap();
    assert_eq!(sub["planId"], "team-yearly");
    assert_eq!(sub["quantity"], 5, "quantity raised to the new plan's minimum");
    assert_eq!(sub["term"]["termUnit"], "P1Y");
}

#[tokio::test]
async fn delete_subscription_should_unsubscribe_after_the_delay_and_then_404() {
    let emu = start(fast_config()).await;
    let api = Api::new(&emu).await;
    let p = subscribed(&emu, &api, Purchase::plan("basic")).await;
    let id = &p.subscription_id;
    let r = api.delete(&format!("/saas/subscriptions/{id}")).await;
    assert_eq!(r.status, 202);
    let op = operation_id(&r);
    let done = api.poll_operation(id, &op).await;
    assert_eq!((done["status"].as_str(), done["action"].as_str()), (Some("Succeeded"), Some("Unsubscribe")));
    assert_eq!(emu.subscription(id).await.unwrap()["saasSubscriptionStatus"], "Unsubscribed");
    assert_eq!(api.delete(&format!("/saas/subscriptions/{id}")).await.status, 404);
    assert_eq!(api.delete(&format!("/saas/subscriptions/{}", uuid::Uuid::new_v4())).await.status, 404);

    let resold =
        subscribed(&emu, &api, Purchase::plan("basic").reseller("99999999-0000-4000-8000-000000000003"))
            .await;
    assert_eq!(api.delete(&format!("/saas/subscriptions/{}", resold.subscription_id)).await.status, 400);
}

#[tokio::test]
async fn operations_api_should_reproduce_the_real_service_quirks() {
    let emu = start(fast_config()).await;
    let api = Api::new(&emu).await;
    let unknown = uuid::Uuid::new_v4();
    let r = api.get(&format!("/saas/subscriptions/{unknown}/operations")).await;
    assert_eq!((r.status, r.json()), (200, json!({"operations": []})), "empty list for unknown subscription");
    let r = api.get(&format!("/saas/subscriptions/{unknown}/operations/{}", uuid::Uuid::new_v4())).await;
    assert_eq!(r.status, 400, "400, not 404, for an unknown operation");

    let p = subscribed(&emu, &api, Purchase::plan("team-monthly").quantity(2)).await;
    let id = &p.subscription_id;
    let change = emu.change_quantity(id, 4).await.unwrap();
    let listed = api.get(&format!("/saas/subscriptions/{id}/operations")).await.json();
    assert_eq!(listed["operations"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed["operations"][0]["id"], change.operation_id);
    assert_eq!(listed["operations"][0]["operationRequestSource"], "Azure");
    emu.set_quirk(Quirk::OutstandingOperationsAsBareArray, true).await;
    let bare = api.get(&format!("/saas/subscriptions/{id}/operations")).await.json();
    assert!(bare.is_array() && bare[0]["id"] == change.operation_id.as_str());
    emu.set_quirk(Quirk::OperationRequestedSourceSpelling, true).await;
    let op = api.get(&format!("/saas/subscriptions/{id}/operations/{}", change.operation_id)).await.json();
    assert_eq!(op["operationRequestedSource"], "Azure");
    assert!(op.get("operationRequestSource").is_none());

    let op_path = format!("/saas/subscriptions/{id}/operations/{}", change.operation_id);
    assert_eq!(api.patch(&op_path, json!({"status": "Succeeded"})).await.status, 400, "only Success/Failure");
    assert_eq!(api.patch(&op_path, json!({"status": "Success"})).await.status, 200);
    let late = api.patch(&op_path, json!({"status": "Failure"})).await;
    assert_eq!(late.status, 409, "already decided");
    assert_eq!(emu.subscription(id).await.unwrap()["quantity"], 4);

    let publisher = api.patch(&format!("/saas/subscriptions/{id}"), json!({"quantity": 8})).await;
    let partner_op = operation_id(&publisher);
    let r = api
        .patch(&format!("/saas/subscriptions/{id}/operations/{partner_op}"), json!({"status": "Success"}))
        .await;
    assert_eq!(r.status, 500, "PATCH of a Partner-sourced operation");
    assert_eq!(r.json()["error"]["code"], "UnexpectedError");
    let done = emu.wait_operation(id, &partner_op, WAIT).await.unwrap();
    assert_eq!(done.status, "Succeeded");
}

#[tokio::test]
async fn seeding_and_paging_10000_subscriptions_should_be_fast_and_complete() {
    let emu = start(fast_config()).await;
    let api = Api::new(&emu).await;
    let started = std::time::Instant::now();
    let seeds: Vec<Value> = (0..10_000)
        .map(|i| json!({"name": format!("sub {i}"), "planId": "team-monthly", "quantity": 3}))
        .collect();
    assert_eq!(emu.seed(seeds).await, 10_000);
    let mut seen = HashSet::new();
    let mut next = Some(api.url("/saas/subscriptions"));
    let mut pages = 0;
    while let Some(url) = next {
        let page = api.send_raw(api.http.get(&url).bearer_auth(&api.token)).await.json();
        pages += 1;
        for s in page["subscriptions"].as_array().unwrap() {
            assert!(seen.insert(s["id"].as_str().unwrap().to_string()));
        }
        next = page.get("@nextLink").and_then(Value::as_str).map(str::to_string);
    }
    assert_eq!((pages, seen.len()), (100, 10_000));
    assert!(started.elapsed() < WAIT, "took {:?}", started.elapsed());
}
