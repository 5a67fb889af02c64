//! Issue 15: each function reads only the secret values it needs. The template gives each function
//! the secrets it names and a role that may read those only; and each function, started as in AWS
//! with nothing but those secrets (read from moto's Secrets Manager), has every setting it needs.

use std::collections::{BTreeMap, BTreeSet};

use fulfillment::aws::AwsClients;
use fulfillment::config::{Environment, MARKETPLACE_SECRET, PAGES_SECRET, SecretKind};
use fulfillment::self_check::Verdict;
use integration_tests::table::template;
use integration_tests::{changed_settings, eventbridge_endpoint, stack_options};
use local_stack::LocalStack;
use serde_norway::Value;

/// What each function needs, by its template parameter: Microsoft's credentials for every function
/// that calls Microsoft (metering's emission and intake too: the intake reads each plan's
/// dimensions); the pages' keys for the pages only; nothing for the relay.
const EXPECTED: [(&str, &[&str]); 8] = [
    ("LandingFunction", &["MarketplaceSecretArn", "PagesSecretArn"]),
    ("ActivateFunction", &["MarketplaceSecretArn", "PagesSecretArn"]),
    ("WebhookFunction", &["MarketplaceSecretArn"]),
    ("SubscriptionsFunction", &["MarketplaceSecretArn"]),
    ("ReconcileFunction", &["MarketplaceSecretArn"]),
    ("EventsRelayFunction", &[]),
    ("MeteringFunction", &["MarketplaceSecretArn"]),
    ("UsageIntakeFunction", &["MarketplaceSecretArn"]),
];

/// The parameter a value refers to (`!Ref MarketplaceSecretArn`), if it is a reference.
fn reference(value: &Value) -> Option<String> {
    match value {
        Value::Tagged(tagged) if tagged.tag == "!Ref" => tagged.value.as_str().map(str::to_owned),
        _ => None,
    }
}

/// A function's secret variables, `MARKETPLACE_SECRET_ARN` → the parameter it names.
fn secret_variables(function: &Value) -> BTreeMap<String, String> {
    let variables =
        function.get("Properties").and_then(|p| p.get("Environment")).and_then(|e| e.get("Variables"));
    variables
        .and_then(Value::as_mapping)
        .into_iter()
        .flatten()
        .filter_map(|(name, value)| {
            let name = name.as_str()?;
            name.ends_with("_SECRET_ARN").then(|| Some((name.to_owned(), reference(value)?))).flatten()
        })
        .collect()
}

/// The parameters of the secrets a function's role may read, and the actions on them.
fn readable_secrets(function: &Value) -> BTreeSet<String> {
    let policies = function.get("Properties").and_then(|p| p.get("Policies")).and_then(Value::as_sequence);
    let mut secrets = BTreeSet::new();
    for statement in policies
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("Statement").and_then(Value::as_sequence))
        .flatten()
    {
        let actions = match &statement["Action"] {
            Value::Sequence(items) => items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "),
            other => other.as_str().unwrap_or_default().to_owned(),
        };
        if actions.contains("secretsmanager:") {
            let resource = reference(&statement["Resource"]);
            secrets
                .insert(resource.unwrap_or_else(|| panic!("a secret named by its parameter: {statement:?}")));
        }
    }
    secrets
}

fn kind_of(variable: &str) -> SecretKind {
    [MARKETPLACE_SECRET, PAGES_SECRET]
        .into_iter()
        .find(|k| k.variable == variable)
        .unwrap_or_else(|| panic!("{variable} is a kind of secret the functions read"))
}

#[test]
fn each_function_may_read_exactly_the_secrets_it_is_given() {
    let template = template();
    let resources = template.get("Resources").expect("Resources");
    let globals = template.get("Globals").and_then(|g| g.get("Function")).expect("Globals.Function");
    // Declared blank for every function (sam local's --env-vars), set by each that needs it.
    let blank = globals.get("Environment").and_then(|e| e.get("Variables")).expect("variables");
    for kind in [MARKETPLACE_SECRET, PAGES_SECRET] {
        assert_eq!(blank.get(kind.variable).and_then(Value::as_str), Some(""), "{}", kind.variable);
    }
    for (name, expected) in EXPECTED {
        let function = resources.get(name).unwrap_or_else(|| panic!("{name}"));
        let expected: BTreeSet<String> = expected.iter().map(|p| (*p).to_owned()).collect();
        let variables = secret_variables(function);
        for (variable, parameter) in &variables {
            let kind = kind_of(variable);
            let parameter_of_kind =
                if kind == MARKETPLACE_SECRET { "MarketplaceSecretArn" } else { "PagesSecretArn" };
            assert_eq!(parameter, parameter_of_kind, "{name}: {variable}");
        }
        let named: BTreeSet<String> = variables.into_values().collect();
        assert_eq!(named, expected, "{name} is given the secrets it needs");
        assert_eq!(
            readable_secrets(function),
            expected,
            "{name}'s role reads exactly the secrets it is given"
        );
    }
    let functions = resources
        .as_mapping()
        .expect("a mapping")
        .iter()
        .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some("AWS::Serverless::Function"))
        .count();
    assert_eq!(functions, EXPECTED.len(), "every function is in the table above");
}

/// Secrets Manager as moto plays it, and the two secrets made from the local stack's settings.
struct Secrets {
    client: aws_sdk_secretsmanager::Client,
    marketplace: String,
    pages: String,
}

impl Secrets {
    async fn create(environment: &Environment) -> Self {
        let aws = AwsClients::new(environment.aws().expect("AWS settings")).expect("clients");
        let client = aws.secrets_manager(Some(&eventbridge_endpoint()));
        let mut secrets = Self { client, marketplace: String::new(), pages: String::new() };
        secrets.marketplace = secrets.put(environment, MARKETPLACE_SECRET, &[]).await;
        secrets.pages = secrets.put(environment, PAGES_SECRET, &[]).await;
        secrets
    }

    /// A new secret with `kind`'s fields from `environment`, and `extra`; its ARN.
    async fn put(&self, environment: &Environment, kind: SecretKind, extra: &[(&str, &str)]) -> String {
        let mut fields: serde_json::Map<String, serde_json::Value> =
            kind.fields.iter().filter_map(|f| Some(((*f).to_owned(), environment.get(f)?.into()))).collect();
        fields.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).into())));
        assert!(!fields.is_empty(), "the local stack sets a field of {}", kind.variable);
        let created = self
            .client
            .create_secret()
            .name(format!("{}-{}", kind.variable.to_lowercase(), uuid::Uuid::new_v4()))
            .secret_string(serde_json::Value::Object(fields).to_string())
            .send()
            .await
            .expect("moto creates the secret");
        created.arn().expect("an ARN").to_owned()
    }
}

/// Starts `function` as its `main.rs` does; why it could not, in words.
async fn start(function: &str, environment: Environment) -> Result<(), String> {
    let started = match function {
        "LandingFunction" => landing::Deployed::from_environment(environment).await.map(drop),
        "ActivateFunction" => activate::Deployed::from_environment(environment).await.map(drop),
        "WebhookFunction" => webhook::Deployed::from_environment(environment).await.map(drop),
        "SubscriptionsFunction" => subscriptions::Deployed::from_environment(environment).await.map(drop),
        "ReconcileFunction" => reconcile::Deployed::from_environment(environment).await.map(drop),
        "EventsRelayFunction" => events_relay::Deployed::from_environment(environment).map(drop),
        "MeteringFunction" => metering::Deployed::from_environment(environment).await.map(drop),
        "UsageIntakeFunction" => usage_intake::Deployed::from_environment(environment).await.map(drop),
        other => panic!("no constructor for {other}"),
    };
    started.map_err(|error| format!("{error:?}"))
}

/// The local stack's settings as AWS would give them to `function`: no secret value in the
/// environment, only the ARNs of the secrets the template names for it.
fn as_deployed(base: &Environment, function: &str, secrets: &Secrets) -> Environment {
    let template = template();
    let declared = secret_variables(&template["Resources"][function]);
    let arns: Vec<(&str, &str)> = declared
        .iter()
        .map(|(variable, parameter)| {
            let arn = if parameter == "MarketplaceSecretArn" { &secrets.marketplace } else { &secrets.pages };
            (variable.as_str(), arn.as_str())
        })
        .collect();
    changed_settings(base, &[], &arns)
}

/// The stack's settings without any secret value, reading Secrets Manager at moto.
fn without_secret_values(environment: &Environment) -> Environment {
    let values: Vec<&str> = MARKETPLACE_SECRET.fields.iter().chain(PAGES_SECRET.fields).copied().collect();
    let endpoint = eventbridge_endpoint();
    changed_settings(environment, &values, &[("SECRETSMANAGER_ENDPOINT", endpoint.as_str())])
}

#[tokio::test]
async fn each_function_starts_with_only_the_secrets_the_template_gives_it() {
    let stack = LocalStack::start(stack_options()).await.expect("the local stack starts");
    let secrets = Secrets::create(&stack.environment).await;
    let base = without_secret_values(&stack.environment);
    for (function, _) in EXPECTED {
        let environment = as_deployed(&base, function, &secrets);
        start(function, environment).await.unwrap_or_else(|why| panic!("{function} starts: {why}"));
    }

    // The credentials really come from the secret: the admin function gets a token with them,
    // and sees when the secret last changed.
    let admin =
        subscriptions::Deployed::from_environment(as_deployed(&base, "SubscriptionsFunction", &secrets))
            .await
            .expect("the admin function starts");
    let (report, healthy) = admin.self_check_report().await;
    assert!(healthy, "{report}");
    for (check, verdict) in [("entra-token", Verdict::Pass), ("secret-age", Verdict::Pass)] {
        let line = report.lines().find(|l| l.split_whitespace().nth(1) == Some(check));
        let line = line.unwrap_or_else(|| panic!("{check} in {report}"));
        let expected = serde_json::to_value(verdict).expect("a verdict");
        assert_eq!(line.split_whitespace().next(), expected.as_str(), "{line}");
    }
    assert!(report.contains("the secret last changed 0 days ago"), "{report}");
}

#[tokio::test]
async fn a_function_without_its_secret_or_with_a_mixed_one_does_not_start_and_says_why() {
    let stack = LocalStack::start(stack_options()).await.expect("the local stack starts");
    let secrets = Secrets::create(&stack.environment).await;
    let base = without_secret_values(&stack.environment);

    // The pages without their secret: the form key is missing.
    let landing = changed_settings(&base, &[], &[("MARKETPLACE_SECRET_ARN", secrets.marketplace.as_str())]);
    let why = start("LandingFunction", landing).await.expect_err("the landing page needs its keys");
    assert!(why.contains("FORM_SIGNING_KEY is not set"), "{why}");

    // One secret with everything, given as Microsoft's credentials: refused, naming the field.
    let key = stack.environment.get("FORM_SIGNING_KEY").expect("the stack's form key");
    let mixed = secrets.put(&stack.environment, MARKETPLACE_SECRET, &[("FORM_SIGNING_KEY", &key)]).await;
    let webhook = changed_settings(&base, &[], &[("MARKETPLACE_SECRET_ARN", mixed.as_str())]);
    let why = start("WebhookFunction", webhook).await.expect_err("a mixed secret is refused");
    assert!(
        why.contains(
            "the secret named by MARKETPLACE_SECRET_ARN holds FORM_SIGNING_KEY, which does not belong there"
        ),
        "{why}"
    );
    assert!(!why.contains(&key), "no value in the error: {why}");

    // A secret that does not exist (or that the role may not read).
    let missing = format!("{}-gone", secrets.pages);
    let activate = changed_settings(
        &base,
        &[],
        &[("MARKETPLACE_SECRET_ARN", secrets.marketplace.as_str()), ("PAGES_SECRET_ARN", missing.as_str())],
    );
    let why = start("ActivateFunction", activate).await.expect_err("an unreadable secret stops the start");
    assert!(why.contains("cannot read the secret named by PAGES_SECRET_ARN"), "{why}");

    // Under sam local, a secret is read from a local stand-in only, never from the real service.
    let sam_local = changed_settings(
        &base,
        &["SECRETSMANAGER_ENDPOINT"],
        &[("AWS_SAM_LOCAL", "true"), ("MARKETPLACE_SECRET_ARN", secrets.marketplace.as_str())],
    );
    let why = start("ReconcileFunction", sam_local).await.expect_err("refused under sam local");
    assert!(why.contains("SECRETSMANAGER_ENDPOINT is invalid: must be set under sam local"), "{why}");
}
