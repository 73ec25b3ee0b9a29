//! openraft's storage conformance suite against the real member storage: the redb Raft
//! log and the state machine adapter over the FQL executor on a redb state store.

use std::sync::Arc;

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;
use tally_exec::machine::FqlMachine;
use tally_raft::{LogStore, Machine, TypeConfig};
use tally_storage::{RedbStore, Store};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, Machine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, Machine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("state.redb")).unwrap());
        let fql = FqlMachine::open(store).unwrap();
        let log = LogStore::open(&dir.path().join("log.redb")).unwrap();
        let sm = Machine::open(fql, &dir.path().join("snapshot")).unwrap();
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_over_the_fql_machine() {
    Suite::test_all(Builder).await.unwrap();
    Suite::transfer_snapshot(&Builder).await.unwrap();
}
