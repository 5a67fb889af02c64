//! Fast stand-ins for the ports, for tests (feature `test-util`): an in-memory store that passes the
//! same contract tests as the DynamoDB adapter ([`contract`]), a model of Microsoft's side, a clock
//! tests set, and a store wrapper that lets a second writer in between a read and a write.

mod bus;
pub mod contract;
pub mod convergence;
pub mod market_contract;
mod marketplace;
mod memory;
mod scripted;
pub mod usage_contract;

use std::sync::{Arc, Mutex};

pub use bus::{MemoryBus, event_schema, stream_batch, stream_record};
pub use marketplace::{FakeMarketplace, MarketFault};
pub use memory::MemoryStore;
pub use scripted::{ScriptedStore, StoreStep};

use crate::clock::Clock;
use crate::domain::Timestamp;

/// A clock the test moves; clones share the time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<Timestamp>>);

impl ManualClock {
    pub fn at(start: Timestamp) -> Self {
        Self(Arc::new(Mutex::new(start)))
    }

    pub fn set(&self, at: Timestamp) {
        *self.0.lock().expect("clock") = at;
    }

    pub fn advance(&self, by: chrono::Duration) -> Timestamp {
        let mut now = self.0.lock().expect("clock");
        *now += by;
        *now
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().expect("clock")
    }
}
