//! A batch of the table's DynamoDB stream records, as Lambda's event source mapping delivers it
//! (`{"Records":[{"eventName":"INSERT","dynamodb":{"SequenceNumber":..,"NewImage":{..}}}]}`),
//! with the new images in DynamoDB's JSON (`{"S":"text"}`, `{"N":"1"}`, `{"M":{..}}`, ...).

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::store::HistoryEntry;
use crate::store::dynamodb::layout;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamBatch {
    #[serde(rename = "Records")]
    pub records: Vec<StreamRecord>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamRecord {
    /// `INSERT`, `MODIFY` or `REMOVE`.
    #[serde(rename = "eventName", default)]
    pub event_name: Option<String>,
    pub dynamodb: StreamChange,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamChange {
    /// Lambda's checkpoint: a failed batch is retried from the record with this number.
    #[serde(rename = "SequenceNumber")]
    pub sequence_number: String,
    #[serde(rename = "NewImage", default)]
    pub new_image: Option<Map<String, Value>>,
}

/// What one stream record holds for the lifecycle events.
#[derive(Debug)]
pub enum StreamItem {
    /// A history entry, newly written.
    History(Box<HistoryEntry>),
    /// Anything else: state and operation items, TTL deletions, refused deliveries.
    Other,
}

/// Why a record could not be read (our own item that does not decode: a defect, never skipped).
#[derive(Debug, thiserror::Error)]
#[error("stream record {sequence_number} cannot be read: {reason}")]
pub struct UnreadableRecord {
    pub sequence_number: String,
    pub reason: String,
}

impl StreamRecord {
    pub fn item(&self) -> Result<StreamItem, UnreadableRecord> {
        let unreadable = |reason: String| UnreadableRecord {
            sequence_number: self.dynamodb.sequence_number.clone(),
            reason,
        };
        if self.event_name.as_deref() != Some("INSERT") {
            return Ok(StreamItem::Other);
        }
        let Some(image) = &self.dynamodb.new_image else {
            return Err(unreadable(
                "an INSERT without its new image (the stream must carry NEW_IMAGE)".into(),
            ));
        };
        let is_history = image
            .get(layout::SORT_KEY)
            .and_then(|key| key.get("S"))
            .and_then(Value::as_str)
            .is_some_and(|key| key.starts_with(layout::EVENT_PREFIX));
        if !is_history {
            return Ok(StreamItem::Other);
        }
        let fields = image
            .iter()
            .map(|(name, value)| Ok((name.clone(), plain_json(value)?)))
            .collect::<Result<Map<_, _>, String>>()
            .map_err(unreadable)?;
        let entry = serde_json::from_value(Value::Object(fields)).map_err(|e| unreadable(e.to_string()))?;
        Ok(StreamItem::History(Box::new(entry)))
    }
}

/// One attribute value in DynamoDB's JSON as plain JSON (how the store wrote it).
pub fn plain_json(value: &Value) -> Result<Value, String> {
    let Some((kind, inner)) = value.as_object().filter(|o| o.len() == 1).and_then(|o| o.iter().next()) else {
        return Err(format!("not a DynamoDB attribute value: {value}"));
    };
    let text = || inner.as_str().ok_or_else(|| format!("{kind} must hold a string"));
    let number = |text: &str| -> Result<Value, String> {
        serde_json::from_str::<serde_json::Number>(text)
            .map(Value::Number)
            .map_err(|_| format!("{text:?} is not a number"))
    };
    let list = || inner.as_array().ok_or_else(|| format!("{kind} must hold a list"));
    Ok(match kind.as_str() {
        "S" => Value::String(text()?.to_owned()),
        "N" => number(text()?)?,
        "BOOL" => Value::Bool(inner.as_bool().ok_or("BOOL must hold true or false")?),
        "NULL" => Value::Null,
        "M" => Value::Object(
            inner
                .as_object()
                .ok_or("M must hold a map")?
                .iter()
                .map(|(k, v)| Ok((k.clone(), plain_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        "L" => Value::Array(list()?.iter().map(plain_json).collect::<Result<_, _>>()?),
        "SS" | "BS" => Value::Array(list()?.clone()),
        "NS" => Value::Array(
            list()?.iter().map(|n| number(n.as_str().unwrap_or_default())).collect::<Result<_, _>>()?,
        ),
        other => return Err(format!("unknown DynamoDB type {other}")),
    })
}
