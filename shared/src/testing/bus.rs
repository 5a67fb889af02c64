//! An in-memory event bus, the stream as Lambda delivers it, and the events' JSON Schema.

use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value, json};

use crate::events::bus::{BusError, EventBus, MAX_BATCH};
use crate::events::{EventType, SubscriptionEvent};
use crate::store::HistoryEntry;
use crate::store::dynamodb::layout;

#[derive(Debug, Default)]
struct BusState {
    published: Vec<SubscriptionEvent>,
    /// Entries still to refuse, one per entry offered.
    refusals: u32,
    /// Calls still to fail as a whole.
    outages: u32,
    calls: u32,
}

/// The bus in memory; clones share what was published.
#[derive(Debug, Clone, Default)]
pub struct MemoryBus {
    state: Arc<Mutex<BusState>>,
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every event accepted, in order.
    pub fn published(&self) -> Vec<SubscriptionEvent> {
        self.state.lock().expect("bus").published.clone()
    }

    /// The next `entries` events offered are refused (as EventBridge refuses an entry).
    pub fn refuse_next(&self, entries: u32) {
        self.state.lock().expect("bus").refusals = entries;
    }

    /// The next `calls` calls fail as a whole (the bus cannot be reached).
    pub fn fail_next_calls(&self, calls: u32) {
        self.state.lock().expect("bus").outages = calls;
    }

    /// How many times `publish` was called.
    pub fn calls(&self) -> u32 {
        self.state.lock().expect("bus").calls
    }
}

impl EventBus for MemoryBus {
    async fn publish(&self, events: &[SubscriptionEvent]) -> Result<Vec<Option<String>>, BusError> {
        let mut state = self.state.lock().expect("bus");
        state.calls += 1;
        assert!(
            events.len() <= MAX_BATCH,
            "EventBridge takes at most {MAX_BATCH} entries, got {}",
            events.len()
        );
        if state.outages > 0 {
            state.outages -= 1;
            return Err(BusError("the bus is down (scripted)".into()));
        }
        let mut results = Vec::with_capacity(events.len());
        for event in events {
            if state.refusals > 0 {
                state.refusals -= 1;
                results.push(Some("InternalFailure: refused (scripted)".to_owned()));
            } else {
                state.published.push(event.clone());
                results.push(None);
            }
        }
        Ok(results)
    }
}

/// One stream record of a newly written history entry, as Lambda delivers it.
pub fn stream_record(entry: &HistoryEntry, sequence_number: u64) -> Value {
    json!({
        "eventID": format!("{sequence_number:032x}"),
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": entry.at.timestamp(),
            "Keys": {
                "pk": history_image(entry)["pk"].clone(),
                "sk": history_image(entry)["sk"].clone()
            },
            "NewImage": history_image(entry),
            "SequenceNumber": format!("{:021}", sequence_number),
            "SizeBytes": 512,
            "StreamViewType": "NEW_IMAGE"
        },
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/subscriptions/stream/2026-01-01T00:00:00.000"
    })
}

/// A batch of these entries' stream records (sequence numbers 1, 2, ...).
pub fn stream_batch(entries: &[HistoryEntry]) -> Value {
    let records: Vec<Value> = entries.iter().zip(1..).map(|(entry, n)| stream_record(entry, n)).collect();
    json!({ "Records": records })
}

/// The events' published schema (docs/events/subscription-event.schema.json).
pub const EVENT_SCHEMA: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/events/subscription-event.schema.json");

/// The properties the published schema lists.
fn schema_properties() -> &'static Vec<String> {
    static PROPERTIES: OnceLock<Vec<String>> = OnceLock::new();
    PROPERTIES.get_or_init(|| {
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(EVENT_SCHEMA).expect("the schema"))
            .expect("the schema is JSON");
        schema["properties"].as_object().expect("properties").keys().cloned().collect()
    })
}

/// Panics, saying why, unless `detail` is valid by the events' published schema, carries exactly
/// its properties, and is of a known type and source.
pub fn event_schema(detail: &Value) {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    let validator = VALIDATOR.get_or_init(|| {
        let text = std::fs::read_to_string(EVENT_SCHEMA).unwrap_or_else(|e| panic!("{EVENT_SCHEMA}: {e}"));
        let schema: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{EVENT_SCHEMA}: {e}"));
        jsonschema::validator_for(&schema)
            .unwrap_or_else(|e| panic!("{EVENT_SCHEMA} is not a valid schema: {e}"))
    });
    let mut errors: Vec<String> =
        validator.iter_errors(detail).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    // Stricter than the open published schema: exactly its properties, of the known types.
    let documented: Vec<&String> = schema_properties().iter().collect();
    if let Some(fields) = detail.as_object() {
        let undocumented: Vec<&String> = fields.keys().filter(|k| !documented.contains(k)).collect();
        if !undocumented.is_empty() {
            errors.push(format!("undocumented fields {undocumented:?}"));
        }
    }
    let known = EventType::ALL.iter().any(|t| detail["eventType"] == t.as_str());
    if !known {
        errors.push(format!("unknown eventType {}", detail["eventType"]));
    }
    let sources = ["landing", "activation", "webhook", "publisher", "reconcile"];
    if !sources.iter().any(|s| detail["source"] == *s) {
        errors.push(format!("unknown source {}", detail["source"]));
    }
    assert!(errors.is_empty(), "the event does not match {EVENT_SCHEMA}: {errors:?}\n{detail:#}");
}

/// Plain JSON in DynamoDB's JSON, as the store writes it ([`plain_json`]'s inverse).
fn dynamodb_json(value: &Value) -> Value {
    use serde_json::json;
    match value {
        Value::Null => json!({ "NULL": true }),
        Value::Bool(b) => json!({ "BOOL": b }),
        Value::Number(n) => json!({ "N": n.to_string() }),
        Value::String(s) => json!({ "S": s }),
        Value::Array(items) => json!({ "L": items.iter().map(dynamodb_json).collect::<Vec<_>>() }),
        Value::Object(fields) => {
            json!({ "M": fields.iter().map(|(k, v)| (k.clone(), dynamodb_json(v))).collect::<Map<_, _>>() })
        }
    }
}

/// A history entry's item (keys included), in DynamoDB's JSON: a stream record's `NewImage`.
fn history_image(entry: &HistoryEntry) -> Map<String, Value> {
    let mut fields = match serde_json::to_value(entry) {
        Ok(Value::Object(fields)) => fields,
        _ => Map::new(),
    };
    fields.insert(layout::PARTITION_KEY.into(), Value::String(layout::partition(&entry.subscription_id)));
    fields.insert(layout::SORT_KEY.into(), Value::String(layout::event(entry.at, &entry.operation_id)));
    fields.iter().map(|(k, v)| (k.clone(), dynamodb_json(v))).collect()
}
