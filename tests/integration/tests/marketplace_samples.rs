//! The client against Microsoft's documented JSON samples (replayed by a stub server), so that it
//! agrees with Microsoft and not only with our emulator; and exactly what it sends.

use std::time::Duration;

use fulfillment::domain::{
    OperationAction, OperationId, OperationStatus, PlanId, RequestSource, SubscriptionId, SubscriptionStatus,
    UsageEvent, UsageEventStatus, UsageQuery,
};
use fulfillment::marketplace::{
    AckStatus, Call, ClientCredential, EntraConfig, HttpMarketplaceClient, MarketplaceApi, MarketplaceConfig,
    MarketplaceError, PageToken, RetryPolicy, TokenEndpointVersion, UsageOutcome, all_subscriptions,
};
use integration_tests::stub::{Canned, Stub};

const TENANT: &str = "7a2d0000-0000-4000-8000-0000000000aa";
const SUB: &str = "3f9c1b7e-0000-4000-8000-00000000a001";
const V2_TOKEN_PATH: &str = "/entra/7a2d0000-0000-4000-8000-0000000000aa/oauth2/v2.0/token";
const V1_TOKEN_PATH: &str = "/entra/7a2d0000-0000-4000-8000-0000000000aa/oauth2/token";

fn config(stub: &Stub, version: TokenEndpointVersion) -> MarketplaceConfig {
    let mut entra = EntraConfig::new(
        TENANT,
        "app-id",
        vec![ClientCredential::secret("ENTRA_CLIENT_SECRET", "s3cret+&=value")],
        format!("{}/entra", stub.url).parse().expect("url"),
    );
    entra.version = version;
    let mut config = MarketplaceConfig::new(entra);
    config.api_base = format!("{}/api", stub.url).parse().expect("url");
    config.retry = RetryPolicy {
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        ..RetryPolicy::default()
    };
    config
}

/// A stub with a v2 token endpoint, and a client of it.
async fn stub_and_client() -> (Stub, HttpMarketplaceClient) {
    let stub = Stub::start().await;
    stub.on(
        "POST",
        V2_TOKEN_PATH,
        Canned::json(
            200,
            r#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"token-1"}"#,
        ),
    );
    let client = HttpMarketplaceClient::new(config(&stub, TokenEndpointVersion::V2)).expect("client");
    (stub, client)
}

fn sub() -> SubscriptionId {
    SubscriptionId::parse(SUB).expect("id")
}

fn api(path: &str) -> String {
    format!("/api{path}")
}

const SUBSCRIPTION: &str = r#"{
  "id": "3f9c1b7e-0000-4000-8000-00000000a001", "publisherId": "ourpublisher", "offerId": "our-saas-offer",
  "name": "Fabrikam production", "saasSubscriptionStatus": " Subscribed ",
  "beneficiary": { "emailId": "ops@fabrikam.example", "objectId": "o1", "tenantId": "t1", "puid": "1003200012345678" },
  "purchaser": { "emailId": "buyer@reseller.example", "objectId": "o2", "tenantId": "t2", "puid": null },
  "planId": "team-monthly", "quantity": "25",
  "term": { "startDate": "2025-05-04T00:00:00Z", "endDate": "2025-06-03T00:00:00Z", "termUnit": "P1M", "chargeDuration": null },
  "autoRenew": true, "isTest": false, "isFreeTrial": false, "allowedCustomerOperations": ["Read", "Update", "Delete"],
  "sandboxType": "None", "sessionMode": "None", "created": "2025-05-04T09:12:44.1234567Z", "lastModified": "0001-01-01T00:00:00"
}"#;

#[tokio::test]
async fn resolve_sends_the_token_exactly_and_parses_the_sample() {
    let (stub, client) = stub_and_client().await;
    let body = format!(
        r#"{{"id":"{SUB}","subscriptionName":"Fabrikam production","offerId":"our-saas-offer","planId":"team-monthly","quantity":25,"subscription":{SUBSCRIPTION}}}"#
    );
    stub.on("POST", &api("/saas/subscriptions/resolve"), Canned::json(200, &body));
    let token = "ab+cd/ef==+/";
    let resolved = client.resolve(token, &Call::correlated("landing-1")).await.expect("resolved");
    assert_eq!(resolved.id, sub());
    assert_eq!(resolved.quantity, Some(25));
    let subscription = resolved.subscription.expect("full subscription");
    assert_eq!(subscription.status, Some(SubscriptionStatus::Subscribed));
    assert_eq!(subscription.quantity, Some(25));

    let sent = &stub.seen_at("POST", &api("/saas/subscriptions/resolve"))[0];
    assert_eq!(sent.headers["x-ms-marketplace-token"], token);
    assert_eq!(sent.headers["authorization"], "Bearer token-1");
    assert_eq!(sent.headers["content-type"], "application/json");
    assert_eq!(sent.headers["x-ms-correlationid"], "landing-1");
    assert!(uuid::Uuid::parse_str(&sent.headers["x-ms-requestid"]).is_ok());
    assert_eq!(sent.query, "api-version=2018-08-31");
    assert_eq!(sent.body, "");
}

#[tokio::test]
async fn the_v2_token_request_uses_a_scope_and_the_v1_one_a_resource() {
    let (stub, client) = stub_and_client().await;
    stub.on("GET", &api(&format!("/saas/subscriptions/{SUB}")), Canned::json(200, SUBSCRIPTION));
    client.get_subscription(&sub(), &Call::new()).await.expect("get");
    let token_request = &stub.seen_at("POST", V2_TOKEN_PATH)[0];
    assert_eq!(token_request.headers["content-type"], "application/x-www-form-urlencoded");
    let form: Vec<(String, String)> =
        url::form_urlencoded::parse(token_request.body.as_bytes()).into_owned().collect();
    assert!(form.contains(&("grant_type".into(), "client_credentials".into())));
    assert!(form.contains(&("client_id".into(), "app-id".into())));
    assert!(form.contains(&("client_secret".into(), "s3cret+&=value".into())), "the secret is form-encoded");
    assert!(form.contains(&("scope".into(), "20e940b3-4c77-4b0b-9a53-9e16a1b010a7/.default".into())));

    // v1: `expires_in` comes as a string in the sample.
    let stub = Stub::start().await;
    stub.on(
        "POST",
        V1_TOKEN_PATH,
        Canned::json(200, r#"{"token_type":"Bearer","expires_in":"3600","ext_expires_in":"3600","expires_on":"1600003600","not_before":"1600000000","resource":"20e940b3-4c77-4b0b-9a53-9e16a1b010a7","access_token":"v1-token"}"#),
    );
    stub.on("GET", &api(&format!("/saas/subscriptions/{SUB}")), Canned::json(200, SUBSCRIPTION));
    let v1 = HttpMarketplaceClient::new(config(&stub, TokenEndpointVersion::V1)).expect("client");
    v1.get_subscription(&sub(), &Call::new()).await.expect("get");
    let form = &stub.seen_at("POST", V1_TOKEN_PATH)[0].body;
    assert!(form.contains("resource=20e940b3-4c77-4b0b-9a53-9e16a1b010a7"));
    assert_eq!(
        stub.seen_at("GET", &api(&format!("/saas/subscriptions/{SUB}")))[0].headers["authorization"],
        "Bearer v1-token"
    );
}

#[tokio::test]
async fn a_refused_client_secret_is_a_typed_error_without_the_secret() {
    let stub = Stub::start().await;
    stub.on("POST", V2_TOKEN_PATH, Canned::json(401, r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x"}"#));
    let client = HttpMarketplaceClient::new(config(&stub, TokenEndpointVersion::V2)).expect("client");
    let error = client.get_subscription(&sub(), &Call::new()).await.expect_err("no token");
    let MarketplaceError::Authentication(cause) = &error else { panic!("{error:?}") };
    assert!(cause.to_string().contains("invalid_client: AADSTS7000215"), "{cause}");
    assert!(!format!("{error:?}{cause}").contains("s3cret"));
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn listing_follows_next_links_including_the_doc_samples_broken_one() {
    let (stub, client) = stub_and_client().await;
    let page = |subs: &[&str], next: Option<&str>| {
        let items: Vec<String> = subs
            .iter()
            .map(|id| format!(r#"{{"id":"{id}","saasSubscriptionStatus":"Subscribed"}}"#))
            .collect();
        let next = next.map(|n| format!(r#","@nextLink":"{n}""#)).unwrap_or_default();
        Canned::json(200, &format!(r#"{{"subscriptions":[{}]{next}}}"#, items.join(",")))
    };
    // The first page's link is the doc sample's `https:// https://…`; the token is an encoded JSON blob.
    stub.on("GET", &api("/saas/subscriptions"), page(&["a", "b"], Some("https:// https://marketplaceapi.microsoft.com/api/saas/subscriptions/?continuationToken=%5b%7b%22token%22%3a%22x%2By%22%7d%5d&api-version=2018-08-31")));
    stub.on("GET", &api("/saas/subscriptions"), page(&["c"], Some("")));
    let all = all_subscriptions(&client, &Call::new()).await.expect("listed");
    assert_eq!(all.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
    let requests = stub.seen_at("GET", &api("/saas/subscriptions"));
    assert_eq!(requests[0].query, "api-version=2018-08-31");
    assert_eq!(
        requests[1].query, "api-version=2018-08-31&continuationToken=%5b%7b%22token%22%3a%22x%2By%22%7d%5d",
        "the token goes back exactly as received"
    );
}

#[tokio::test]
async fn an_empty_list_answer_and_the_2019_continuation_field_are_understood() {
    let (stub, client) = stub_and_client().await;
    stub.on("GET", &api("/saas/subscriptions"), Canned::empty(200));
    assert_eq!(client.list_subscriptions(None, &Call::new()).await.expect("empty").subscriptions.len(), 0);

    let (stub, client) = stub_and_client().await;
    stub.on(
        "GET",
        &api("/saas/subscriptions"),
        Canned::json(200, r#"{"subscriptions":[{"id":"a"}],"continuationToken":"t+1/2"}"#),
    );
    let page = client.list_subscriptions(None, &Call::new()).await.expect("page");
    assert_eq!(page.next, Some(PageToken("t%2B1%2F2".into())));
}

#[tokio::test]
async fn a_next_link_without_a_token_is_an_error_not_a_silent_end() {
    let (stub, client) = stub_and_client().await;
    stub.on(
        "GET",
        &api("/saas/subscriptions"),
        Canned::json(200, r#"{"subscriptions":[],"@nextLink":"https://elsewhere.example/next"}"#),
    );
    let error = client.list_subscriptions(None, &Call::new()).await.expect_err("undecodable");
    assert!(matches!(error, MarketplaceError::Decode { .. }), "{error:?}");
}

#[tokio::test]
async fn plans_parse_and_an_empty_answer_means_not_found() {
    let (stub, client) = stub_and_client().await;
    let path = api(&format!("/saas/subscriptions/{SUB}/listAvailablePlans"));
    stub.on("GET", &path, Canned::json(200, r#"{"plans":[{"planId":"gold","displayName":"Gold","isPrivate":false,"description":"","minQuantity":null,"maxQuantity":null,"hasFreeTrials":false,"isPricePerSeat":false,"isStopSell":false,"market":"US","planComponents":{"recurrentBillingTerms":[{"currency":"USD","price":100.0,"termUnit":"P1M","termDescription":"1 month","meteredQuantityIncluded":[{"dimensionId":"emails","units":"500"}]}],"meteringDimensions":[{"id":"emails","currency":"USD","pricePerUnit":0.01,"unitOfMeasure":"per email","displayName":"Emails"}]},"sourceOffers":[]}]}"#));
    let plans = client
        .list_available_plans(&sub(), PlanId::parse("gold").as_ref(), &Call::new())
        .await
        .expect("plans");
    assert_eq!(plans[0].plan_id.as_str(), "gold");
    assert_eq!(stub.seen_at("GET", &path)[0].query, "api-version=2018-08-31&planId=gold");

    let (stub, client) = stub_and_client().await;
    stub.on("GET", &path, Canned::empty(200));
    let error = client.list_available_plans(&sub(), None, &Call::new()).await.expect_err("unknown");
    assert!(matches!(error, MarketplaceError::NotFound { .. }), "{error:?}");
}

#[tokio::test]
async fn activation_and_changes_send_exactly_the_documented_bodies() {
    let (stub, client) = stub_and_client().await;
    let base = api(&format!("/saas/subscriptions/{SUB}"));
    let location = format!(
        "https://marketplaceapi.microsoft.com/api/saas/subscriptions/{SUB}/operations/op-42?api-version=2018-08-31"
    );
    stub.on("POST", &format!("{base}/activate"), Canned::empty(200));
    stub.on("PATCH", &base, Canned::empty(202).header("operation-location", &location));
    stub.on("DELETE", &base, Canned::empty(202).header("operation-location", &location));

    client
        .activate(&sub(), &PlanId::parse("team-monthly").expect("plan"), Some(25), &Call::new())
        .await
        .expect("activated");
    let plan =
        client.change_plan(&sub(), &PlanId::parse("gold").expect("plan"), &Call::new()).await.expect("202");
    assert_eq!(plan.operation_id.as_str(), "op-42");
    assert_eq!(plan.url.as_deref(), Some(location.as_str()));
    client.change_quantity(&sub(), 30, &Call::new()).await.expect("202");
    client.delete_subscription(&sub(), &Call::new()).await.expect("202");

    let json = |s: &str| serde_json::from_str::<serde_json::Value>(s).expect("json body");
    assert_eq!(
        json(&stub.seen_at("POST", &format!("{base}/activate"))[0].body),
        serde_json::json!({"planId":"team-monthly","quantity":25})
    );
    let patches = stub.seen_at("PATCH", &base);
    assert_eq!(json(&patches[0].body), serde_json::json!({"planId":"gold"}));
    assert_eq!(json(&patches[1].body), serde_json::json!({"quantity":30}));
    assert_eq!(stub.seen_at("DELETE", &base)[0].body, "");

    // A flat-rate activation sends no quantity.
    client
        .activate(&sub(), &PlanId::parse("flat").expect("plan"), None, &Call::new())
        .await
        .expect("activated");
    assert_eq!(
        json(&stub.seen_at("POST", &format!("{base}/activate"))[1].body),
        serde_json::json!({"planId":"flat"})
    );
}

#[tokio::test]
async fn a_202_without_operation_location_is_a_decode_error() {
    let (stub, client) = stub_and_client().await;
    stub.on("PATCH", &api(&format!("/saas/subscriptions/{SUB}")), Canned::empty(202));
    let error = client.change_quantity(&sub(), 3, &Call::new()).await.expect_err("no location");
    assert!(matches!(error, MarketplaceError::Decode { .. }), "{error:?}");
}

#[tokio::test]
async fn outstanding_operations_come_wrapped_bare_or_empty() {
    let path = api(&format!("/saas/subscriptions/{SUB}/operations"));
    let operation = r#"{"id":"op-1","activityId":"a","subscriptionId":"3f9c1b7e-0000-4000-8000-00000000a001","offerId":"o","publisherId":"p","planId":"gold","quantity":"","action":"Reinstate","timeStamp":"2022-02-10T18:48:58.4449937Z","status":"InProgress","errorStatusCode":"","errorMessage":""}"#;
    for body in [format!(r#"{{"operations":[{operation}]}}"#), format!("[{operation}]")] {
        let (stub, client) = stub_and_client().await;
        stub.on("GET", &path, Canned::json(200, &body));
        let operations = client.list_outstanding_operations(&sub(), &Call::new()).await.expect("listed");
        assert_eq!(operations.len(), 1, "{body}");
        assert_eq!(operations[0].action, Some(OperationAction::Reinstate));
    }
    for body in ["", "{}", r#"{"operations":[]}"#] {
        let (stub, client) = stub_and_client().await;
        stub.on("GET", &path, Canned::json(200, body));
        assert!(
            client.list_outstanding_operations(&sub(), &Call::new()).await.expect("listed").is_empty(),
            "{body:?}"
        );
    }
}

#[tokio::test]
async fn get_operation_parses_the_sample_and_keeps_a_400_a_bad_request() {
    let (stub, client) = stub_and_client().await;
    let path = api(&format!("/saas/subscriptions/{SUB}/operations/op-1"));
    stub.on("GET", &path, Canned::json(200, r#"{"id":"op-1","activityId":"a","subscriptionId":"3f9c1b7e-0000-4000-8000-00000000a001","offerId":"o","publisherId":"p","planId":"gold","quantity":5,"action":"ChangePlan","timeStamp":"2025-05-20T14:03:11.5120037Z","status":"Succeeded","errorStatusCode":"","errorMessage":"","operationRequestSource":"Partner"}"#));
    let operation = client
        .get_operation(&sub(), &OperationId::parse("op-1").expect("id"), &Call::new())
        .await
        .expect("operation");
    assert_eq!(operation.status, Some(OperationStatus::Succeeded));
    assert_eq!(operation.operation_request_source, Some(RequestSource::Partner));

    let (stub, client) = stub_and_client().await;
    stub.on("GET", &path, Canned::json(400, r#"{"code":"EntityNotFound","message":"Operation not found"}"#));
    let error = client
        .get_operation(&sub(), &OperationId::parse("op-1").expect("id"), &Call::new())
        .await
        .expect_err("unknown");
    // The real service's answer for an unknown operation, but a 400 may mean something else.
    let MarketplaceError::BadRequest { error, .. } = error else { panic!("{error:?}") };
    assert_eq!(error.code.as_deref(), Some("EntityNotFound"));
}

#[tokio::test]
async fn the_acknowledgement_sends_exactly_success_or_failure() {
    let (stub, client) = stub_and_client().await;
    let path = api(&format!("/saas/subscriptions/{SUB}/operations/op-1"));
    stub.on("PATCH", &path, Canned::empty(200));
    let op = OperationId::parse("op-1").expect("id");
    client.update_operation_status(&sub(), &op, AckStatus::Success, &Call::new()).await.expect("acked");
    client.update_operation_status(&sub(), &op, AckStatus::Failure, &Call::new()).await.expect("acked");
    let bodies: Vec<String> = stub.seen_at("PATCH", &path).into_iter().map(|s| s.body).collect();
    assert_eq!(bodies, [r#"{"status":"Success"}"#, r#"{"status":"Failure"}"#]);

    let (stub, client) = stub_and_client().await;
    stub.on("PATCH", &path, Canned::json(409, r#"{"requestId":"x"}"#));
    let error =
        client.update_operation_status(&sub(), &op, AckStatus::Failure, &Call::new()).await.expect_err("409");
    assert!(matches!(error, MarketplaceError::Conflict { .. }), "{error:?}");
}

#[tokio::test]
async fn every_documented_error_body_is_parsed() {
    let path = api(&format!("/saas/subscriptions/{SUB}"));
    let cases = [
        (
            400,
            r#"{"code":"BadArgument","message":"One or more errors have occurred.","target":"quantity","details":[{"code":"InvalidValue","message":"too many","target":"quantity"}]}"#,
            Some("BadArgument"),
        ),
        (
            400,
            r#"{"Error":{"Code":"UnsupportedApiVersion","Message":"The api-version is not supported."}}"#,
            Some("UnsupportedApiVersion"),
        ),
        (
            404,
            r#"{"error":{"code":"EntityNotFound","message":"Subscription not found"}}"#,
            Some("EntityNotFound"),
        ),
        (409, r#"{"code":"Conflict","message":"already"}"#, Some("Conflict")),
        (501, "not json at all", None),
    ];
    for (status, body, code) in cases {
        let (stub, client) = stub_and_client().await;
        stub.on("GET", &path, Canned::json(status, body));
        let error = client.get_subscription(&sub(), &Call::new()).await.expect_err("an error");
        assert_eq!(error.status(), Some(status));
        let (details, expected) = match &error {
            MarketplaceError::BadRequest { error, .. } => (error, 400),
            MarketplaceError::NotFound { error, .. } => (error, 404),
            MarketplaceError::Conflict { error, .. } => (error, 409),
            MarketplaceError::Server { error, .. } => (error, 501),
            other => panic!("{other:?}"),
        };
        assert_eq!(expected, status);
        assert_eq!(details.code.as_deref(), code, "{body}");
        if status == 400 && code == Some("BadArgument") {
            assert_eq!(details.details[0].code.as_deref(), Some("InvalidValue"));
        }
        if code.is_none() {
            assert_eq!(details.raw.as_deref(), Some("not json at all"));
        }
    }
}

#[tokio::test]
async fn a_500_with_the_documented_body_is_retried_then_reported() {
    let (stub, client) = stub_and_client().await;
    let path = api(&format!("/saas/subscriptions/{SUB}"));
    stub.on(
        "GET",
        &path,
        Canned::json(
            500,
            r#"{"error":{"code":"UnexpectedError","message":"An unexpected error has occurred."}}"#,
        ),
    );
    let error = client.get_subscription(&sub(), &Call::new()).await.expect_err("500");
    let MarketplaceError::Server { error: body, meta } = &error else { panic!("{error:?}") };
    assert_eq!((meta.status, body.code.as_deref()), (500, Some("UnexpectedError")));
    assert!(error.is_retryable());
    assert_eq!(stub.seen_at("GET", &path).len(), 4, "the first attempt and 3 retries");
}

#[tokio::test]
async fn a_403_with_an_empty_body_refreshes_the_token_once_then_is_forbidden() {
    let (stub, client) = stub_and_client().await;
    let path = api(&format!("/saas/subscriptions/{SUB}"));
    stub.on("GET", &path, Canned::empty(403));
    let error = client.get_subscription(&sub(), &Call::new()).await.expect_err("403");
    assert!(matches!(error, MarketplaceError::Forbidden { .. }), "{error:?}");
    assert_eq!(stub.seen_at("GET", &path).len(), 2);
    assert_eq!(stub.seen_at("POST", V2_TOKEN_PATH).len(), 2, "one refresh after the first 403");
}

#[tokio::test]
async fn metering_samples_parse_including_the_duplicate_409() {
    let (stub, client) = stub_and_client().await;
    let event = UsageEvent {
        resource_id: sub(),
        quantity: 5.0,
        dimension: "emails".into(),
        effective_start_time: "2025-05-20T14:00:00Z".parse().expect("time"),
        plan_id: PlanId::parse("gold").expect("plan"),
    };
    stub.on("POST", "/api/usageEvent", Canned::json(200, r#"{"usageEventId":"u-1","status":"Accepted","messageTime":"2025-05-20T14:20:11.1234567Z","resourceId":"3f9c1b7e-0000-4000-8000-00000000a001","quantity":5.0,"dimension":"emails","effectiveStartTime":"2025-05-20T14:00:00Z","planId":"gold"}"#));
    let UsageOutcome::Accepted(accepted) =
        client.post_usage_event(&event, &Call::new()).await.expect("posted")
    else {
        panic!("accepted")
    };
    assert_eq!(
        (accepted.usage_event_id.as_deref(), accepted.status),
        (Some("u-1"), Some(UsageEventStatus::Accepted))
    );
    let sent: serde_json::Value =
        serde_json::from_str(&stub.seen_at("POST", "/api/usageEvent")[0].body).expect("json");
    assert_eq!(
        sent,
        serde_json::json!({"resourceId": SUB, "quantity": 5.0, "dimension": "emails", "effectiveStartTime": "2025-05-20T14:00:00Z", "planId": "gold"})
    );

    let (stub, client) = stub_and_client().await;
    stub.on("POST", "/api/usageEvent", Canned::json(409, r#"{"code":"Conflict","message":"This usage event already exist.","additionalInfo":{"acceptedMessage":{"usageEventId":"u-1","status":"Duplicate","messageTime":"2025-05-20T14:20:11Z","resourceId":"3f9c1b7e-0000-4000-8000-00000000a001","quantity":5.0,"dimension":"emails","effectiveStartTime":"2025-05-20T14:00:00Z","planId":"gold"}}}"#));
    let UsageOutcome::Duplicate(Some(previous)) =
        client.post_usage_event(&event, &Call::new()).await.expect("posted")
    else {
        panic!("duplicate")
    };
    assert_eq!(previous.status, Some(UsageEventStatus::Duplicate));

    let (stub, client) = stub_and_client().await;
    stub.on("POST", "/api/batchUsageEvent", Canned::json(200, r#"{"count":2,"result":[{"usageEventId":"u-2","status":"Accepted","resourceId":"a","dimension":"emails"},{"status":"Expired","resourceId":"b","dimension":"emails","error":{"code":"BadArgument","message":"expired"}}]}"#));
    let batch = client.post_usage_events(&[event.clone(), event.clone()], &Call::new()).await.expect("batch");
    assert_eq!(batch.result[1].status, Some(UsageEventStatus::Expired));
    let sent: serde_json::Value =
        serde_json::from_str(&stub.seen_at("POST", "/api/batchUsageEvent")[0].body).expect("json");
    assert_eq!(sent["request"].as_array().map(Vec::len), Some(2));
    let too_many = vec![event.clone(); 26];
    assert!(matches!(
        client.post_usage_events(&too_many, &Call::new()).await,
        Err(MarketplaceError::Invalid(_))
    ));
    assert!(matches!(client.post_usage_events(&[], &Call::new()).await, Err(MarketplaceError::Invalid(_))));

    let (stub, client) = stub_and_client().await;
    stub.on("GET", "/api/usageEvents", Canned::json(200, r#"[{"usageDate":"2025-05-20T00:00:00","usageResourceId":"3f9c1b7e-0000-4000-8000-00000000a001","dimension":"emails","planId":"gold","planName":"Gold","offerId":"o","offerName":"O","offerType":"SaaS","azureSubscriptionId":"","reconStatus":"Accepted","submittedQuantity":5.0,"processedQuantity":5.0,"submittedCount":1}]"#));
    let query = UsageQuery {
        usage_start_date: "2025-05-01T00:00:00Z".parse().expect("time"),
        usage_end_date: None,
        offer_id: Some("o".into()),
        plan_id: None,
        dimension: None,
    };
    let records = client.get_usage_events(&query, &Call::new()).await.expect("records");
    assert_eq!(records[0].submitted_count, Some(1));
    assert_eq!(
        stub.seen_at("GET", "/api/usageEvents")[0].query,
        "api-version=2018-08-31&usageStartDate=2025-05-01T00%3A00%3A00Z&offerId=o"
    );
}

#[tokio::test]
async fn ids_from_outside_are_percent_encoded_into_the_path() {
    let (stub, client) = stub_and_client().await;
    let hostile = SubscriptionId::parse("../../usageEvent?x=1").expect("id");
    let error = client.get_subscription(&hostile, &Call::new()).await.expect_err("nothing there");
    assert!(matches!(error, MarketplaceError::NotFound { .. }), "{error:?}");
    let paths: Vec<String> = stub.seen().into_iter().map(|s| s.path).collect();
    assert!(paths.contains(&"/api/saas/subscriptions/..%2F..%2FusageEvent%3Fx=1".to_owned()), "{paths:?}");
}
