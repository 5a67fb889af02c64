//! Microsoft's SaaS Fulfillment v2 objects, parsed as tolerantly as Microsoft's documented variants demand (docs/marketplace-api.md#parsing-rules).
//!
//! No field beyond the identifiers is trusted to be present: Microsoft's payloads drift between
//! doc revisions (docs/marketplace-api.md#webhook-payload, #known-pitfalls item 11), and unknown fields and enum values never fail a
//! parse.

pub mod lenient;
mod metering;
mod operation;
mod plan;
mod subscription;
mod webhook;

pub use lenient::Timestamp;
pub use metering::{
    BatchUsageEventResult, ReconStatus, UsageEvent, UsageEventResult, UsageEventStatus, UsageQuery,
    UsageRecord,
};
pub use operation::{Operation, OperationAction, OperationId, OperationStatus, RequestSource};
pub use plan::{
    AvailablePlans, MeteredQuantityIncluded, MeteringDimension, Plan, PlanComponents, RecurrentBillingTerm,
    SourceOffer,
};
pub use subscription::{
    AadIdentifier, CustomerOperation, PlanId, ResolvedSubscription, SandboxType, SessionMode, Subscription,
    SubscriptionId, SubscriptionStatus, Term, TermUnit,
};
pub use webhook::WebhookPayload;
