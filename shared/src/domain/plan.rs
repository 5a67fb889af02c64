use serde::{Deserialize, Serialize};

use super::lenient::{self};
use super::{PlanId, TermUnit};

/// The answer to `listAvailablePlans`: the plans the beneficiary may switch to, current one included.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AvailablePlans {
    #[serde(default, deserialize_with = "lenient::list")]
    pub plans: Vec<Plan>,
}

/// A plan of the offer (docs/marketplace-api.md#plan-object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub plan_id: PlanId,
    #[serde(default, deserialize_with = "lenient::text")]
    pub display_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::flag")]
    pub is_private: bool,
    #[serde(default, deserialize_with = "lenient::text")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "lenient::quantity")]
    pub min_quantity: Option<u32>,
    #[serde(default, deserialize_with = "lenient::quantity")]
    pub max_quantity: Option<u32>,
    #[serde(default, deserialize_with = "lenient::flag")]
    pub has_free_trials: bool,
    #[serde(default, deserialize_with = "lenient::flag")]
    pub is_price_per_seat: bool,
    #[serde(default, deserialize_with = "lenient::flag")]
    pub is_stop_sell: bool,
    #[serde(default, deserialize_with = "lenient::text")]
    pub market: Option<String>,
    #[serde(default)]
    pub plan_components: Option<PlanComponents>,
    #[serde(default, deserialize_with = "lenient::list")]
    pub source_offers: Vec<SourceOffer>,
}

impl Plan {
    /// Whether `seats` lies within the plan's seat bounds (a bound that is not given does not limit).
    pub fn admits_seats(&self, seats: u32) -> bool {
        self.min_quantity.is_none_or(|min| seats >= min) && self.max_quantity.is_none_or(|max| seats <= max)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanComponents {
    #[serde(default, deserialize_with = "lenient::list")]
    pub recurrent_billing_terms: Vec<RecurrentBillingTerm>,
    #[serde(default, deserialize_with = "lenient::list")]
    pub metering_dimensions: Vec<MeteringDimension>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecurrentBillingTerm {
    #[serde(default, deserialize_with = "lenient::text")]
    pub currency: Option<String>,
    #[serde(default)]
    pub price: Option<f64>,
    #[serde(default)]
    pub term_unit: Option<TermUnit>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub term_description: Option<String>,
    #[serde(default, deserialize_with = "lenient::list")]
    pub metered_quantity_included: Vec<MeteredQuantityIncluded>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeteredQuantityIncluded {
    #[serde(default, deserialize_with = "lenient::text")]
    pub dimension_id: Option<String>,
    /// A string in Microsoft's schema (e.g. `"100"`).
    #[serde(default, deserialize_with = "lenient::text")]
    pub units: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeteringDimension {
    #[serde(default, deserialize_with = "lenient::text")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub currency: Option<String>,
    #[serde(default)]
    pub price_per_unit: Option<f64>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub unit_of_measure: Option<String>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub display_name: Option<String>,
}

/// A private offer through which the plan is available (added to the spec in 2024/2025).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceOffer {
    #[serde(default, deserialize_with = "lenient::text")]
    pub external_id: Option<String>,
}
