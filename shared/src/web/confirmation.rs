//! The landing page's confirmation form, as the activate function receives it: an
//! `application/x-www-form-urlencoded` body with the subscription and its sealed form token, which
//! must have been issued for that subscription (and the signed-in visitor) and not have expired.

use super::session::{self, FormError};
use super::{WebSettings, query};
use crate::domain::{OperationId, SubscriptionId, Timestamp};
use crate::identity::SignedInUser;

/// A confirmation form is a few hundred bytes.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// A confirmation to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmation {
    pub subscription_id: SubscriptionId,
    /// Unique per form: a replayed form is recorded once.
    pub operation_id: OperationId,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfirmationError {
    #[error("the form has more than {MAX_FORM_BYTES} bytes")]
    TooLarge,
    #[error("the form lacks a valid subscription_id or form_token")]
    Incomplete,
    #[error("the confirmation for {subscription_id} comes without a signed-in session")]
    NotSignedIn { subscription_id: String },
    #[error("the form token for {subscription_id} is refused")]
    Token {
        subscription_id: String,
        #[source]
        source: FormError,
    },
}

/// Reads and checks a confirmation form posted by `user` (the session's visitor, if any).
pub fn read(
    web: &WebSettings,
    body: &[u8],
    user: Option<&SignedInUser>,
    now: Timestamp,
) -> Result<Confirmation, ConfirmationError> {
    if body.len() > MAX_FORM_BYTES {
        return Err(ConfirmationError::TooLarge);
    }
    // Form encoding writes a space as `+`; the query decoder reads `%20`.
    let form = std::str::from_utf8(body).map_err(|_| ConfirmationError::Incomplete)?.replace('+', "%20");
    let (Some(subscription_id), Some(form_token)) =
        (query::parameter(&form, "subscription_id"), query::parameter(&form, "form_token"))
    else {
        return Err(ConfirmationError::Incomplete);
    };
    if web.signin.is_some() && user.is_none() {
        return Err(ConfirmationError::NotSignedIn { subscription_id });
    }
    let nonce = session::check_form_token(&web.sealer, &form_token, &subscription_id, user, now)
        .map_err(|source| ConfirmationError::Token { subscription_id: subscription_id.clone(), source })?;
    match (SubscriptionId::parse(&subscription_id), OperationId::parse(&format!("activate-{nonce}"))) {
        (Some(subscription_id), Some(operation_id)) => Ok(Confirmation { subscription_id, operation_id }),
        _ => Err(ConfirmationError::Incomplete),
    }
}
