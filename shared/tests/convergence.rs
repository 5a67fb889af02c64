//! The ledger converges to Microsoft's view whatever the faults: the model-based property test of
//! `fulfillment::testing::convergence`, on the in-memory store (1,000 cases; `LEDGER_CASES` and
//! `LEDGER_SEED` replay a failure).

use fulfillment::testing::{MemoryStore, convergence::check_convergence};

#[test]
fn the_ledger_converges_to_microsofts_view_whatever_the_faults() {
    check_convergence(1000, || async { MemoryStore::new() });
}
