//! Reading the landing page's query string as Microsoft sends it (docs/marketplace-api.md#token-decoding).

pub use crate::marketplace::MAX_PURCHASE_TOKEN_LENGTH as MAX_TOKEN_LENGTH;

/// The value of `name` in a raw query string, percent-decoded exactly once, with no `+`-to-space
/// conversion (that is form decoding, and purchase tokens contain `+`). `None` when absent or
/// not valid UTF-8 once decoded.
pub fn parameter(raw_query: &str, name: &str) -> Option<String> {
    raw_query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value)).flatten()
    })
}

/// The purchase token of a landing-page query: decoded once, and spaces turned back into `+`
/// (something on the way form-decoded it; tokens never contain spaces). `None` when missing,
/// empty, absurdly long, or holding what no token holds (control characters, non-ASCII): such a
/// token cannot even be sent in a header, so it is refused before any call.
pub fn purchase_token(raw_query: &str) -> Option<String> {
    // Spaces first: a `+` at either end that became a space is part of the token, not padding.
    let token = parameter(raw_query, "token")?.replace(' ', "+").trim().to_owned();
    crate::marketplace::plausible_purchase_token(&token).then_some(token)
}

fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(high), Some(low)) => {
                decoded.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plus_at_either_end_that_became_a_space_is_kept() {
        assert_eq!(purchase_token("token=%20abc%20").as_deref(), Some("+abc+"));
        assert_eq!(purchase_token("token= ab c").as_deref(), Some("+ab+c"));
        assert_eq!(purchase_token("token=abc%0A").as_deref(), Some("abc"));
    }

    #[test]
    fn the_token_is_decoded_exactly_once_and_keeps_its_plus_signs() {
        assert_eq!(purchase_token("token=ab%2Bcd%2Fef%3D%3D").as_deref(), Some("ab+cd/ef=="));
        assert_eq!(purchase_token("token=ab+cd/ef==").as_deref(), Some("ab+cd/ef=="), "raw + stays +");
        assert_eq!(purchase_token("token=ab%20cd").as_deref(), Some("ab+cd"), "a space was a +");
        assert_eq!(
            purchase_token("token=ab%252Bcd").as_deref(),
            Some("ab%2Bcd"),
            "double-encoded stays encoded once"
        );
        assert_eq!(purchase_token("x=1&token=t%2B1&y=2").as_deref(), Some("t+1"));
    }

    #[test]
    fn a_missing_empty_or_oversized_token_is_none() {
        assert_eq!(purchase_token(""), None);
        assert_eq!(purchase_token("token="), None);
        assert_eq!(purchase_token("token"), None);
        assert_eq!(purchase_token("tokens=abc"), None);
        assert_eq!(purchase_token(&format!("token={}", "a".repeat(MAX_TOKEN_LENGTH + 1))), None);
        assert_eq!(purchase_token("token=%FF%FE"), None, "not UTF-8");
        // Microsoft's are a few hundred characters; the sign-in cookie must carry one.
        assert_eq!(purchase_token(&format!("token={}", "a".repeat(2049))), None);
        assert!(purchase_token(&format!("token={}", "a".repeat(2048))).is_some());
    }

    #[test]
    fn a_token_with_characters_no_token_has_is_none() {
        assert_eq!(purchase_token("token=abc%0Adef"), None, "a newline inside");
        assert_eq!(purchase_token("token=abc%00def"), None, "a NUL");
        assert_eq!(purchase_token("token=abc%7Fdef"), None, "DEL");
        assert_eq!(purchase_token("token=ab%C3%A9c"), None, "non-ASCII");
        assert_eq!(purchase_token("token=abc%09def"), None, "a tab");
    }

    #[test]
    fn stray_percent_signs_are_kept() {
        assert_eq!(parameter("a=100%&b=%zz", "a").as_deref(), Some("100%"));
        assert_eq!(parameter("a=100%&b=%zz", "b").as_deref(), Some("%zz"));
    }
}
