//! The lifecycle events locally, with real parts: DynamoDB Local's stream (it implements the
//! Streams API) read by [`StreamPump`], which stands in for Lambda's event source mapping and hands
//! the relay function the same batches Lambda would; the relay publishes on an EventBridge bus of
//! moto's server, whose rule (the template's sample rule) feeds an SQS queue [`EventQueue`] reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, ShardIteratorType};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

/// How often the pump asks the stream for more when it was empty (Lambda polls about 4 times a
/// second; more often here would slow DynamoDB Local down).
const POLL_INTERVAL: Duration = Duration::from_millis(100);

fn config_parts() -> (aws_sdk_dynamodb::config::Region, aws_sdk_dynamodb::config::Credentials) {
    (
        aws_sdk_dynamodb::config::Region::new("us-east-1"),
        aws_sdk_dynamodb::config::Credentials::new("local", "local", None, None, "local"),
    )
}

fn http_client() -> aws_sdk_dynamodb::config::SharedHttpClient {
    fulfillment::aws::sdk_http_client().expect("an HTTP client")
}

/// The EventBridge bus and the queue its rule feeds, made in moto for one stack.
pub struct EventQueue {
    pub bus_name: String,
    pub endpoint: String,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

impl EventQueue {
    /// Creates a bus, a queue and a rule sending every lifecycle event to the queue.
    pub async fn create(endpoint: &str, name: &str) -> Result<Self, String> {
        let (region, credentials) = config_parts();
        let events = aws_sdk_eventbridge::Client::from_conf(
            aws_sdk_eventbridge::Config::builder()
                .behavior_version(aws_sdk_eventbridge::config::BehaviorVersion::latest())
                .region(region.clone())
                .credentials_provider(credentials.clone())
                .endpoint_url(endpoint)
                .http_client(http_client())
                .build(),
        );
        let sqs = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::Config::builder()
                .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
                .region(region)
                .credentials_provider(credentials)
                .endpoint_url(endpoint)
                .http_client(http_client())
                .build(),
        );
        let failed = |what: &str, e: &dyn std::fmt::Debug| format!("{what} in moto at {endpoint}: {e:?}");
        events.create_event_bus().name(name).send().await.map_err(|e| failed("create the bus", &e))?;
        let queue =
            sqs.create_queue().queue_name(name).send().await.map_err(|e| failed("create the queue", &e))?;
        let queue_url = queue.queue_url().unwrap_or_default().to_owned();
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| failed("read the queue's ARN", &e))?;
        let queue_arn = attributes
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
            .cloned()
            .unwrap_or_default();
        let pattern = provisioning_rule_pattern()?;
        events
            .put_rule()
            .name(name)
            .event_bus_name(name)
            .event_pattern(pattern)
            .send()
            .await
            .map_err(|e| failed("create the rule", &e))?;
        let target = aws_sdk_eventbridge::types::Target::builder()
            .id("queue")
            .arn(queue_arn)
            .build()
            .map_err(|e| failed("build the target", &e))?;
        events
            .put_targets()
            .rule(name)
            .event_bus_name(name)
            .targets(target)
            .send()
            .await
            .map_err(|e| failed("target the queue", &e))?;
        Ok(Self { bus_name: name.to_owned(), endpoint: endpoint.to_owned(), sqs, queue_url })
    }

    /// Empties the queue; how many events it held.
    pub async fn purge(&self) -> Result<u64, String> {
        use aws_sdk_sqs::types::QueueAttributeName;
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(|e| format!("count the event queue: {e:?}"))?;
        let count = attributes
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
            .and_then(|n| n.parse().ok())
            .ok_or("the event queue has no message count")?;
        self.sqs
            .purge_queue()
            .queue_url(&self.queue_url)
            .send()
            .await
            .map_err(|e| format!("purge the event queue: {e:?}"))?;
        Ok(count)
    }

    /// The events waiting in the queue (EventBridge's envelopes: `detail-type`, `detail`, ...),
    /// oldest first, taken off the queue.
    pub async fn take(&self) -> Result<Vec<Value>, String> {
        let mut taken = Vec::new();
        loop {
            let received = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                // Taken for good: a message received is not handed out again for 12 hours, and
                // the queue lives as long as the stack (no delete calls: moto serves them slowly).
                .visibility_timeout(43_200)
                .send()
                .await
                .map_err(|e| format!("receive from the event queue: {e:?}"))?;
            let messages = received.messages();
            if messages.is_empty() {
                return Ok(taken);
            }
            for message in messages {
                let body = message.body().unwrap_or_default();
                taken.push(
                    serde_json::from_str(body)
                        .map_err(|e| format!("an event that is not JSON: {e}: {body}"))?,
                );
            }
        }
    }
}

/// The event pattern of the template's sample rule (`ProvisioningRule`), as JSON.
fn provisioning_rule_pattern() -> Result<String, String> {
    let pattern = crate::table::resource_properties("ProvisioningRule")["EventPattern"].clone();
    let pattern: Value = serde_norway::from_value(pattern).map_err(|e| format!("ProvisioningRule: {e}"))?;
    Ok(pattern.to_string())
}

/// Reads the table's stream as Lambda's event source mapping does and hands each batch to the
/// relay; knows when it has caught up with everything committed.
pub struct StreamPump {
    /// Rounds started.
    rounds: Arc<AtomicU64>,
    /// The last round that found every shard empty.
    idle: watch::Receiver<u64>,
    /// What went wrong last, for the message of a wait that timed out.
    last_error: Arc<std::sync::Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StreamPump {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shard {
    id: String,
    /// `None` once the shard is closed and read to its end.
    iterator: Option<String>,
    /// The last record handed to the relay and done with.
    done_up_to: Option<String>,
}

impl StreamPump {
    pub async fn start(
        dynamodb_endpoint: &str,
        stream_arn: String,
        relay: Arc<events_relay::Deployed>,
    ) -> Self {
        let (region, credentials) = config_parts();
        let streams = aws_sdk_dynamodbstreams::Client::from_conf(
            aws_sdk_dynamodbstreams::Config::builder()
                .behavior_version(aws_sdk_dynamodbstreams::config::BehaviorVersion::latest())
                .region(region)
                .credentials_provider(credentials)
                .endpoint_url(dynamodb_endpoint)
                .http_client(http_client())
                .build(),
        );
        let rounds = Arc::new(AtomicU64::new(0));
        let (idle_sender, idle) = watch::channel(0);
        let last_error = Arc::new(std::sync::Mutex::new(None));
        let task =
            tokio::spawn(pump(streams, stream_arn, relay, rounds.clone(), idle_sender, last_error.clone()));
        Self { rounds, idle, last_error, task }
    }

    /// Waits until everything committed before the call has been handed to the relay.
    pub async fn caught_up(&self, within: Duration) -> Result<(), String> {
        let asked_at = self.rounds.load(Ordering::SeqCst);
        let mut idle = self.idle.clone();
        tokio::time::timeout(within, idle.wait_for(|round| *round > asked_at))
            .await
            .map_err(|_| {
                let last = self.last_error.lock().expect("error").clone();
                format!("the stream pump did not catch up within {within:?} (last error: {last:?})")
            })?
            .map_err(|_| "the stream pump stopped".to_owned())?;
        Ok(())
    }
}

async fn pump(
    streams: aws_sdk_dynamodbstreams::Client,
    stream_arn: String,
    relay: Arc<events_relay::Deployed>,
    rounds: Arc<AtomicU64>,
    idle: watch::Sender<u64>,
    last_error: Arc<std::sync::Mutex<Option<String>>>,
) {
    let failed = |error: String| {
        tracing::warn!(%error, "the stream pump failed");
        *last_error.lock().expect("error") = Some(error);
    };
    let mut shards: Vec<Shard> = Vec::new();
    let mut finished: Vec<String> = Vec::new();
    let mut closed = false;
    loop {
        let round = rounds.fetch_add(1, Ordering::SeqCst) + 1;
        let mut found = 0;
        // New shards are rare (DynamoDB Local rolls them over every few hours): look now and then,
        // and as soon as one is closed (its child goes on from there).
        let look = shards.is_empty() || closed || round % 20 == 1;
        match if look { discover(&streams, &stream_arn, &shards, &finished).await } else { Ok(Vec::new()) } {
            Ok(new) => shards.extend(new),
            Err(error) => {
                failed(format!("cannot describe the stream: {error}"));
                found += 1; // not idle: try again
            }
        }
        for shard in &mut shards {
            match drain(&streams, &stream_arn, shard, &relay).await {
                Ok(count) => found += count,
                Err(error) => {
                    failed(format!("cannot read shard {}: {error}", shard.id));
                    found += 1; // not idle: try again
                    // DynamoDB Local sometimes refuses an iterator (TrimmedDataAccessException):
                    // go on from the last record done, as Lambda's poller would.
                    match resume(&streams, &stream_arn, shard).await {
                        Ok(iterator) => shard.iterator = iterator,
                        Err(error) => failed(format!("cannot resume shard {}: {error}", shard.id)),
                    }
                }
            }
        }
        // A closed shard has been read to its end.
        let open_before = shards.len();
        shards.retain(|s| {
            let open = s.iterator.is_some();
            if !open {
                finished.push(s.id.clone());
            }
            open
        });
        closed = shards.len() < open_before;
        if found == 0 && !closed {
            idle.send_replace(round);
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// Shards not read yet, from their start, once their parent is finished.
async fn discover(
    streams: &aws_sdk_dynamodbstreams::Client,
    stream_arn: &str,
    known: &[Shard],
    finished: &[String],
) -> Result<Vec<Shard>, String> {
    let described =
        streams.describe_stream().stream_arn(stream_arn).send().await.map_err(|e| format!("{e:?}"))?;
    let mut new = Vec::new();
    for shard in described.stream_description().map(|d| d.shards()).unwrap_or_default() {
        let id = shard.shard_id().unwrap_or_default().to_owned();
        let parent_open = shard.parent_shard_id().is_some_and(|parent| {
            known.iter().any(|k| k.id == parent) && !finished.iter().any(|f| f == parent)
        });
        if known.iter().any(|k| k.id == id) || finished.contains(&id) || parent_open {
            continue;
        }
        let iterator = streams
            .get_shard_iterator()
            .stream_arn(stream_arn)
            .shard_id(&id)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        new.push(Shard { id, iterator: iterator.shard_iterator().map(str::to_owned), done_up_to: None });
    }
    Ok(new)
}

/// A new iterator after the last record done (from the start when none was).
async fn resume(
    streams: &aws_sdk_dynamodbstreams::Client,
    stream_arn: &str,
    shard: &Shard,
) -> Result<Option<String>, String> {
    let request = streams.get_shard_iterator().stream_arn(stream_arn).shard_id(&shard.id);
    let request = match &shard.done_up_to {
        Some(sequence) => {
            request.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).sequence_number(sequence)
        }
        None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
    };
    let output = request.send().await.map_err(|e| format!("{e:?}"))?;
    Ok(output.shard_iterator().map(str::to_owned))
}

/// Reads what the shard has and relays it; the number of records read.
async fn drain(
    streams: &aws_sdk_dynamodbstreams::Client,
    stream_arn: &str,
    shard: &mut Shard,
    relay: &events_relay::Deployed,
) -> Result<usize, String> {
    let Some(iterator) = shard.iterator.clone() else {
        return Ok(0);
    };
    let output = streams
        .get_records()
        .shard_iterator(iterator)
        .limit(1000)
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let records = output.records();
    if records.is_empty() {
        shard.iterator = output.next_shard_iterator().map(str::to_owned);
        return Ok(0);
    }
    let batch =
        json!({ "Records": records.iter().map(|r| lambda_record(r, stream_arn)).collect::<Vec<_>>() });
    // The template gives the function 30 seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let relayed =
        relay.handle(batch, deadline).await.map_err(|e| format!("the relay refused the batch: {e}"))?;
    let last = records.last().and_then(|r| r.dynamodb()).and_then(|c| c.sequence_number()).map(str::to_owned);
    match relayed.retry_from {
        // As Lambda does: the next batch starts at the record it reported.
        Some(sequence) => {
            let again = streams
                .get_shard_iterator()
                .stream_arn(stream_arn)
                .shard_id(&shard.id)
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .sequence_number(sequence)
                .send()
                .await
                .map_err(|e| format!("{e:?}"))?;
            shard.iterator = again.shard_iterator().map(str::to_owned);
        }
        None => {
            shard.done_up_to = last;
            shard.iterator = output.next_shard_iterator().map(str::to_owned);
        }
    }
    Ok(records.len())
}

/// A stream record as Lambda hands it to a function.
fn lambda_record(record: &Record, stream_arn: &str) -> Value {
    let change = record.dynamodb();
    let image = |image: Option<&std::collections::HashMap<String, AttributeValue>>| {
        image.map(|fields| Value::Object(fields.iter().map(|(k, v)| (k.clone(), attribute(v))).collect()))
    };
    let mut dynamodb = Map::new();
    dynamodb.insert("Keys".into(), image(change.and_then(|c| c.keys())).unwrap_or(Value::Null));
    if let Some(new_image) = image(change.and_then(|c| c.new_image())) {
        dynamodb.insert("NewImage".into(), new_image);
    }
    dynamodb
        .insert("SequenceNumber".into(), json!(change.and_then(|c| c.sequence_number()).unwrap_or_default()));
    dynamodb.insert(
        "ApproximateCreationDateTime".into(),
        json!(change.and_then(|c| c.approximate_creation_date_time()).map(|t| t.secs())),
    );
    dynamodb.insert("StreamViewType".into(), json!("NEW_IMAGE"));
    json!({
        "eventID": record.event_id(),
        "eventName": record.event_name().map(|n| n.as_str()),
        "eventVersion": record.event_version(),
        "eventSource": "aws:dynamodb",
        "awsRegion": record.aws_region(),
        "dynamodb": dynamodb,
        "eventSourceARN": stream_arn,
    })
}

/// An attribute value in DynamoDB's JSON.
fn attribute(value: &AttributeValue) -> Value {
    use base64::Engine;
    let blob = |b: &aws_sdk_dynamodbstreams::primitives::Blob| {
        json!(base64::engine::general_purpose::STANDARD.encode(b.as_ref()))
    };
    match value {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        AttributeValue::Null(n) => json!({ "NULL": n }),
        AttributeValue::B(b) => json!({ "B": blob(b) }),
        AttributeValue::Ss(items) => json!({ "SS": items }),
        AttributeValue::Ns(items) => json!({ "NS": items }),
        AttributeValue::Bs(items) => json!({ "BS": items.iter().map(blob).collect::<Vec<_>>() }),
        AttributeValue::L(items) => json!({ "L": items.iter().map(attribute).collect::<Vec<_>>() }),
        AttributeValue::M(fields) => {
            json!({ "M": fields.iter().map(|(k, v)| (k.clone(), attribute(v))).collect::<Map<_, _>>() })
        }
        _ => json!({ "NULL": true }),
    }
}
