//! openraft's storage conformance suite against Tally's Raft log store (redb) and state
//! machine adapter, here over a small in-memory machine (tally-server runs it again over
//! the real FQL machine).

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;
use tally_calvin::{Batch, MachineError, ReplicatedMachine, StateMachine};
use tally_raft::{LogStore, Machine, TypeConfig};

#[derive(Default)]
struct Counter {
    height: u64,
    total: u64,
    position: Option<Vec<u8>>,
}

impl StateMachine for Counter {
    fn applied_height(&self) -> u64 {
        self.height
    }
    fn apply(&mut self, b: &Batch) -> Vec<Vec<u8>> {
        self.height = b.height;
        b.inputs
            .iter()
            .map(|i| {
                self.total += i.len() as u64;
                self.total.to_be_bytes().to_vec()
            })
            .collect()
    }
    fn last_commit_ts(&self) -> u64 {
        0
    }
    fn rules(&self) -> u16 {
        Batch::UNSTAMPED
    }
}

impl ReplicatedMachine for Counter {
    fn apply_at(&mut self, b: &Batch, position: &[u8]) -> Vec<Vec<u8>> {
        self.position = Some(position.to_vec());
        self.apply(b)
    }
    fn set_position(&mut self, position: &[u8]) -> Result<(), MachineError> {
        self.position = Some(position.to_vec());
        Ok(())
    }
    fn position(&self) -> Result<Option<Vec<u8>>, MachineError> {
        Ok(self.position.clone())
    }
    fn checkpoint(&mut self) -> Result<(), MachineError> {
        Ok(())
    }
    fn export(&self) -> Result<Vec<u8>, MachineError> {
        let mut out = self.height.to_be_bytes().to_vec();
        out.extend_from_slice(&self.total.to_be_bytes());
        Ok(out)
    }
    fn import(&mut self, data: &[u8]) -> Result<(), MachineError> {
        let n = |i: usize| u64::from_be_bytes(data[i..i + 8].try_into().unwrap());
        self.height = n(0);
        self.total = n(8);
        Ok(())
    }
}

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, Machine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, Machine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().unwrap();
        let log = LogStore::open(&dir.path().join("raft-log.redb")).unwrap();
        let sm = Machine::open(Counter::default(), &dir.path().join("snapshot")).unwrap();
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    Suite::test_all(Builder).await.unwrap();
    Suite::transfer_snapshot(&Builder).await.unwrap();
}
