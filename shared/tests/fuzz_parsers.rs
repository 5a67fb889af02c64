//! Fuzzing every parser of the core that reads outside input, with `proptest`: webhook bodies,
//! webhook bearer tokens, landing query strings, sealed form tokens and cookies, and the store's
//! page tokens. Every input must be read without a panic; what is invalid must give an error that
//! says so; what is valid must still be read (and round-trip where that makes sense).
//!
//! Runs are repeatable (a fixed seed, see `support::config`) and write nothing into the tree.

mod support;

use std::sync::LazyLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use fulfillment::domain::lenient::parse_timestamp;
use fulfillment::domain::{Timestamp, WebhookPayload};
use fulfillment::identity::{SignedInUser, TokenVersion, WebhookAuthError, WebhookAuthenticator};
use fulfillment::store::dynamodb::layout;
use fulfillment::store::{ListFilter, StoreError, SubscriptionStore};
use fulfillment::web::query::{self, MAX_TOKEN_LENGTH};
use fulfillment::web::seal::{SealError, Sealer};
use fulfillment::web::session::{self, FormError, SESSION_COOKIE};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Value, json};
use support::{KeyServer, TestKey, check, runtime};

// Inputs -------------------------------------------------------------------------------------------

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,24}".prop_map(Value::from),
        interesting_text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            btree_map(".{0,8}", inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Text that the lenient decoders treat specially: dates, numbers, padded enum values, GUIDs.
fn interesting_text() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            "",
            " ",
            "0",
            "-1",
            "4294967295",
            "4294967296",
            "18446744073709551616",
            "1e3",
            "20.0",
            "NaN",
            "true",
            "FALSE",
            "null",
            "0001-01-01T00:00:00",
            "0001-01-01",
            "2026-02-30",
            "2026-13-01",
            "9999-12-31T23:59:59.9999999-23:59",
            "+262143-01-01T00:00:00Z",
            "-0001-01-01T00:00:00Z",
            "2026-05-20T14:00:11.5120037Z",
            "2026-05-20T14:00:11",
            "2026-05-20",
            "2026-05-20T25:00:00Z",
            " Subscribed ",
            "pendingfulfillmentstart",
            "In Progress",
            "Success",
            "Failure",
            "P1M",
            "P1Y",
            "{72F988BF-0000-4000-8000-00000000E001}",
            "72f988bf-0000-4000-8000-00000000e001",
            "\u{0}",
            "é",
            "\u{feff}2026-05-20",
        ])
        .prop_map(str::to_owned),
        "[0-9 +-.:TZe]{0,30}",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{0,12})?)?)?(Z|[+-][0-9]{2}:[0-9]{2})?",
    ]
}

/// Values for the fields of a webhook payload, valid or not.
fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => interesting_text().prop_map(Value::from),
        2 => json_value(),
        1 => select(vec![
            json!(u32::MAX), json!(u64::from(u32::MAX) + 1), json!(-1), json!(1.5), json!(-0.0),
            json!(1e300), json!(4294967295.0), json!(i64::MIN), json!(u64::MAX), json!([]), json!({}),
        ]),
    ]
}

const PAYLOAD_FIELDS: &[&str] = &[
    "id",
    "subscriptionId",
    "action",
    "operationType",
    "activityId",
    "publisherId",
    "offerId",
    "planId",
    "quantity",
    "timeStamp",
    "timestamp",
    "status",
    "errorStatusCode",
    "errorMessage",
    "operationRequestSource",
    "subscription",
    "purchaseToken",
    "resourceLocation",
];
const SUBSCRIPTION_FIELDS: &[&str] = &[
    "id",
    "publisherId",
    "offerId",
    "name",
    "saasSubscriptionStatus",
    "beneficiary",
    "purchaser",
    "planId",
    "quantity",
    "term",
    "autoRenew",
    "isTest",
    "isFreeTrial",
    "allowedCustomerOperations",
    "sandboxType",
    "sessionMode",
    "created",
    "lastModified",
];
const PARTY_FIELDS: &[&str] = &["emailId", "objectId", "tenantId", "puid"];
const TERM_FIELDS: &[&str] = &["startDate", "endDate", "termUnit", "chargeDuration"];

/// The bodies of the webhook samples (`events/webhook/*.json`, API Gateway events), and those of
/// them that are valid payloads.
struct Samples {
    all: Vec<Vec<u8>>,
    valid: Vec<Value>,
}

static SAMPLES: LazyLock<Samples> = LazyLock::new(|| {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events/webhook");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("events/webhook")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    let mut all = Vec::new();
    let mut valid = Vec::new();
    for path in paths {
        let event: Value = serde_json::from_slice(&std::fs::read(&path).expect("readable")).expect("JSON");
        let Some(body) = event["body"].as_str() else { continue };
        if serde_json::from_str::<WebhookPayload>(body).is_ok() {
            valid.push(serde_json::from_str(body).expect("JSON"));
        }
        all.push(body.as_bytes().to_vec());
    }
    assert!(valid.len() >= 8, "the valid samples: {}", valid.len());
    Samples { all, valid }
});

/// A small edit of a byte string.
#[derive(Debug, Clone)]
enum Edit {
    Replace(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
    /// Inserts a copy of a slice of the input elsewhere (duplicated keys, brackets, digits).
    Splice {
        from: usize,
        len: usize,
        to: usize,
    },
}

fn edits(bytes: impl Strategy<Value = u8> + Clone) -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<usize>(), bytes.clone()).prop_map(|(i, b)| Edit::Replace(i, b)),
        (any::<usize>(), bytes).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Delete),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), 1..16usize, any::<usize>()).prop_map(|(from, len, to)| Edit::Splice {
            from,
            len,
            to
        }),
    ];
    vec(edit, 1..4)
}

fn apply(input: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut bytes = input.to_vec();
    for edit in edits {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
        match *edit {
            Edit::Replace(i, b) if !bytes.is_empty() => {
                let i = at(i, bytes.len());
                bytes[i] = b;
            }
            Edit::Insert(i, b) => bytes.insert(at(i, bytes.len() + 1), b),
            Edit::Delete(i) if !bytes.is_empty() => {
                bytes.remove(at(i, bytes.len()));
            }
            Edit::Truncate(i) => bytes.truncate(at(i, bytes.len() + 1)),
            Edit::Splice { from, len, to } if !bytes.is_empty() => {
                let from = at(from, bytes.len());
                let piece = bytes[from..(from + len).min(bytes.len())].to_vec();
                let to = at(to, bytes.len() + 1);
                bytes.splice(to..to, piece);
            }
            _ => {}
        }
    }
    bytes
}

fn json_byte() -> impl Strategy<Value = u8> + Clone {
    prop_oneof![any::<u8>(), select(b"{}[]\":,0123456789-+.eEtrufalsn \\/TZ".to_vec())]
}

fn base64url_byte() -> impl Strategy<Value = u8> + Clone {
    select(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/".to_vec())
}

// Webhook bodies -----------------------------------------------------------------------------------

/// Reads a body as the webhook does: `Some` payload, or `None` after checking the error has a
/// message. A payload must round-trip through what the core writes.
fn read_payload(body: &[u8]) -> Result<Option<WebhookPayload>, TestCaseError> {
    match serde_json::from_slice::<WebhookPayload>(body) {
        Ok(payload) => {
            let (id, subscription) =
                (payload.operation.id.as_str(), payload.operation.subscription_id.as_str());
            prop_assert!(!id.is_empty() && id.trim() == id, "operation id {id:?}");
            prop_assert!(!subscription.is_empty() && subscription.trim() == subscription);
            // What the core keeps (and the store writes) reads back as the same payload.
            let written = serde_json::to_vec(&payload).expect("a payload serializes");
            let again = serde_json::from_slice::<WebhookPayload>(&written);
            prop_assert_eq!(
                again.as_ref().ok(),
                Some(&payload),
                "round trip of {}",
                String::from_utf8_lossy(&written)
            );
            Ok(Some(payload))
        }
        Err(error) => {
            let message = error.to_string();
            prop_assert!(!message.is_empty() && message.len() < 2048, "message {message:?}");
            Ok(None)
        }
    }
}

#[test]
fn webhook_bodies_of_arbitrary_bytes_never_panic() {
    check(1500, prop_oneof![vec(any::<u8>(), 0..256), vec(json_byte(), 0..256)], |body| {
        read_payload(&body).map(drop)
    });
}

#[test]
fn webhook_bodies_of_arbitrary_json_never_panic() {
    check(2000, json_value(), |value| {
        let payload = read_payload(value.to_string().as_bytes())?;
        if !value.is_object() {
            prop_assert!(payload.is_none(), "only an object is a payload: {value}");
        }
        Ok(())
    });
}

/// Objects with the payload's own field names (and the subscription's, nested), any values.
#[test]
fn webhook_bodies_with_the_payloads_fields_never_panic() {
    let party = btree_map(select(PARTY_FIELDS), field_value(), 0..=PARTY_FIELDS.len());
    let term = btree_map(select(TERM_FIELDS), field_value(), 0..=TERM_FIELDS.len());
    let subscription = (btree_map(select(SUBSCRIPTION_FIELDS), field_value(), 0..8), party, term).prop_map(
        |(mut fields, party, term)| {
            fields.insert("beneficiary", json!(party));
            fields.insert("term", json!(term));
            json!(fields)
        },
    );
    let payload = (btree_map(select(PAYLOAD_FIELDS), field_value(), 0..8), prop::option::of(subscription));
    check(1000, payload, |(fields, subscription)| {
        let mut body = json!(fields);
        if let Some(subscription) = subscription {
            body["subscription"] = subscription;
        }
        let payload = read_payload(body.to_string().as_bytes())?;
        let id_ok = |name: &str| body[name].as_str().is_some_and(|v| !v.trim().is_empty());
        if !id_ok("id") || !id_ok("subscriptionId") {
            prop_assert!(payload.is_none(), "id and subscriptionId are required: {body}");
        }
        Ok(())
    });
}

/// Where a field is in a payload: at the top, in the subscription, or one level deeper.
fn field_path() -> impl Strategy<Value = Vec<&'static str>> {
    prop_oneof![
        select(PAYLOAD_FIELDS).prop_map(|f| vec![f]),
        select(SUBSCRIPTION_FIELDS).prop_map(|f| vec!["subscription", f]),
        select(PARTY_FIELDS).prop_map(|f| vec!["subscription", "beneficiary", f]),
        select(PARTY_FIELDS).prop_map(|f| vec!["subscription", "purchaser", f]),
        select(TERM_FIELDS).prop_map(|f| vec!["subscription", "term", f]),
    ]
}

/// Valid samples with one to four fields replaced by any value, or removed.
#[test]
fn webhook_samples_with_fields_replaced_or_removed_never_panic() {
    let change = (field_path(), prop::option::weighted(0.8, field_value()));
    check(1500, (0..SAMPLES.valid.len(), vec(change, 1..5)), |(sample, changes)| {
        let mut body = SAMPLES.valid[sample].clone();
        for (path, value) in &changes {
            let (last, parents) = path.split_last().expect("a path");
            let Some(parent) = parents.iter().try_fold(&mut body, |v, key| v.get_mut(*key)) else { continue };
            let Some(parent) = parent.as_object_mut() else { continue };
            match value {
                Some(value) => parent.insert((*last).to_owned(), value.clone()),
                None => parent.remove(*last),
            };
        }
        let payload = read_payload(body.to_string().as_bytes())?;
        let id_ok = |name: &str| body[name].as_str().is_some_and(|v| !v.trim().is_empty());
        if !id_ok("id") || !id_ok("subscriptionId") {
            prop_assert!(payload.is_none(), "id and subscriptionId are required: {body}");
        }
        Ok(())
    });
}

#[test]
fn mutated_webhook_samples_never_panic() {
    let samples = &SAMPLES.all;
    check(2000, (0..samples.len(), edits(json_byte())), |(sample, edits)| {
        read_payload(&apply(&samples[sample], &edits)).map(drop)
    });
}

/// One field of a valid sample set to a valid value of its kind: the payload still reads, with it.
#[test]
fn valid_webhook_fields_still_read() {
    #[derive(Debug, Clone)]
    enum Valid {
        Quantity(u32, bool),
        Time(Timestamp, String),
        Text(String),
        Action(String),
    }
    let valid = prop_oneof![
        (any::<u32>(), any::<bool>()).prop_map(|(q, text)| Valid::Quantity(q, text)),
        timestamp_text().prop_map(|(t, text)| Valid::Time(t, text)),
        "[A-Za-z0-9 ._-]{1,40}".prop_filter("not blank", |s| !s.trim().is_empty()).prop_map(Valid::Text),
        select(vec![
            "Subscribe",
            "changeplan",
            " ChangeQuantity ",
            "RENEW",
            "Suspend",
            "Reinstate",
            "Unsubscribe",
            "Transfer",
            "Frobnicate"
        ])
        .prop_map(|a| Valid::Action(a.to_owned())),
    ];
    check(1500, (0..SAMPLES.valid.len(), valid), |(sample, valid)| {
        let mut body = SAMPLES.valid[sample].clone();
        match &valid {
            Valid::Quantity(q, true) => body["quantity"] = json!(q.to_string()),
            Valid::Quantity(q, false) => body["quantity"] = json!(q),
            Valid::Time(_, text) => body["timeStamp"] = json!(text),
            Valid::Text(text) => body["offerId"] = json!(text),
            Valid::Action(action) => body["action"] = json!(action),
        }
        let payload = serde_json::from_value::<WebhookPayload>(body.clone())
            .map_err(|e| TestCaseError::fail(format!("{e}: {body}")))?;
        let operation = &payload.operation;
        match valid {
            Valid::Quantity(q, _) => prop_assert_eq!(operation.quantity, Some(q)),
            Valid::Time(t, _) => prop_assert_eq!(operation.time_stamp, Some(t).filter(|t| t.year() > 1)),
            Valid::Text(text) => prop_assert_eq!(operation.offer_id.as_deref(), Some(text.as_str())),
            Valid::Action(action) => {
                prop_assert_eq!(
                    operation.action.as_ref().map(|a| a.as_str().to_ascii_lowercase()),
                    Some(action.trim().to_ascii_lowercase())
                );
            }
        }
        read_payload(&serde_json::to_vec(&body).expect("JSON")).map(drop)
    });
}

/// An instant, and one of the spellings Microsoft uses for it.
fn timestamp_text() -> impl Strategy<Value = (Timestamp, String)> {
    (
        1i32..=9999,
        1u32..=12,
        1u32..=28,
        0u32..24,
        0u32..60,
        0u32..60,
        0usize..=9,
        any::<u32>(),
        0u8..4,
        -1439i32..=1439,
    )
        .prop_map(|(year, month, day, h, m, s, digits, fraction, form, offset)| {
            let date = NaiveDate::from_ymd_opt(year, month, day).expect("a date");
            let fraction = fraction % 10u32.pow(digits as u32);
            let nanos = if digits == 0 { 0 } else { fraction * 10u32.pow(9 - digits as u32) };
            let local = date.and_hms_nano_opt(h, m, s, nanos).expect("a time");
            let clock = format!("{:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}", year);
            let clock = if digits == 0 { clock } else { format!("{clock}.{fraction:0digits$}") };
            match form {
                0 => (local.and_utc(), format!("{clock}Z")),
                1 => {
                    let sign = if offset < 0 { '-' } else { '+' };
                    let text = format!("{clock}{sign}{:02}:{:02}", offset.abs() / 60, offset.abs() % 60);
                    (local.and_utc() - chrono::Duration::minutes(i64::from(offset)), text)
                }
                2 => (local.and_utc(), clock),
                _ => (
                    date.and_hms_opt(0, 0, 0).expect("midnight").and_utc(),
                    format!("{year:04}-{month:02}-{day:02}"),
                ),
            }
        })
}

#[test]
fn timestamps_parse_in_every_documented_form_and_nothing_else_panics() {
    check(1500, timestamp_text(), |(expected, text)| {
        let parsed = parse_timestamp(&format!(" {text} ")).map_err(TestCaseError::fail)?;
        prop_assert_eq!(parsed, Some(expected).filter(|t| t.year() > 1), "{}", text);
        Ok(())
    });
    check(2000, prop_oneof![".{0,40}", interesting_text()], |text| {
        if let Err(message) = parse_timestamp(&text) {
            prop_assert!(message.contains("is not a date or date-time"), "{message}");
        }
        Ok(())
    });
}

// Webhook bearer tokens -----------------------------------------------------------------------------

struct Tokens {
    key: TestKey,
    server: KeyServer,
    authenticator: WebhookAuthenticator,
    runtime: tokio::runtime::Runtime,
}

impl Tokens {
    fn new() -> Self {
        let key = TestKey::load();
        let server = KeyServer::start(&key.jwks());
        let authenticator = support::authenticator(&server);
        Self { key, server, authenticator, runtime: runtime() }
    }

    fn verify(
        &self,
        authorization: Option<&str>,
    ) -> Result<fulfillment::identity::WebhookCaller, WebhookAuthError> {
        self.runtime.block_on(self.authenticator.verify(authorization))
    }

    /// The refusal of `authorization`: the caller's fault, short, and quoting no part of the token.
    fn refused(&self, authorization: &str) -> Result<WebhookAuthError, TestCaseError> {
        let error = match self.verify(Some(authorization)) {
            Ok(caller) => return Err(TestCaseError::fail(format!("accepted {authorization:?}: {caller:?}"))),
            Err(error) => error,
        };
        prop_assert!(error.is_callers_fault(), "{error:?}");
        let text = format!("{error} | {error:?}");
        prop_assert!(!error.to_string().is_empty() && text.len() < 600, "a short message: {text}");
        let token = authorization.trim().split_once([' ', '\t']).map_or(authorization, |(_, t)| t.trim());
        for part in std::iter::once(token).chain(token.split('.')).filter(|p| p.len() >= 16) {
            prop_assert!(!text.contains(part), "the error quotes the token: {text}");
        }
        Ok(error)
    }
}

#[test]
fn arbitrary_authorization_headers_are_refused() {
    let tokens = Tokens::new();
    let header =
        prop_oneof![".{0,64}", "[Bb][Ee][Aa][Rr][Ee][Rr][ \t]{0,2}.{0,200}", "Bearer [A-Za-z0-9_.-]{0,300}",];
    check(2000, header, |header| {
        tokens.refused(&header)?;
        Ok(())
    });
    assert_keys_not_hammered(&tokens);
}

/// A header for a token: random text, or a JSON object with an `alg` and a `kid` of any kind.
fn token_header() -> impl Strategy<Value = String> {
    // Mostly RS256 and our key id, so that many tokens reach the signature check.
    let alg = prop_oneof![
        4 => Just(json!("RS256")),
        2 => select(vec![json!("none"), json!("HS256"), json!("RS384"), json!("rs256"), json!(null), json!(256)]),
        1 => json_value(),
    ];
    let kid = prop_oneof![
        4 => Just(json!(support::KID)),
        2 => select(vec![json!(""), json!("other"), json!(null), json!(["fuzz-key-1"])]),
        1 => json_value(),
    ];
    let object = (
        prop::option::weighted(0.9, alg),
        prop::option::weighted(0.9, kid),
        prop::option::weighted(0.05, json_value()),
        any::<bool>(),
    )
        .prop_map(|(alg, kid, crit, typ)| {
            let mut header = serde_json::Map::new();
            if let Some(alg) = alg {
                header.insert("alg".into(), alg);
            }
            if let Some(kid) = kid {
                header.insert("kid".into(), kid);
            }
            if let Some(crit) = crit {
                header.insert("crit".into(), crit);
            }
            if typ {
                header.insert("typ".into(), json!("JWT"));
            }
            URL_SAFE_NO_PAD.encode(Value::Object(header).to_string())
        });
    prop_oneof![
        2 => object,
        1 => json_value().prop_map(|v| URL_SAFE_NO_PAD.encode(v.to_string())),
        1 => "[A-Za-z0-9_-]{0,80}",
    ]
}

/// A payload for a token: random text, or claims near a genuine token's.
fn token_payload() -> impl Strategy<Value = String> {
    let claims = (
        any::<bool>(),
        select(vec!["aud", "iss", "tid", "appid", "azp", "exp", "nbf", "oid", "none"]),
        field_value(),
    )
        .prop_map(|(v2, claim, value)| {
            let mut claims = support::webhook_claims(v2, "oid");
            claims[claim] = value;
            URL_SAFE_NO_PAD.encode(claims.to_string())
        });
    prop_oneof![
        2 => claims,
        1 => json_value().prop_map(|v| URL_SAFE_NO_PAD.encode(v.to_string())),
        1 => "[A-Za-z0-9_-]{0,120}",
    ]
}

#[test]
fn arbitrary_three_part_base64url_tokens_are_refused() {
    let tokens = Tokens::new();
    let signature = prop_oneof![
        vec(any::<u8>(), 0..300).prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
        "[A-Za-z0-9_-]{0,400}",
        Just(String::new()),
    ];
    check(1000, (token_header(), token_payload(), signature), |(header, payload, signature)| {
        let error = tokens.refused(&format!("Bearer {header}.{payload}.{signature}"))?;
        // Nothing about the claims is judged before the signature verifies, and it never does here.
        let judged = matches!(
            error,
            WebhookAuthError::Claim { .. } | WebhookAuthError::Expired | WebhookAuthError::NotYetValid
        );
        prop_assert!(!judged, "{error:?}");
        Ok(())
    });
    assert_keys_not_hammered(&tokens);
}

fn assert_keys_not_hammered(tokens: &Tokens) {
    // One fetch for the first unknown key id, at most one more: forged key ids cannot make us
    // refetch the keys per request.
    assert!(tokens.server.fetches() <= 2, "the keys were fetched {} times", tokens.server.fetches());
}

#[test]
fn mutated_valid_tokens_are_refused() {
    let tokens = Tokens::new();
    let originals: Vec<String> =
        (0..4).map(|i| tokens.key.webhook_token(i % 2 == 0, &format!("oid-{i}"))).collect();
    for token in &originals {
        tokens.verify(Some(&format!("Bearer {token}"))).expect("a genuine token is accepted");
    }
    let swap = prop::option::of(0..3usize);
    check(2000, (0..originals.len(), edits(base64url_byte()), swap), |(which, edits, swap)| {
        let original = &originals[which];
        let mut mutated = String::from_utf8(apply(original.as_bytes(), &edits)).expect("ASCII");
        if let Some(part) = swap {
            // One part of another genuine token in place of this one's.
            let other: Vec<&str> = originals[(which + 1) % originals.len()].split('.').collect();
            let mut parts: Vec<&str> = mutated.split('.').collect();
            if let Some(slot) = parts.get_mut(part) {
                *slot = other[part];
            }
            mutated = parts.join(".");
        }
        if &mutated == original {
            return Ok(());
        }
        tokens.refused(&format!("Bearer {mutated}"))?;
        Ok(())
    });
    assert_keys_not_hammered(&tokens);
}

/// Signed claims, each judged: a wrong claim names itself.
#[test]
fn signed_tokens_with_changed_claims_are_judged_by_their_claims() {
    let tokens = Tokens::new();
    let changes =
        (any::<bool>(), select(vec!["aud", "iss", "tid", "appid", "azp", "exp", "nbf"]), field_value());
    check(500, changes, |(v2, claim, value)| {
        let mut claims = support::webhook_claims(v2, "oid");
        let original = claims[claim].clone();
        claims[claim] = value.clone();
        let token = tokens.key.sign(&json!({ "alg": "RS256", "kid": support::KID }), &claims);
        match tokens.verify(Some(&format!("Bearer {token}"))) {
            Ok(_) => {
                // Only an equivalent value passes: the same, a differently cased GUID, an absent
                // alternative (appid/azp) or a time that still holds.
                let same = value == original
                    || value.as_str().zip(original.as_str()).is_some_and(|(a, b)| a.eq_ignore_ascii_case(b))
                    || matches!(claim, "appid" | "azp" | "nbf") && value.is_null()
                    || matches!(claim, "exp" | "nbf") && value.is_number()
                    || claim == "aud" && value.as_array().is_some_and(|a| a.iter().any(|v| v == &original));
                prop_assert!(same, "accepted {claim} = {value}");
            }
            Err(error) => {
                prop_assert!(error.is_callers_fault());
                let named = match &error {
                    WebhookAuthError::Claim { claim: named, .. } => {
                        *named == claim || matches!((*named, claim), ("appid" | "azp", "appid" | "azp"))
                    }
                    WebhookAuthError::Expired => claim == "exp",
                    WebhookAuthError::NotYetValid => claim == "nbf",
                    // A time that is not a number of seconds.
                    WebhookAuthError::Malformed(_) => matches!(claim, "exp" | "nbf"),
                    _ => false,
                };
                prop_assert!(named, "{claim} = {value}: {error:?}");
            }
        }
        Ok(())
    });
}

#[test]
fn genuine_tokens_are_accepted_in_every_form() {
    let tokens = Tokens::new();
    let forms = (
        any::<bool>(),
        "[a-zA-Z0-9-]{1,36}",
        0u8..3,
        any::<bool>(),
        "[ \t]{1,3}",
        select(vec!["Bearer", "bearer", "BEARER"]),
    );
    check(200, forms, |(v2, oid, aud, upper, space, scheme)| {
        let mut claims = support::webhook_claims(v2, &oid);
        claims["aud"] = match aud {
            0 => json!(support::APP),
            1 => json!(format!("api://{}", support::APP)),
            _ => json!(["https://other.example", support::APP]),
        };
        if upper {
            claims["tid"] = json!(support::TENANT.to_ascii_uppercase());
        }
        let token = tokens.key.sign(&json!({ "typ": "JWT", "alg": "RS256", "kid": support::KID }), &claims);
        let caller = tokens
            .verify(Some(&format!(" {scheme}{space}{token} ")))
            .map_err(|e| TestCaseError::fail(format!("refused: {e:?}")))?;
        prop_assert_eq!(caller.object_id.as_deref(), Some(oid.as_str()));
        prop_assert_eq!(caller.version, if v2 { TokenVersion::V2 } else { TokenVersion::V1 });
        Ok(())
    });
    assert_eq!(tokens.server.fetches(), 1, "the keys are fetched once");
}

// Landing query strings ----------------------------------------------------------------------------

/// Every byte of `value` but the unreserved ones, percent-encoded.
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn any_query_string_is_read_without_panic() {
    let raw = prop_oneof![
        ".{0,80}",
        "([a-z]{0,6}=?[A-Za-z0-9%+ /=&]{0,20}&?){0,5}",
        "(token=)?[%0-9A-Fa-f+ zZ]{0,40}"
    ];
    check(3000, raw, |raw| {
        let token = query::purchase_token(&raw);
        if let Some(token) = &token {
            prop_assert!(!token.is_empty() && token.len() <= MAX_TOKEN_LENGTH && !token.contains(' '));
            prop_assert_eq!(token.trim(), token.as_str());
        }
        if !raw.contains("token") {
            prop_assert_eq!(token, None);
        }
        for name in ["token", "code", "state", "error", ""] {
            if let Some(value) = query::parameter(&raw, name) {
                prop_assert!(value.len() <= raw.len());
            }
        }
        Ok(())
    });
}

#[test]
fn query_values_are_decoded_exactly_once() {
    let pairs = vec(("[a-z_]{1,8}", ".{0,24}"), 0..5);
    check(1500, ("[a-z_]{1,8}", ".{0,40}", pairs.clone(), pairs), |(name, value, before, after)| {
        let before: Vec<_> = before.into_iter().filter(|(k, _)| k != &name).collect();
        let encoded: Vec<String> = before
            .iter()
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .chain([format!("{name}={}", percent_encode(&value))])
            .chain(after.iter().map(|(k, v)| format!("{k}={}", percent_encode(v))))
            .collect();
        let raw = encoded.join("&");
        prop_assert_eq!(query::parameter(&raw, &name), Some(value.clone()));
        // Encoded twice: decoded once, the second encoding stays.
        let twice = raw.replace('%', "%25");
        prop_assert_eq!(query::parameter(&twice, &name), Some(percent_encode(&value)));
        for (i, (k, v)) in before.iter().enumerate() {
            if before[..i].iter().all(|(earlier, _)| earlier != k) {
                prop_assert_eq!(query::parameter(&raw, k), Some(v.clone()));
            }
        }
        Ok(())
    });
}

#[test]
fn purchase_tokens_round_trip_however_the_link_encoded_them() {
    let token = "[A-Za-z0-9+/=_-]{1,300}";
    check(1000, (token, 0u8..4, "([a-z]{1,5}=[a-z0-9]{0,5}&){0,3}"), |(token, form, prefix)| {
        let written = match form {
            0 => token.clone(),             // as is: `+` stays `+`
            1 => percent_encode(&token),    // encoded once
            2 => token.replace('+', "%20"), // someone form-decoded it on the way: `+` became a space
            _ => percent_encode(&token).replace("%2B", "+"),
        };
        let raw = format!("{prefix}token={written}&utm=x");
        prop_assert_eq!(query::purchase_token(&raw), Some(token));
        Ok(())
    });
    check(1000, (MAX_TOKEN_LENGTH + 1..MAX_TOKEN_LENGTH + 64, vec(0x80u8..=0xBF, 1..4)), |(len, high)| {
        prop_assert_eq!(query::purchase_token(&format!("token={}", "a".repeat(len))), None, "too long");
        // Continuation bytes with no lead byte: never UTF-8.
        let invalid: String = high.iter().map(|b| format!("%{b:02X}")).collect();
        prop_assert_eq!(query::purchase_token(&format!("token=ab{invalid}")), None, "not UTF-8");
        Ok(())
    });
}

// Sealed form tokens and cookies -------------------------------------------------------------------

fn at(seconds: i64) -> Timestamp {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).single().expect("a time")
}

fn sealer() -> Sealer {
    Sealer::new(&[7u8; 32]).expect("a key")
}

fn user() -> impl Strategy<Value = SignedInUser> {
    (prop::option::of(".{0,12}"), prop::option::of(".{0,12}"), ".{0,36}", ".{0,36}")
        .prop_map(|(name, email, object_id, tenant_id)| SignedInUser { name, email, object_id, tenant_id })
}

/// A token-looking string: random, or base64url parts of random bytes or JSON.
fn sealish() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        "[A-Za-z0-9_-]{0,60}",
        vec(any::<u8>(), 0..48).prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
        json_value().prop_map(|v| URL_SAFE_NO_PAD.encode(v.to_string())),
    ];
    prop_oneof![".{0,80}", (part.clone(), part).prop_map(|(p, t)| format!("{p}.{t}"))]
}

#[test]
fn arbitrary_sealed_tokens_and_cookies_are_refused() {
    let sealer = sealer();
    check(2000, (sealish(), ".{0,12}"), |(token, subscription)| {
        let opened = sealer.open::<Value>("activate-form", &token, at(0));
        prop_assert!(
            matches!(opened, Err(SealError::Malformed | SealError::BadSignature)),
            "{token:?}: {opened:?}"
        );
        let checked = session::check_form_token(&sealer, &token, &subscription, None, at(0));
        prop_assert!(matches!(checked, Err(FormError::Seal(SealError::Malformed | SealError::BadSignature))));
        prop_assert!(!checked.unwrap_err().to_string().is_empty());
        prop_assert!(session::open_signin(&sealer, &token, at(0)).is_err());
        let header = format!("a=1; {SESSION_COOKIE}={token}");
        prop_assert_eq!(session::session_user(&sealer, Some(&header), at(0)), None);
        prop_assert_eq!(session::session_user(&sealer, Some(&token), at(0)), None);
        Ok(())
    });
}

#[test]
fn sealed_tokens_round_trip_until_they_expire() {
    let sealer = sealer();
    let claims = (".{0,40}", prop::option::of(".{0,20}"), any::<u64>(), vec(any::<i32>(), 0..4));
    check(1000, ("[a-z-]{1,16}", claims, 1i64..100_000), |(purpose, claims, lifetime)| {
        let token = sealer.seal(&purpose, &claims, at(lifetime));
        prop_assert_eq!(sealer.open(&purpose, &token, at(0)), Ok(claims.clone()));
        prop_assert_eq!(sealer.open(&purpose, &format!("  {token}\n"), at(lifetime - 1)), Ok(claims.clone()));
        prop_assert_eq!(sealer.open::<Value>(&purpose, &token, at(lifetime)), Err(SealError::Expired));
        prop_assert_eq!(
            sealer.open::<Value>(&format!("{purpose}x"), &token, at(0)),
            Err(SealError::WrongPurpose)
        );
        let other = Sealer::new(&[8u8; 32]).expect("a key");
        prop_assert_eq!(other.open::<Value>(&purpose, &token, at(0)), Err(SealError::BadSignature));
        Ok(())
    });
}

#[test]
fn mutated_sealed_tokens_are_refused() {
    let sealer = sealer();
    let originals: Vec<String> = (0..4)
        .map(|i| session::form_token(&sealer, &format!("sub-{i}"), None, at(0), Duration::from_secs(600)))
        .collect();
    check(2000, (0..originals.len(), edits(base64url_byte())), |(which, edits)| {
        let original = &originals[which];
        let mutated = String::from_utf8(apply(original.as_bytes(), &edits)).expect("ASCII");
        let checked = session::check_form_token(&sealer, &mutated, &format!("sub-{which}"), None, at(1));
        if mutated.trim() == original {
            prop_assert!(checked.is_ok());
        } else {
            prop_assert!(
                matches!(checked, Err(FormError::Seal(SealError::Malformed | SealError::BadSignature))),
                "{mutated}: {checked:?}"
            );
        }
        Ok(())
    });
}

#[test]
fn form_tokens_are_bound_to_their_subscription_and_user() {
    let sealer = sealer();
    check(
        1000,
        (".{0,40}", ".{0,40}", prop::option::of(user()), prop::option::of(user())),
        |(sub, other_sub, user, other_user)| {
            let token = session::form_token(&sealer, &sub, user.as_ref(), at(0), Duration::from_secs(60));
            let nonce = session::check_form_token(&sealer, &token, &sub, user.as_ref(), at(59))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(!nonce.is_empty());
            if other_sub != sub {
                prop_assert_eq!(
                    session::check_form_token(&sealer, &token, &other_sub, user.as_ref(), at(0)),
                    Err(FormError::OtherSubscription)
                );
            }
            if other_user.as_ref().map(|u| &u.object_id) != user.as_ref().map(|u| &u.object_id) {
                prop_assert_eq!(
                    session::check_form_token(&sealer, &token, &sub, other_user.as_ref(), at(0)),
                    Err(FormError::OtherUser)
                );
            }
            prop_assert_eq!(
                session::check_form_token(&sealer, &token, &sub, user.as_ref(), at(60)),
                Err(FormError::Seal(SealError::Expired))
            );
            Ok(())
        },
    );
}

#[test]
fn cookie_headers_are_read_by_exact_name() {
    check(1000, (".{0,80}", ".{0,12}"), |(header, name)| {
        if let Some(value) = session::cookie(&header, &name) {
            prop_assert!(header.contains(value));
        }
        Ok(())
    });
    let value = "[A-Za-z0-9!#$%&'()*+./:<=>?@_~-]{0,30}";
    let others = btree_map("[A-Za-z0-9_-]{1,12}", value, 0..6);
    check(1000, (others, "[A-Za-z0-9_-]{1,12}", value), |(others, name, value)| {
        let mut pairs: Vec<String> =
            others.iter().filter(|(k, _)| **k != name).map(|(k, v)| format!("{k}={v}")).collect();
        pairs.insert(pairs.len() / 2, format!("{name}={value}"));
        let header = pairs.join("; ");
        prop_assert_eq!(session::cookie(&header, &name), Some(value.as_str()));
        prop_assert_eq!(
            session::cookie(&header, &format!("{name}_")),
            others.get(&format!("{name}_")).map(String::as_str)
        );
        Ok(())
    });
}

#[test]
fn session_cookies_round_trip() {
    let sealer = sealer();
    check(500, (user(), "([a-z]{1,5}=[a-z0-9]{0,5}; ){0,3}"), |(user, others)| {
        let sealed = session::seal_session(&sealer, &user, at(0));
        let header = format!("{others}{SESSION_COOKIE}={sealed}; theme=dark");
        prop_assert_eq!(session::session_user(&sealer, Some(&header), at(1)), Some(user));
        prop_assert_eq!(session::session_user(&sealer, Some(&header), at(8 * 3600)), None, "expired");
        Ok(())
    });
}

// Store page tokens ----------------------------------------------------------------------------------

/// `page_key` (shared/src/store/dynamodb.rs) is private: it is driven through `DynamoDbStore::list`,
/// over a DynamoDB client that answers in memory, which shows what a token turned into.
struct Pages {
    table: support::EmptyTable,
    store: fulfillment::store::dynamodb::DynamoDbStore,
    runtime: tokio::runtime::Runtime,
}

impl Pages {
    fn new() -> Self {
        let table = support::EmptyTable::default();
        Self { store: table.store(), table, runtime: runtime() }
    }

    /// The listing from `page`, and the `ExclusiveStartKey` the scan was sent with, if one was sent.
    fn list(&self, page: &str) -> (Result<fulfillment::store::ListPage, StoreError>, Option<Option<Value>>) {
        self.table.take();
        let result = self.runtime.block_on(self.store.list(&ListFilter::default(), Some(page), 10));
        let scans: Vec<Value> =
            self.table.take().into_iter().filter(|(op, _)| op == "Scan").map(|(_, body)| body).collect();
        let sent = scans.first().map(|body| body.get("ExclusiveStartKey").cloned());
        (result, sent)
    }
}

/// What a page token says, if it is one: base64url of the JSON `[partition, sort]`.
fn page_key_of(token: &str) -> Option<(String, String)> {
    let json = URL_SAFE_NO_PAD.decode(token).ok()?;
    let [pk, sk]: [String; 2] = serde_json::from_slice(&json).ok()?;
    Some((pk, sk))
}

/// A token is refused before anything is sent, with a message that says so; or the scan goes on
/// from exactly the key the token names, one of our partitions.
fn expect_page(pages: &Pages, token: &str) -> Result<bool, TestCaseError> {
    let (result, sent) = pages.list(token);
    match result {
        Ok(_) => {
            let (pk, sk) =
                page_key_of(token).ok_or_else(|| TestCaseError::fail(format!("accepted {token:?}")))?;
            prop_assert!(
                pk.starts_with("SUB#") || pk.starts_with(layout::REJECTED_PREFIX),
                "accepted {pk:?}"
            );
            prop_assert_eq!(sent, Some(Some(json!({ "pk": { "S": pk }, "sk": { "S": sk } }))));
            Ok(true)
        }
        Err(StoreError::InvalidPageToken) => {
            prop_assert_eq!(sent, None, "nothing is sent for an invalid token");
            Ok(false)
        }
        Err(other) => Err(TestCaseError::fail(format!("{token:?}: {other:?}"))),
    }
}

#[test]
fn arbitrary_page_tokens_are_refused_before_any_request() {
    let pages = Pages::new();
    let pair =
        (prop_oneof![".{0,20}", "(SUB|REJECTED)#.{0,20}"], prop_oneof![Just("STATE".to_owned()), ".{0,8}"]);
    let token = prop_oneof![
        ".{0,60}",
        "[A-Za-z0-9_=+/-]{0,80}",
        vec(any::<u8>(), 0..60).prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
        json_value().prop_map(|v| URL_SAFE_NO_PAD.encode(v.to_string())),
        pair.prop_map(|(pk, sk)| URL_SAFE_NO_PAD.encode(json!([pk, sk]).to_string())),
    ];
    check(1000, token, |token| expect_page(&pages, &token).map(drop));
    // What the store itself would write is accepted.
    check(300, ".{1,40}", |id| {
        let token = URL_SAFE_NO_PAD.encode(json!([format!("SUB#{id}"), "STATE"]).to_string());
        prop_assert!(expect_page(&pages, &token)?, "refused {token}");
        Ok(())
    });
}

#[test]
fn page_tokens_round_trip() {
    let pages = Pages::new();
    check(300, ".{1,60}", |id| {
        let pk = format!("SUB#{id}");
        pages.table.set_last_evaluated_key(Some(json!({ "pk": { "S": pk }, "sk": { "S": "STATE" } })));
        let first = pages.runtime.block_on(pages.store.list(&ListFilter::default(), None, 10));
        pages.table.set_last_evaluated_key(None);
        let next = first.map_err(|e| TestCaseError::fail(format!("{e:?}")))?.next.expect("a next page");
        prop_assert!(
            next.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "URL-safe: {next}"
        );
        prop_assert!(expect_page(&pages, &next)?, "refused {next}");
        let (result, _) = pages.list(&next);
        prop_assert!(result.is_ok_and(|page| page.next.is_none()));
        Ok(())
    });
}

#[test]
fn mutated_page_tokens_are_refused_or_still_name_a_subscription() {
    let pages = Pages::new();
    let originals: Vec<String> = ["SUB#e7e70000-0000-4000-8000-0000000e7e70", "SUB#a", "SUB#{\"x\":[1]}"]
        .iter()
        .map(|pk| URL_SAFE_NO_PAD.encode(json!([pk, "STATE"]).to_string()))
        .collect();
    check(2000, (0..originals.len(), edits(base64url_byte())), |(which, edits)| {
        let mutated = String::from_utf8(apply(originals[which].as_bytes(), &edits)).expect("ASCII");
        expect_page(&pages, &mutated).map(drop)
    });
}

#[test]
fn the_helpers_do_what_they_say() {
    assert_eq!(apply(b"abc", &[Edit::Delete(1)]), b"ac");
    assert_eq!(apply(b"abc", &[Edit::Splice { from: 1, len: 5, to: 0 }]), b"bcabc");
    assert_eq!(apply(b"", &[Edit::Replace(3, b'x'), Edit::Delete(0)]), b"");
    assert_eq!(percent_encode("a+b c"), "a%2Bb%20c");
    assert_eq!(
        page_key_of(&URL_SAFE_NO_PAD.encode(r#"["SUB#1","STATE"]"#)),
        Some(("SUB#1".into(), "STATE".into()))
    );
    assert_eq!(page_key_of("e30"), None);
}
