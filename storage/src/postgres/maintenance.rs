//! `GET /v1/storage` and `POST /v1/storage/maintenance` on PostgreSQL. (To be written.)

use deadpool_postgres::GenericClient;

use crate::error::{Result, StorageError};
use crate::{MaintenanceReport, StorageStats};

pub(super) async fn stats(client: &impl GenericClient) -> Result<StorageStats> {
    let _ = client;
    Err(StorageError::Unavailable("not built yet".into()))
}

pub(super) async fn report(client: &impl GenericClient, repair: bool) -> Result<MaintenanceReport> {
    let _ = (client, repair);
    Err(StorageError::Unavailable("not built yet".into()))
}
