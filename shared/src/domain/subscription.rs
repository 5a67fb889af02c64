use serde::{Deserialize, Serialize};

use super::lenient::{self, Timestamp, lenient_enum, string_id};

string_id!(
    /// A SaaS subscription id (a GUID issued by Microsoft; also the Metering `resourceId`).
    SubscriptionId
);

string_id!(
    /// A plan id as defined in Partner Center.
    PlanId
);

lenient_enum! {
    /// `saasSubscriptionStatus` (docs/marketplace-api.md#subscription-object, #states).
    pub enum SubscriptionStatus {
        /// In the spec's enum only; never seen in practice.
        NotStarted = "NotStarted",
        PendingFulfillmentStart = "PendingFulfillmentStart",
        Subscribed = "Subscribed",
        Suspended = "Suspended",
        Unsubscribed = "Unsubscribed",
    }
}

lenient_enum! {
    /// What the beneficiary may do (`allowedCustomerOperations`); a CSP beneficiary gets only `Read`.
    pub enum CustomerOperation {
        Read = "Read",
        Update = "Update",
        Delete = "Delete",
    }
}

lenient_enum! {
    /// Length of a billing term.
    pub enum TermUnit {
        P1M = "P1M",
        P1Y = "P1Y",
        P2Y = "P2Y",
        P3Y = "P3Y",
        P4Y = "P4Y",
        P5Y = "P5Y",
    }
}

lenient_enum! {
    /// `sandboxType`: `Csp` marks a CSP sandbox (test) purchase.
    pub enum SandboxType {
        NoSandbox = "None",
        Csp = "Csp",
    }
}

lenient_enum! {
    /// `sessionMode`: `DryRun` runs every commerce transaction in test mode.
    pub enum SessionMode {
        Normal = "None",
        DryRun = "DryRun",
    }
}

/// A user or tenant in Entra ID (`beneficiary`, `purchaser`); any part may be missing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AadIdentifier {
    #[serde(default, deserialize_with = "lenient::text")]
    pub email_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::guid_text")]
    pub object_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::guid_text")]
    pub tenant_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub puid: Option<String>,
}

/// The current billing term; meaningful only while `Subscribed` or `Suspended`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Term {
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub start_date: Option<Timestamp>,
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub end_date: Option<Timestamp>,
    #[serde(default)]
    pub term_unit: Option<TermUnit>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub charge_duration: Option<String>,
}

/// A SaaS subscription as Microsoft describes it (docs/marketplace-api.md#subscription-object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub id: SubscriptionId,
    #[serde(default, deserialize_with = "lenient::text")]
    pub publisher_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub offer_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub name: Option<String>,
    #[serde(rename = "saasSubscriptionStatus", default)]
    pub status: Option<SubscriptionStatus>,
    #[serde(default)]
    pub beneficiary: Option<AadIdentifier>,
    #[serde(default)]
    pub purchaser: Option<AadIdentifier>,
    #[serde(default)]
    pub plan_id: Option<PlanId>,
    #[serde(default, deserialize_with = "lenient::quantity")]
    pub quantity: Option<u32>,
    #[serde(default)]
    pub term: Option<Term>,
    #[serde(default)]
    pub auto_renew: Option<bool>,
    #[serde(default, deserialize_with = "lenient::flag")]
    pub is_test: bool,
    #[serde(default, deserialize_with = "lenient::flag")]
    pub is_free_trial: bool,
    #[serde(default, deserialize_with = "lenient::list")]
    pub allowed_customer_operations: Vec<CustomerOperation>,
    #[serde(default)]
    pub sandbox_type: Option<SandboxType>,
    #[serde(default)]
    pub session_mode: Option<SessionMode>,
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub created: Option<Timestamp>,
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub last_modified: Option<Timestamp>,
}

impl Subscription {
    /// A subscription known only by its id; every other field unknown.
    pub fn new(id: SubscriptionId) -> Self {
        Self {
            id,
            publisher_id: None,
            offer_id: None,
            name: None,
            status: None,
            beneficiary: None,
            purchaser: None,
            plan_id: None,
            quantity: None,
            term: None,
            auto_renew: None,
            is_test: false,
            is_free_trial: false,
            allowed_customer_operations: Vec::new(),
            sandbox_type: None,
            session_mode: None,
            created: None,
            last_modified: None,
        }
    }

    /// The tenant that uses the product (the end customer, also for a reseller purchase).
    pub fn beneficiary_tenant_id(&self) -> Option<&str> {
        self.beneficiary.as_ref()?.tenant_id.as_deref().filter(|t| !t.trim().is_empty())
    }

    /// Whether the beneficiary may do `operation` (PATCH needs `Update`, DELETE needs `Delete`).
    pub fn allows(&self, operation: &CustomerOperation) -> bool {
        self.allowed_customer_operations.contains(operation)
    }

    /// Purchaser and beneficiary are different tenants, as in a reseller (CSP) purchase.
    pub fn bought_for_someone_else(&self) -> bool {
        let tenant = |who: &Option<AadIdentifier>| who.as_ref().and_then(|w| w.tenant_id.clone());
        matches!((tenant(&self.purchaser), tenant(&self.beneficiary)), (Some(p), Some(b)) if !p.eq_ignore_ascii_case(&b))
    }
}

/// The answer to `resolve` (docs/marketplace-api.md#resolvedsubscription-object). The 2019 API lacked `subscription`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedSubscription {
    pub id: SubscriptionId,
    #[serde(default, deserialize_with = "lenient::text")]
    pub subscription_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub offer_id: Option<String>,
    #[serde(default)]
    pub plan_id: Option<PlanId>,
    #[serde(default, deserialize_with = "lenient::quantity")]
    pub quantity: Option<u32>,
    #[serde(default)]
    pub subscription: Option<Subscription>,
}

impl SubscriptionId {
    /// A valid id that no subscription has (the nil GUID): for reads that only check a table or
    /// open its connection.
    pub fn nobody() -> Self {
        Self::parse("00000000-0000-0000-0000-000000000000").expect("the nil GUID is a subscription id")
    }
}
