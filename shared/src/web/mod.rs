//! What the buyer's browser sees: the query string as Microsoft sends it, sealed form tokens and
//! cookies, and the HTML pages. Knows no Lambda: the functions adapt HTTP to it.

pub mod pages;
pub mod query;
pub mod respond;
pub mod seal;
pub mod session;
